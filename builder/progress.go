package builder

import (
	"fmt"
	"io"
	"sync"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/p7bundle/p7bundle/bundle"
	"github.com/p7bundle/p7bundle/internal/humanize"
	"github.com/p7bundle/p7bundle/mirror"
)

// progress prints one line per finished image, plus on a TTY a live line
// of blob and byte totals redrawn at most every 200 ms.
type progress struct {
	mu          sync.Mutex
	w           io.Writer
	tty         bool
	images      int
	imagesDone  int
	blobs       int
	fetched     int64
	cached      int64
	lastDraw    time.Time
	total       int64
	writeCalled bool
}

var _ mirror.Progress = (*progress)(nil)

func newProgress(w io.Writer, tty bool, images int) *progress {
	return &progress{w: w, tty: tty, images: images}
}

func (p *progress) ImageStarted(string) {}

func (p *progress) BlobDone(_ string, d ocispec.Descriptor, cached bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.blobs++
	if cached {
		p.cached += d.Size
	} else {
		p.fetched += d.Size
	}
	p.draw(fmt.Sprintf("fetching: %d/%d images resolved, %d blobs, %s fetched, %s already cached",
		p.imagesDone, p.images, p.blobs, humanize.Bytes(p.fetched), humanize.Bytes(p.cached)))
}

func (p *progress) ImageDone(ref string, img *mirror.Pulled) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.imagesDone++
	var size int64
	for _, b := range img.Blobs {
		size += b.Size
	}
	p.clear()
	fmt.Fprintf(p.w, "resolved %s %s (%v, %d blobs, %s)\n", ref, img.Root.Digest, img.Platforms, len(img.Blobs), humanize.Bytes(size))
}

func (p *progress) pullDone() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.clear()
	fmt.Fprintf(p.w, "resolved %d images (manifests and configs: %s fetched, %s from cache); layers are fetched while the bundle is written\n", p.imagesDone, humanize.Bytes(p.fetched), humanize.Bytes(p.cached))
	p.fetched, p.cached = 0, 0
}

func (p *progress) written(m *bundle.Manifest) func(int64) {
	p.total = m.Totals.BlobBytes
	return func(n int64) {
		p.mu.Lock()
		defer p.mu.Unlock()
		p.draw(fmt.Sprintf("writing: %s of ~%s", humanize.Bytes(n), humanize.Bytes(p.total)))
	}
}

func (p *progress) writeDone() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.clear()
	fmt.Fprintf(p.w, "blobs: %s fetched, %s from cache\n", humanize.Bytes(p.fetched), humanize.Bytes(p.cached))
}

func (p *progress) draw(line string) {
	if !p.tty || time.Since(p.lastDraw) < 200*time.Millisecond {
		return
	}
	p.lastDraw = time.Now()
	fmt.Fprintf(p.w, "\r\033[K%s", line)
	p.writeCalled = true
}

func (p *progress) clear() {
	if p.writeCalled {
		fmt.Fprint(p.w, "\r\033[K")
		p.writeCalled = false
	}
}
