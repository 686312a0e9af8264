package bundle

import (
	"bytes"
	"io"
	"math/rand"
	"path/filepath"
	"testing"

	seekable "github.com/SaveTheRbtz/zstd-seekable-format-go/pkg"
	"github.com/klauspost/compress/zstd"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// TestSeekTableIsTheZstdSeekableFormat: an independent implementation of
// the zstd seekable format reads our seek table and, seeking into the
// middle of a multi-frame blob, returns the same bytes as a plain
// front-to-back decode.
func TestSeekTableIsTheZstdSeekableFormat(t *testing.T) {
	f := newFixture(t)
	big := make([]byte, 2*FrameSize+777)
	rand.New(rand.NewSource(9)).Read(big)
	f.addImage(t, "pseven-big", ocispec.MediaTypeImageLayerGzip, big)
	p := filepath.Join(t.TempDir(), "b.tar.zst")
	f.write(t, p, nil, 0)
	data := mustRead(t, p)
	plain := decompress(t, data)

	dec, _ := zstd.NewReader(nil)
	defer dec.Close()
	r, err := seekable.NewReader(bytes.NewReader(data), dec)
	if err != nil {
		t.Fatalf("the seekable-format reader refuses our seek table: %v", err)
	}
	defer r.Close()
	all, err := io.ReadAll(r)
	if err != nil || !bytes.Equal(all, plain) {
		t.Fatalf("seekable read: %d bytes (%v), plain decode %d", len(all), err, len(plain))
	}
	off := int64(len(plain) / 2)
	got := make([]byte, 1<<20)
	if _, err := r.ReadAt(got, off); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, plain[off:off+int64(len(got))]) {
		t.Error("ReadAt in the middle differs from the plain decode")
	}
}
