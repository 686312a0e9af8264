package writeback

import (
	"os"

	"golang.org/x/sys/unix"
)

// start asks for the range to be written back, without waiting for it.
// Errors (a filesystem without support) only lose the optimisation.
func start(f *os.File, off, n int64) {
	_ = unix.SyncFileRange(int(f.Fd()), off, n, unix.SYNC_FILE_RANGE_WRITE)
}
