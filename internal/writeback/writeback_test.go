package writeback

import (
	"bytes"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
)

// TestWriterWritesEveryByte: the file holds exactly what was written, in
// writes of every size around Chunk, and the writeback starts trail the
// offset by less than a Chunk.
func TestWriterWritesEveryByte(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "out"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w := New(f)
	var want bytes.Buffer
	r := rand.New(rand.NewPCG(1, 2))
	for want.Len() < 5*Chunk {
		p := make([]byte, r.IntN(3*Chunk/2))
		for i := range p {
			p[i] = byte(r.Uint32())
		}
		if n, err := w.Write(p); err != nil || n != len(p) {
			t.Fatalf("Write: %d, %v", n, err)
		}
		want.Write(p)
		if w.off != int64(want.Len()) || w.off-w.started >= Chunk {
			t.Fatalf("offset %d, writeback started up to %d, after %d bytes", w.off, w.started, want.Len())
		}
	}
	got, err := os.ReadFile(f.Name())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want.Bytes()) {
		t.Fatalf("file has %d bytes that differ from the %d written", len(got), want.Len())
	}
}
