package mirror

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/errdef"
)

// Prefetcher fetches blobs in the order a consumer will open them, a
// bounded number ahead, so downloading overlaps with what the consumer does
// (compressing the bundle). Into the cache, where the disk holds whole blobs
// only; or, with PrefetchOptions.Stream, straight to the consumer.
type Prefetcher struct {
	c      *Client
	cache  *Cache
	ref    map[string]string // digest -> an image reference that has it
	ready  map[digest.Digest]chan struct{}
	spools map[digest.Digest]*spool // Stream: blobs not in the cache
	descs  map[digest.Digest]ocispec.Descriptor
	set    *spoolSet
	errs   sync.Map // digest -> error
	fresh  sync.Map // digest -> struct{}: fetched and verified in this run
	slots  chan struct{}
	cancel context.CancelFunc
	prog   Progress
	// running counts the dispatcher and in-flight fetches, which Close waits for.
	running sync.WaitGroup
}

// PrefetchOptions tunes Prefetch.
type PrefetchOptions struct {
	Jobs  int // fetches at once
	Ahead int // blobs fetched beyond the last one opened
	// Stream sends blobs the cache lacks to the consumer without storing
	// them in the cache: for a cache that is thrown away afterwards.
	Stream   bool
	Progress Progress
}

// Prefetch starts fetching order's blobs that are not cached yet, from the
// repository of sources[digest].
func (c *Client) Prefetch(ctx context.Context, cache *Cache, order []ocispec.Descriptor, sources map[string]string, opts PrefetchOptions) *Prefetcher {
	ctx, cancel := context.WithCancel(ctx)
	prog := opts.Progress
	p := &Prefetcher{c: c, cache: cache, ref: sources, ready: map[digest.Digest]chan struct{}{}, descs: map[digest.Digest]ocispec.Descriptor{},
		slots: make(chan struct{}, max(opts.Ahead, 1)), cancel: cancel, prog: prog}
	if opts.Stream {
		p.set, p.spools = newSpoolSet(cache.Dir), map[digest.Digest]*spool{}
	}
	var todo []ocispec.Descriptor
	for _, d := range order {
		ch := make(chan struct{})
		p.ready[d.Digest], p.descs[d.Digest] = ch, d
		if ok, _ := cache.storage.Exists(ctx, d); ok {
			close(ch)
			if prog != nil {
				prog.BlobDone(sources[d.Digest.String()], d, true)
			}
			continue
		}
		if p.set != nil {
			p.spools[d.Digest] = p.set.newSpool()
		}
		todo = append(todo, d)
	}
	jobs := opts.Jobs
	p.running.Add(1)
	go func() {
		defer p.running.Done()
		sem := make(chan struct{}, max(jobs, 1))
		for _, d := range todo {
			select {
			case p.slots <- struct{}{}: // released when the consumer opens an earlier blob
			case <-ctx.Done():
				return
			}
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				return
			}
			p.running.Add(1)
			go func() {
				defer p.running.Done()
				defer func() { <-sem }()
				if sp := p.spools[d.Digest]; sp != nil {
					sp.finish(p.stream(ctx, d, sp))
					return
				}
				if err := p.fetch(ctx, d); err != nil {
					p.errs.Store(d.Digest, err)
				}
				close(p.ready[d.Digest])
			}()
		}
	}()
	return p
}

// fetch fetches blob d into the cache.
func (p *Prefetcher) fetch(ctx context.Context, d ocispec.Descriptor) error {
	return p.fetchRetried(ctx, d, func(rc io.ReadCloser) error {
		// The cache verifies size and digest before the blob becomes visible.
		err := p.cache.storage.Push(ctx, d, rc)
		if err == nil {
			p.fresh.Store(d.Digest, struct{}{})
		}
		if errors.Is(err, errdef.ErrAlreadyExists) {
			return nil
		}
		return err
	})
}

// stream fetches blob d into sp, resuming after a transient error where
// it broke off. The reader Open returns checks the digest.
func (p *Prefetcher) stream(ctx context.Context, d ocispec.Descriptor, sp *spool) error {
	var n int64
	return p.fetchRetried(ctx, d, func(rc io.ReadCloser) error {
		if n > 0 {
			var err error
			if s, ok := rc.(io.Seeker); ok {
				_, err = s.Seek(n, io.SeekStart)
			} else {
				_, err = io.CopyN(io.Discard, rc, n)
			}
			if err != nil {
				return err
			}
		}
		for n < d.Size {
			buf := sp.chunk()
			k, err := io.ReadFull(rc, buf[:min(int64(len(buf)), d.Size-n)])
			if k > 0 {
				if err := sp.put(buf[:k]); err != nil {
					return err
				}
				n += int64(k)
			}
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			if err != nil {
				return err
			}
		}
		return nil
	})
}

// fetchRetried opens blob d in the repository of an image that has it and
// hands it to consume, again after a transient error, then reports it done.
func (p *Prefetcher) fetchRetried(ctx context.Context, d ocispec.Descriptor, consume func(io.ReadCloser) error) error {
	src := p.ref[d.Digest.String()]
	ref, _, err := splitRef(src)
	if err != nil {
		return err
	}
	repo, err := p.c.Repository(ref)
	if err != nil {
		return err
	}
	err = p.c.retry(ctx, retryAttempts, func() error {
		rc, err := repo.Blobs().Fetch(ctx, d)
		if err != nil {
			return err
		}
		defer rc.Close()
		return consume(rc)
	})
	if err != nil {
		return fmt.Errorf("image %s: blob %s: %w", src, d.Digest, Classify(err))
	}
	if p.prog != nil {
		p.prog.BlobDone(src, d, false)
	}
	return nil
}

// Open waits for blob d and opens it (a streamed blob opens at once, and
// reads as it arrives). Opening a blob frees room for the prefetcher to go
// one blob further.
func (p *Prefetcher) Open(ctx context.Context, d digest.Digest) (io.ReadCloser, error) {
	ch, ok := p.ready[d]
	if !ok {
		return nil, fmt.Errorf("blob %s was not planned", d)
	}
	if sp := p.spools[d]; sp != nil {
		select {
		case <-p.slots:
		default:
		}
		sp.open()
		return newVerified(sp, p.descs[d], p.ref[d.String()]), nil
	}
	select {
	case <-ch:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	select {
	case <-p.slots:
	default:
	}
	if err, ok := p.errs.Load(d); ok {
		return nil, err.(error)
	}
	return p.cache.Open(ctx, d)
}

// Fresh reports whether blob d is verified in this run: on the way into
// the cache, or (streamed) by the reader Open returns, which fails the read
// of its last byte on a mismatch. A reader need not hash it again. Blobs
// that were already cached are not fresh.
func (p *Prefetcher) Fresh(d digest.Digest) bool {
	if _, ok := p.spools[d]; ok {
		return p.descs[d].Size > 0 // an empty blob has no last read to fail
	}
	_, ok := p.fresh.Load(d)
	return ok
}

// verified checks a streamed blob with oras's VerifyReader; the read that
// completes the blob fails if the registry sent other content, so a
// consumer that stops at the blob's size still sees the mismatch.
type verified struct {
	*content.VerifyReader
	io.Closer
	left    int64
	checked bool
	desc    ocispec.Descriptor
	src     string
}

func newVerified(rc io.ReadCloser, desc ocispec.Descriptor, src string) *verified {
	return &verified{VerifyReader: content.NewVerifyReader(rc, desc), Closer: rc, left: desc.Size, desc: desc, src: src}
}

func (v *verified) Read(p []byte) (int, error) {
	n, err := v.VerifyReader.Read(p)
	v.left -= int64(n)
	if v.left == 0 && !v.checked {
		v.checked = true
		if verr := v.Verify(); verr != nil {
			return n, fmt.Errorf("image %s: blob %s: the registry sent other content: %w", v.src, v.desc.Digest, verr)
		}
	}
	return n, err
}

// Close stops fetching and waits until no fetch writes into the cache, so
// a caller may remove a temporary cache right after.
func (p *Prefetcher) Close() {
	p.cancel()
	if p.set != nil {
		p.set.close()
	}
	p.running.Wait()
}
