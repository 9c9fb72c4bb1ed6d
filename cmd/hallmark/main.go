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
	"runtime/debug"
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
	if len(args) == 0 {
		// Not asked for help: a script that ran hallmark with no command
		// made a mistake, and exit 0 would hide it.
		printUsage(e.stderr, "")
		return 2
	}
	switch args[0] {
	case "help", "-h", "--help":
		return runHelp(e, args[1:])
	case "--version":
		args = append([]string{"version"}, args[1:]...)
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
		return runGroup(e, args)
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

// runHelp answers "hallmark help [GROUP [SUBCOMMAND]]".
func runHelp(e *env, topic []string) int {
	prefix := strings.Join(topic, " ")
	if prefix != "" && len(commandsUnder(prefix)) == 0 {
		fmt.Fprintf(e.stderr, "hallmark help: no command %q; run 'hallmark help' for the list\n", prefix)
		return 2
	}
	printUsage(e.stdout, prefix)
	return 0
}

// runGroup answers args that name no command: a command group alone
// ("hallmark ledger") or with help lists the group's subcommands; anything
// else is an unknown command.
func runGroup(e *env, args []string) int {
	group := args[0]
	sub := commandsUnder(group)
	if len(sub) == 0 {
		fmt.Fprintf(e.stderr, "hallmark: unknown command %q; run 'hallmark help' for the list\n", strings.Join(args, " "))
		return 2
	}
	switch {
	case len(args) == 1:
		fmt.Fprintf(e.stderr, "hallmark %s: want a subcommand\n\n", group)
	case len(args) == 2 && (args[1] == "help" || args[1] == "-h" || args[1] == "--help"):
		printUsage(e.stdout, group)
		return 0
	default:
		fmt.Fprintf(e.stderr, "hallmark: unknown command %q\n\n", strings.Join(args, " "))
	}
	printUsage(e.stderr, group)
	return 2
}

// commandsUnder returns the sorted names of the commands that are prefix
// or start with prefix and a space (all of them when prefix is empty), so
// that "policy" never matches a command named "policyx".
func commandsUnder(prefix string) []string {
	var names []string
	for name := range commands {
		if prefix == "" || name == prefix || strings.HasPrefix(name, prefix+" ") {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	return names
}

// printUsage lists the commands under prefix (every command when it is
// empty).
func printUsage(w io.Writer, prefix string) {
	if prefix == "" {
		fmt.Fprintln(w, "hallmark: a model registry and audit ledger for regulated environments")
		fmt.Fprintln(w)
		fmt.Fprintln(w, "Usage: hallmark COMMAND [flags]   (hallmark COMMAND -h for a command's flags)")
	} else {
		fmt.Fprintf(w, "Usage: hallmark %s SUBCOMMAND [flags]   (hallmark %s SUBCOMMAND -h for its flags)\n", prefix, prefix)
	}
	fmt.Fprintln(w)
	for _, name := range commandsUnder(prefix) {
		fmt.Fprintf(w, "  %-22s %s\n", name, commands[name].summary)
	}
}

func init() {
	register(command{name: "version", summary: "print this build's version (as audit exports name it)", run: runVersion})
}

func runVersion(_ context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "version", "   (also: hallmark --version)")
	if pos, err := parseFlags(fs, args); err != nil {
		return err
	} else if len(pos) > 0 {
		return usagef("unexpected argument %q", pos[0])
	}
	bi, _ := debug.ReadBuildInfo() // nil without build information
	fmt.Fprint(e.stdout, versionText(bi))
	return nil
}

// versionText describes a build. Its first line is the generator name that
// server-made audit exports carry (internal/server's exportGenerator:
// "hallmark" and the main module's version, which go build stamps from the
// VCS, "+dirty" for a modified tree), so an export can be matched to the
// binary that made it; the second names the toolchain and commit.
func versionText(bi *debug.BuildInfo) string {
	if bi == nil {
		return "hallmark (no build information: the binary was built without module support)\n"
	}
	var b strings.Builder
	if bi.Main.Version != "" {
		fmt.Fprintf(&b, "hallmark %s\n", bi.Main.Version)
	} else {
		b.WriteString("hallmark (version unknown)\n")
	}
	settings := map[string]string{}
	for _, s := range bi.Settings {
		settings[s.Key] = s.Value
	}
	fmt.Fprintf(&b, "built with %s", bi.GoVersion)
	if goos, goarch := settings["GOOS"], settings["GOARCH"]; goos != "" && goarch != "" {
		fmt.Fprintf(&b, " for %s/%s", goos, goarch)
	}
	if rev := settings["vcs.revision"]; rev != "" {
		fmt.Fprintf(&b, ", commit %s", rev)
		if t := settings["vcs.time"]; t != "" {
			fmt.Fprintf(&b, " (%s)", t)
		}
		if settings["vcs.modified"] == "true" {
			b.WriteString(", with uncommitted changes")
		}
	}
	b.WriteString("\n")
	return b.String()
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
