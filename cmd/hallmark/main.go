// Command hallmark is the single binary of the hallmark model registry: the
// server, the client commands CI pipelines script against, and the offline
// tools for ledgers, signatures, policies and audit exports.
//
// Each command group lives in its own file and registers its subcommands in
// an init function, so that groups can grow without touching this file.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
)

// command is one subcommand, addressed by its space-separated path
// ("ledger verify").
type command struct {
	name    string
	summary string
	run     func(ctx context.Context, env *env, args []string) error
}

// env is what a command may touch of the process, so tests can run commands
// in-process with buffers.
type env struct {
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
	getenv func(string) string
}

var commands = map[string]command{}

func register(c command) {
	if _, dup := commands[c.name]; dup {
		panic("hallmark: command registered twice: " + c.name)
	}
	commands[c.name] = c
}

// usageError marks an error in how the command was called; it exits 2.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return usageError{fmt.Sprintf(format, args...)}
}

// exitError carries a specific exit code with an already-printed outcome
// (for example "verification failed", exit 1).
type exitError struct {
	code int
	err  error
}

func (e exitError) Error() string { return e.err.Error() }
func (e exitError) Unwrap() error { return e.err }

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, &env{stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr, getenv: os.Getenv}, os.Args[1:])
	stop()
	os.Exit(code)
}

// run dispatches args to the longest matching command path and returns the
// process exit code.
func run(ctx context.Context, e *env, args []string) int {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		printUsage(e.stdout, args)
		return 0
	}
	var c command
	var n int
	for i := len(args); i > 0; i-- {
		if cmd, ok := commands[strings.Join(args[:i], " ")]; ok {
			c, n = cmd, i
			break
		}
	}
	if c.run == nil {
		fmt.Fprintf(e.stderr, "hallmark: unknown command %q; run 'hallmark help' for the list\n", strings.Join(args, " "))
		return 2
	}
	err := c.run(ctx, e, args[n:])
	if err == nil {
		return 0
	}
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	fmt.Fprintf(e.stderr, "hallmark %s: %v\n", c.name, err)
	var ue usageError
	if errors.As(err, &ue) {
		return 2
	}
	var xe exitError
	if errors.As(err, &xe) {
		return xe.code
	}
	return 1
}

func printUsage(w io.Writer, args []string) {
	prefix := ""
	if len(args) > 1 {
		prefix = strings.Join(args[1:], " ")
	}
	names := make([]string, 0, len(commands))
	for name := range commands {
		if strings.HasPrefix(name, prefix) {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	fmt.Fprintln(w, "hallmark: a model registry and audit ledger for regulated environments")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Usage: hallmark COMMAND [flags]   (hallmark COMMAND -h for a command's flags)")
	fmt.Fprintln(w)
	for _, name := range names {
		fmt.Fprintf(w, "  %-22s %s\n", name, commands[name].summary)
	}
}

// newFlagSet returns a flag set for command name whose errors are returned,
// not printed-and-exited, and whose usage goes to the command's stderr. The
// flag package prints a parse error before calling Usage; its output is
// discarded so that the error is printed once, by run, as "hallmark NAME:
// error", after the usage.
func newFlagSet(e *env, name, synopsis string) *flag.FlagSet {
	fs := flag.NewFlagSet("hallmark "+name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {
		fmt.Fprintf(e.stderr, "Usage: hallmark %s %s\n\nFlags:\n", name, synopsis)
		fs.SetOutput(e.stderr)
		fs.PrintDefaults()
		fs.SetOutput(io.Discard)
	}
	return fs
}

// parseFlags parses args allowing flags after positional arguments
// ("hallmark verify DIR --public-key k.pem"), which is how the documented
// command lines are written. It returns the positional arguments.
func parseFlags(fs *flag.FlagSet, args []string) ([]string, error) {
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, usageError{err.Error()}
		}
		args = fs.Args()
		if len(args) == 0 {
			return positional, nil
		}
		if args[0] == "--" {
			return append(positional, args[1:]...), nil
		}
		positional = append(positional, args[0])
		args = args[1:]
	}
}
