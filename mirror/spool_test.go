package mirror

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// feed puts data into sp in chunks of random sizes, as a fetch does.
func feed(sp *spool, data []byte, seed uint64) error {
	r := rand.New(rand.NewPCG(seed, 1))
	for len(data) > 0 {
		b := sp.chunk()
		n := copy(b[:1+r.IntN(len(b))], data)
		if err := sp.put(b[:n]); err != nil {
			return err
		}
		data = data[n:]
	}
	return nil
}

func randomBytes(n int, seed uint64) []byte {
	b := make([]byte, n)
	rand.NewChaCha8([32]byte{byte(seed)}).Read(b)
	return b
}

// TestSpoolsKeepMemoryBounded: fetches ahead stop at the shared budget
// (the registry is held back) instead of buffering whole blobs, and every
// blob still reads back intact, in order, once the consumer gets to it.
func TestSpoolsKeepMemoryBounded(t *testing.T) {
	s := newSpoolSet(t.TempDir())
	blobs := [][]byte{randomBytes(30<<20, 1), randomBytes(40<<20, 2), randomBytes(3<<20, 3), randomBytes(50<<20, 4)}
	spools := make([]*spool, len(blobs))
	fed := make(chan error, len(blobs))
	var finished [4]atomic.Bool
	for i, b := range blobs {
		spools[i] = s.newSpool()
		go func() {
			err := feed(spools[i], b, uint64(i))
			finished[i].Store(true)
			spools[i].finish(err)
			fed <- err
		}()
	}
	// Nobody reads yet: the fetches fill the budget and wait.
	deadline := time.Now().Add(5 * time.Second)
	for {
		s.mu.Lock()
		used := s.used
		s.mu.Unlock()
		if used > spoolBudget {
			t.Fatalf("%d bytes buffered ahead of the consumer, budget %d", used, spoolBudget)
		}
		if used > spoolBudget-spoolChunk || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond)
	for i, b := range blobs {
		if len(b) > spoolBudget && finished[i].Load() {
			t.Fatalf("the fetch of blob %d (%d bytes) finished with nobody reading; the budget did not hold it back", i, len(b))
		}
	}
	peak := int64(0)
	for i, sp := range spools {
		sp.open()
		var got bytes.Buffer
		buf := make([]byte, 1<<20)
		for {
			n, err := sp.Read(buf)
			got.Write(buf[:n])
			s.mu.Lock()
			peak = max(peak, s.used)
			s.mu.Unlock()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("blob %d: %v", i, err)
			}
		}
		sp.Close()
		if !bytes.Equal(got.Bytes(), blobs[i]) {
			t.Fatalf("blob %d: read %d bytes that differ from the %d fed", i, got.Len(), len(blobs[i]))
		}
	}
	for range blobs {
		if err := <-fed; err != nil {
			t.Fatal(err)
		}
	}
	if limit := int64(spoolBudget + spoolCurrent + spoolChunk); peak > limit {
		t.Errorf("peak memory %d bytes, limit %d", peak, limit)
	}
	if s.used != 0 {
		t.Errorf("%d bytes still accounted after every spool was read", s.used)
	}
}

// TestSpoolSpillsWhenTheNetworkIsSlow: once spilling is on (the consumer
// has been waiting on the network), a fetch ahead no longer waits for
// the consumer: what does not fit in memory goes to a file, and reads back
// after the part in memory, byte for byte.
func TestSpoolSpillsWhenTheNetworkIsSlow(t *testing.T) {
	s := newSpoolSet(t.TempDir())
	s.spill = true
	data := randomBytes(3*spoolBudget, 9)
	sp := s.newSpool()
	done := make(chan error, 1)
	go func() { done <- feed(sp, data, 9) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the fetch waited for the consumer although spilling is on")
	}
	sp.finish(nil)
	if sp.file == nil || sp.fileW < int64(len(data))-spoolBudget {
		t.Fatalf("spilled %d of %d bytes", sp.fileW, len(data))
	}
	got, err := io.ReadAll(sp)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatal("the spilled blob reads back different")
	}
	sp.Close()
}

// TestSpoolTurnsSpillOnAfterLongWaits: a consumer that spends most of its
// time waiting for data turns spilling on; one that rarely waits does not.
func TestSpoolTurnsSpillOnAfterLongWaits(t *testing.T) {
	s := newSpoolSet(t.TempDir())
	sp := s.newSpool()
	sp.open()
	go func() {
		// A slow network: a chunk every 300 ms.
		for range 10 {
			time.Sleep(300 * time.Millisecond)
			b := sp.chunk()
			if sp.put(b[:1000]) != nil {
				return
			}
		}
		sp.finish(nil)
	}()
	if _, err := io.Copy(io.Discard, sp); err != nil {
		t.Fatal(err)
	}
	if !s.spill {
		t.Errorf("waited %v of %v without turning spilling on", s.waited, time.Since(s.start))
	}

	s = newSpoolSet(t.TempDir())
	s.start = time.Now().Add(-time.Minute) // a minute of work, 3 s of it waiting
	s.waited = 3 * time.Second
	sp = s.newSpool()
	go func() { time.Sleep(50 * time.Millisecond); sp.finish(nil) }()
	io.Copy(io.Discard, sp)
	if s.spill {
		t.Error("spilling turned on although the consumer waited only 5 % of the time")
	}
}

// TestSpoolCloseStopsTheFetch: closing the set (the build failed) or the
// spool (the consumer gave up) wakes a fetch that waits for room, and a
// reader sees the fetch's error.
func TestSpoolCloseStopsTheFetch(t *testing.T) {
	s := newSpoolSet(t.TempDir())
	sp := s.newSpool()
	done := make(chan error, 1)
	go func() { done <- feed(sp, randomBytes(2*spoolBudget, 3), 3) }()
	time.Sleep(100 * time.Millisecond)
	s.close()
	select {
	case err := <-done:
		if !errors.Is(err, errSpoolClosed) {
			t.Fatalf("fetch ended with %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a waiting fetch did not stop when the set closed")
	}

	// A spool closed while its fetch spills: the next put stops the fetch.
	s = newSpoolSet(t.TempDir())
	s.spill = true
	sp = s.newSpool()
	if err := feed(sp, randomBytes(spoolBudget+spoolChunk, 4), 4); err != nil || sp.file == nil {
		t.Fatalf("feeding past the budget with spilling on: %v, spilled %v", err, sp.file != nil)
	}
	sp.Close()
	if err := sp.put(sp.chunk()[:10]); !errors.Is(err, errSpoolClosed) {
		t.Fatalf("put into a closed spilling spool: %v", err)
	}

	s = newSpoolSet(t.TempDir())
	sp = s.newSpool()
	boom := errors.New("registry went away")
	go func() {
		b := sp.chunk()
		sp.put(b[:10])
		sp.finish(boom)
	}()
	if _, err := io.ReadAll(sp); !errors.Is(err, boom) {
		t.Fatalf("read ended with %v, want the fetch's error", err)
	}
	sp.Close()
	if s.used != 0 {
		t.Errorf("%d bytes accounted after Close", s.used)
	}
}

// TestStreamResumesWhereTheConnectionBroke: a blob whose connection
// resets halfway is fetched again from where it broke (a Range request),
// so the consumer, which already has the first half, reads every byte
// once and in order; with no --cache-dir nothing lands in the cache. A
// registry without Range support sends it all again, and the first half
// is skipped.
func TestStreamResumesWhereTheConnectionBroke(t *testing.T) {
	for _, rangeSupport := range []bool{true, false} {
		t.Run(fmt.Sprintf("ranges %v", rangeSupport), func(t *testing.T) { streamResume(t, rangeSupport) })
	}
}

func streamResume(t *testing.T, rangeSupport bool) {
	blob := randomBytes(3<<20, 5)
	d := digest.FromBytes(blob)
	var gets, ranges atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v2/pseven/app/blobs/"+d.String() {
			http.NotFound(w, r)
			return
		}
		if rangeSupport {
			w.Header().Set("Accept-Ranges", "bytes")
		}
		w.Header().Set("Docker-Content-Digest", d.String())
		if gets.Add(1) == 1 {
			w.Header().Set("Content-Length", strconv.Itoa(len(blob)))
			w.Write(blob[:len(blob)/2])
			w.(http.Flusher).Flush()
			conn, _, _ := w.(http.Hijacker).Hijack()
			conn.(*net.TCPConn).SetLinger(0)
			conn.Close() // a reset, mid-body
			return
		}
		if r.Header.Get("Range") != "" {
			ranges.Add(1)
		}
		if !rangeSupport {
			w.Write(blob)
			return
		}
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(blob))
	}))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	c, err := NewClient(RegistryOptions{PlainHTTP: true})
	if err != nil {
		t.Fatal(err)
	}
	cache, err := OpenCache(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	desc := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayer, Digest: d, Size: int64(len(blob))}
	p := c.Prefetch(context.Background(), cache, []ocispec.Descriptor{desc},
		map[string]string{d.String(): host + "/pseven/app:1"}, PrefetchOptions{Jobs: 1, Ahead: 1, Stream: true})
	defer p.Close()
	rc, err := p.Open(context.Background(), d)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(rc)
	rc.Close()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, blob) {
		t.Fatalf("read %d bytes, not the blob's %d", len(got), len(blob))
	}
	// oras opens the blob again, then seeks with a Range request.
	if wantRanges := map[bool]int32{true: 1, false: 0}[rangeSupport]; ranges.Load() != wantRanges || gets.Load() > 3 {
		t.Errorf("%d GETs, %d with a Range; want one resuming with a Range", gets.Load(), ranges.Load())
	}
	if !p.Fresh(d) {
		t.Error("a streamed blob, verified as it was read, is not reported fresh")
	}
	if ok, _ := cache.storage.Exists(context.Background(), desc); ok {
		t.Error("the streamed blob was written to the cache")
	}
}

// TestVerifiedFailsTheLastRead: the reader of a streamed blob fails the
// read that completes it when the bytes are not the digest's, even when
// the consumer stops at the blob's size and never asks for EOF; an empty
// blob is checked too.
func TestVerifiedFailsTheLastRead(t *testing.T) {
	good := []byte("the signed layer")
	for _, tc := range []struct {
		name string
		sent []byte
		want digest.Digest
		ok   bool
	}{
		{"matching", good, digest.FromBytes(good), true},
		{"a flipped byte", []byte("the signed lAyer"), digest.FromBytes(good), false},
		{"empty", nil, digest.FromBytes(nil), true},
		{"empty but a non-empty digest", nil, digest.FromBytes(good), false},
	} {
		v := newVerified(io.NopCloser(bytes.NewReader(tc.sent)), ocispec.Descriptor{Digest: tc.want, Size: int64(len(tc.sent))}, "registry.pseven.io/app:1")
		_, err := io.Copy(io.Discard, io.LimitReader(v, int64(len(tc.sent))))
		if len(tc.sent) == 0 {
			_, err = v.Read(make([]byte, 8))
			if err == io.EOF {
				err = nil
			}
		}
		if (err == nil) != tc.ok {
			t.Errorf("%s: %v", tc.name, err)
		}
		if err != nil && !strings.Contains(err.Error(), "registry.pseven.io/app:1") {
			t.Errorf("%s: the error does not name the image: %v", tc.name, err)
		}
	}
}
