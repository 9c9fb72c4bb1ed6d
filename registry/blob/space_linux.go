package blob

import "golang.org/x/sys/unix"

// freeBytes returns the bytes available to unprivileged users (f_bavail)
// on the filesystem holding dir: the root-reserved blocks are not counted,
// as the server need not run as root.
func freeBytes(dir string) (int64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, err
	}
	n := st.Bavail * uint64(st.Bsize)
	if n > 1<<62 {
		n = 1 << 62 // keeps sums of sizes from overflowing int64
	}
	return int64(n), nil
}
