package mirror

import (
	"errors"
	"io"
	"os"
	"sync"
	"time"
)

// Streaming fetch: blobs go from the registry to the consumer through
// memory, not through a cache file that is written and read back. Fetches
// ahead of the consumer share a memory budget; when it is used up they
// wait (the connection's flow control holds the registry back), unless the
// consumer has been waiting on the network: then the network is the
// bottleneck, and fetches ahead go on into spill files.
const (
	spoolChunk  = 256 << 10
	spoolBudget = 24 << 20
	// spoolCurrent is what the blob being read may hold beyond the budget.
	spoolCurrent = 8 << 20
	// spillAfter is how long the consumer may wait on fetches, in all,
	// before fetching ahead into spill files pays; and it must have waited
	// half the time. (Compressing on every core, it waits a fifth of the
	// time for a registry on the same host.)
	spillAfter = 2 * time.Second
)

var errSpoolClosed = errors.New("blob stream closed")

// spoolSet is the spools of one prefetch, under one lock.
type spoolSet struct {
	mu     sync.Mutex
	cond   *sync.Cond
	dir    string // spill files go here
	used   int64  // bytes in memory, all spools
	spill  bool
	start  time.Time
	waited time.Duration
	closed bool
	chunks sync.Pool
}

func newSpoolSet(dir string) *spoolSet {
	s := &spoolSet{dir: dir, start: time.Now()}
	s.cond = sync.NewCond(&s.mu)
	s.chunks.New = func() any { return make([]byte, spoolChunk) }
	return s
}

func (s *spoolSet) close() {
	s.mu.Lock()
	s.closed = true
	s.cond.Broadcast()
	s.mu.Unlock()
}

// spool is one blob on its way from a fetch to the consumer: chunks in
// memory, then, once spilled, the rest in a temporary file.
type spool struct {
	s            *spoolSet
	chunks       [][]byte // data not yet read; chunks[0] from off
	off          int
	mem          int64
	current      bool // opened by the consumer: may exceed the budget
	file         *os.File
	fileW, fileR int64
	done, closed bool
	err          error
}

func (s *spoolSet) newSpool() *spool { return &spool{s: s} }

// chunk is a buffer for put.
func (sp *spool) chunk() []byte { return sp.s.chunks.Get().([]byte) }

// put hands b (from chunk) to the consumer, waiting for room in memory.
func (sp *spool) put(b []byte) error {
	s := sp.s
	s.mu.Lock()
	defer s.mu.Unlock()
	for sp.file == nil || sp.closed || s.closed {
		if sp.closed || s.closed {
			s.chunks.Put(b[:cap(b)])
			return errSpoolClosed
		}
		if s.used+int64(len(b)) <= spoolBudget || (sp.current && sp.mem < spoolCurrent) {
			sp.chunks = append(sp.chunks, b)
			sp.mem += int64(len(b))
			s.used += int64(len(b))
			s.cond.Broadcast()
			return nil
		}
		if s.spill {
			f, err := os.CreateTemp(s.dir, "spool-*")
			if err != nil {
				s.chunks.Put(b[:cap(b)])
				return err
			}
			os.Remove(f.Name()) // the open file is all that is needed
			sp.file = f
			break
		}
		s.cond.Wait()
	}
	n, err := sp.file.WriteAt(b, sp.fileW)
	sp.fileW += int64(n)
	s.chunks.Put(b[:cap(b)])
	s.cond.Broadcast()
	return err
}

// finish ends the stream with err (nil: complete).
func (sp *spool) finish(err error) {
	sp.s.mu.Lock()
	sp.done, sp.err = true, err
	sp.s.cond.Broadcast()
	sp.s.mu.Unlock()
}

// open marks the spool as the one the consumer reads now.
func (sp *spool) open() {
	sp.s.mu.Lock()
	sp.current = true
	sp.s.cond.Broadcast()
	sp.s.mu.Unlock()
}

func (sp *spool) Read(p []byte) (int, error) {
	s := sp.s
	s.mu.Lock()
	defer s.mu.Unlock()
	for {
		if sp.closed {
			return 0, errSpoolClosed
		}
		if len(sp.chunks) > 0 {
			c := sp.chunks[0]
			n := copy(p, c[sp.off:])
			sp.off += n
			if sp.off == len(c) {
				sp.chunks[0] = nil
				sp.chunks, sp.off = sp.chunks[1:], 0
				s.chunks.Put(c[:cap(c)])
			}
			sp.mem -= int64(n)
			s.used -= int64(n)
			s.cond.Broadcast()
			return n, nil
		}
		if sp.file != nil && sp.fileR < sp.fileW {
			n, err := sp.file.ReadAt(p[:min(int64(len(p)), sp.fileW-sp.fileR)], sp.fileR)
			sp.fileR += int64(n)
			if n > 0 {
				err = nil
			}
			return n, err
		}
		if sp.done {
			if sp.err != nil {
				return 0, sp.err
			}
			return 0, io.EOF
		}
		if s.closed {
			return 0, errSpoolClosed
		}
		start := time.Now()
		s.cond.Wait()
		s.waited += time.Since(start)
		if !s.spill && s.waited > spillAfter && 2*s.waited > time.Since(s.start) {
			s.spill = true
			s.cond.Broadcast()
		}
	}
}

// Close gives the spool's memory back and stops its fetch.
func (sp *spool) Close() error {
	s := sp.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if sp.closed {
		return nil
	}
	sp.closed = true
	for _, c := range sp.chunks {
		s.chunks.Put(c[:cap(c)])
	}
	s.used -= sp.mem
	sp.chunks, sp.mem = nil, 0
	if sp.file != nil {
		sp.file.Close()
	}
	s.cond.Broadcast()
	return nil
}
