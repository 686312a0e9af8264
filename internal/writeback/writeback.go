// Package writeback starts the kernel's writeback of a file while it is
// being written. Left to the page cache, a multi-GiB output piles up dirty
// pages until the kernel throttles the writer: on the benchmark VM a GiB
// written with a GiB already dirty cost 1–2.5 s of system time instead of
// 0.2 s, most of a build's system time. Writing back every few MiB as it
// fills keeps the dirty set small; the data is not synced (no waiting).
package writeback

import (
	"io"
	"os"
)

// Chunk is how much is written before its writeback starts.
const Chunk = 8 << 20

// Writer writes to a file and starts the writeback of every Chunk.
type Writer struct {
	f            *os.File
	off, started int64
}

// New wraps f, whose offset is at its start.
func New(f *os.File) *Writer { return &Writer{f: f} }

func (w *Writer) Write(p []byte) (int, error) {
	n, err := w.f.Write(p)
	w.off += int64(n)
	if w.off-w.started >= Chunk {
		start(w.f, w.started, w.off-w.started)
		w.started = w.off
	}
	return n, err
}

var _ io.Writer = (*Writer)(nil)
