package mirror

import (
	"bytes"
	"errors"
	"io"
	"testing"
	"testing/iotest"
)

// failingAtEnd returns data, then fails as an entry reader does when the
// digest does not match.
type failingAtEnd struct {
	r   io.Reader
	err error
}

func (f *failingAtEnd) Read(p []byte) (int, error) {
	n, err := f.r.Read(p)
	if err == io.EOF {
		return n, f.err
	}
	return n, err
}

// The last bytes of a range wait for the reader's verdict at the end of
// the blob: on a mismatch the writer never gets the whole range.
func TestCopyVerifiedHoldsBack(t *testing.T) {
	data := bytes.Repeat([]byte("0123456789"), 100_000) // 1 MB, several reads
	mismatch := errors.New("digest mismatch")
	for _, rg := range [][2]int64{{0, int64(len(data))}, {10, 100}, {300_000, 900_000}, {int64(len(data)) - 1, int64(len(data))}} {
		var out bytes.Buffer
		err := copyVerified(&out, iotest.HalfReader(bytes.NewReader(data)), rg[0], rg[1])
		if err != nil || !bytes.Equal(out.Bytes(), data[rg[0]:rg[1]]) {
			t.Errorf("range %v: %v, %d bytes", rg, err, out.Len())
		}
		out.Reset()
		err = copyVerified(&out, &failingAtEnd{bytes.NewReader(data), mismatch}, rg[0], rg[1])
		if !errors.Is(err, mismatch) || int64(out.Len()) >= rg[1]-rg[0] {
			t.Errorf("range %v of a mismatching blob: %v, %d of %d bytes written", rg, err, out.Len(), rg[1]-rg[0])
		}
	}
}

func TestByteRange(t *testing.T) {
	for h, want := range map[string][3]int64{"": {0, 1000, 0}, "bytes=0-": {0, 1000, 1}, "bytes=10-99": {10, 100, 1},
		"bytes=990-2000": {990, 1000, 1}, "bytes=-10": {990, 1000, 1}} {
		from, to, partial, err := byteRange(h, 1000)
		if err != nil || from != want[0] || to != want[1] || partial != (want[2] == 1) {
			t.Errorf("%q: %d-%d %v %v", h, from, to, partial, err)
		}
	}
	for _, h := range []string{"bytes=1000-", "bytes=5-2", "bytes=0-1,5-6", "items=0-1", "bytes=-0", "bytes=x-"} {
		if _, _, _, err := byteRange(h, 1000); err == nil {
			t.Errorf("%q accepted", h)
		}
	}
}
