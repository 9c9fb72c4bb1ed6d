package blob

import (
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

var pageSize = uintptr(os.Getpagesize())

// release tells the kernel that this process no longer needs the pages
// wholly inside b, a slice of one of badger's shared file mappings.
//
// Why: badger reads and writes its value log through MAP_SHARED mappings, and
// every page touched stays counted in the process's resident set until the
// file is unmapped. Streaming a 4 GiB blob in or out would otherwise show a
// multi-GiB RSS although the Go heap stays small. MADV_DONTNEED on a shared
// file mapping only unmaps the pages; the data stays in the page cache and
// the file (dirty pages are still written back), and the next access faults
// them in again.
func release(b []byte) {
	if len(b) == 0 {
		return
	}
	addr := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	lo := (pageSize - addr%pageSize) % pageSize // offset of the first whole page
	if uintptr(len(b)) < lo+pageSize {
		return
	}
	hi := lo + (uintptr(len(b))-lo)&^(pageSize-1)
	_ = unix.Madvise(b[lo:hi], unix.MADV_DONTNEED)
}
