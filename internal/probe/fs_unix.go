//go:build !windows

package probe

import (
	"os"
	"syscall"
)

var errWouldBlock error = syscall.EWOULDBLOCK

// fileUID is the owner of fi.
func fileUID(fi os.FileInfo) (uint32, bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, false
	}
	return st.Uid, true
}

func lockExclusive(f *os.File) error {
	return syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
}
func unlock(f *os.File) { syscall.Flock(int(f.Fd()), syscall.LOCK_UN) }
