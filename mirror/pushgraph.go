package mirror

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"sync"
	"sync/atomic"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/errgroup"
	"oras.land/oras-go/v2"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/registry/remote"

	"github.com/p7bundle/p7bundle/bundle"
)

// copyGraphs reads the manifests from the archive and checks the rest of
// its structure, then copies each image's graph into its repository with
// oras.CopyGraph: the walk, the existence checks, mounts from the blob's
// home repository, pushes of the manifests below the root, children
// first. The roots are left to tagAll.
func (p *pusher) copyGraphs(ctx context.Context) error {
	meta, err := p.a.Metadata()
	if err != nil {
		return err
	}
	for d, data := range meta {
		p.meta[d.String()] = data
	}
	if err := p.a.CheckStructure(); err != nil {
		return err
	}
	var todo []bundle.Blob
	for _, b := range p.m.Blobs {
		if repo := p.home[b.Digest.String()]; p.uploaded(b) && repo != "" && !p.present(repo, b.Digest.String()) {
			todo = append(todo, b)
		}
	}
	// Uploads start here, largest first across all images, so the last to
	// start is a small one and they end together; each graph waits for
	// the landing of the blobs it needs. Started from the walks, uploads
	// would begin in walk order, and a walk's mounts could not know that
	// another walk is already reading the blob.
	sort.SliceStable(todo, func(i, j int) bool { return todo[i].Size > todo[j].Size })
	p.landings = make(map[string]*landing, len(todo))
	for _, b := range todo {
		p.landings[b.Digest.String()] = &landing{done: make(chan struct{})}
	}
	// A failure cancels the rest, and those waiting on a landing it
	// cancelled may return first: report the failure, not the cancel.
	var cause error
	var causeOnce sync.Once
	keep := func(err error) error {
		if err != nil && !errors.Is(err, context.Canceled) {
			causeOnce.Do(func() { cause = err })
		}
		return err
	}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		uploads, uctx := errgroup.WithContext(gctx)
		uploads.SetLimit(p.opts.Jobs)
		for _, b := range todo {
			if uctx.Err() != nil {
				break
			}
			uploads.Go(func() error {
				l := p.landings[b.Digest.String()]
				l.err = p.uploadBlob(uctx, p.home[b.Digest.String()], b)
				close(l.done)
				return keep(l.err)
			})
		}
		return uploads.Wait()
	})
	g.Go(func() error {
		images, ictx := errgroup.WithContext(gctx)
		images.SetLimit(p.opts.Jobs)
		for _, img := range p.m.Images {
			if ictx.Err() != nil {
				break
			}
			if !p.current[img.Ref] {
				images.Go(func() error { return keep(p.copyImage(ictx, img)) })
			}
		}
		return images.Wait()
	})
	if err := g.Wait(); err != nil {
		if cause != nil {
			return cause
		}
		return err
	}
	return ctx.Err()
}

// uploaded reports whether b is a blob whose bytes a push may upload: the
// bundle carries it and it is not a manifest (those come from metadata).
func (p *pusher) uploaded(b bundle.Blob) bool {
	return !b.Omitted && !bundle.IsManifest(b.MediaType) && !bundle.IsIndex(b.MediaType)
}

// landing is one blob's upload into its home repository: every image
// sharing the blob waits for it before mounting, so the file is read once.
type landing struct {
	done chan struct{}
	err  error
}

// landed waits until blob d is in its home repository.
func (p *pusher) landed(ctx context.Context, d string) error {
	l, ok := p.landings[d]
	if !ok {
		return nil // there already, or a base blob checkBase found
	}
	select {
	case <-l.done:
		return l.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// copyImage copies one image's graph into its repository.
func (p *pusher) copyImage(ctx context.Context, img bundle.Image) error {
	repoName := p.targets[img.Ref].Repository
	repo, err := p.repo(repoName)
	if err != nil {
		return err
	}
	own := make(map[digest.Digest]bool, len(img.Blobs))
	for _, d := range img.Blobs {
		own[d] = true
	}
	opts := oras.CopyGraphOptions{
		Concurrency: p.opts.Jobs,
		// Only the image's own blobs: a signature's subject is another image
		// of the bundle, copied and tagged as such.
		FindSuccessors: func(ctx context.Context, f content.Fetcher, desc ocispec.Descriptor) ([]ocispec.Descriptor, error) {
			all, err := content.Successors(ctx, f, desc)
			if err != nil {
				return nil, fmt.Errorf("%w: manifest %s of %s: %v", bundle.ErrCorrupt, desc.Digest, img.Ref, err)
			}
			var succ []ocispec.Descriptor
			for _, s := range all {
				if own[s.Digest] {
					succ = append(succ, s)
				}
			}
			sort.SliceStable(succ, func(i, j int) bool { return succ[i].Size > succ[j].Size })
			return succ, nil
		},
		// The hook that keeps what oras cannot promise: a blob's upload is
		// read through the seek table, verified, tried again after a broken
		// connection, and done once for all images that share it.
		PreCopy: func(ctx context.Context, desc ocispec.Descriptor) error {
			d := desc.Digest.String()
			switch {
			case desc.Digest == img.Digest:
				return oras.SkipNode // the root goes in with its tag, once every graph has landed
			case p.isMeta(d):
				return nil
			case p.home[d] != repoName:
				// The registry answered a mount with an upload session:
				// graphSource reads the home repository.
				return nil
			}
			if err := p.landed(ctx, d); err != nil {
				return err
			}
			return oras.SkipNode
		},
		MountFrom: func(ctx context.Context, desc ocispec.Descriptor) ([]string, error) {
			d := desc.Digest.String()
			home := p.home[d]
			if home == repoName {
				return nil, nil
			}
			if err := p.landed(ctx, d); err != nil {
				return nil, err
			}
			return []string{home}, nil
		},
		OnMounted: func(_ context.Context, desc ocispec.Descriptor) error {
			p.mounted.Add(1)
			p.record(repoName, desc.Digest.String(), true)
			return nil
		},
		PostCopy: func(_ context.Context, desc ocispec.Descriptor) error {
			if !p.isMeta(desc.Digest.String()) {
				p.pushed.Add(1)
				p.bytes.Add(desc.Size)
				p.record(repoName, desc.Digest.String(), true)
			}
			return nil
		},
	}
	root := p.descriptor(img.Digest)
	err = oras.CopyGraph(ctx, &graphSource{p: p, repo: repoName}, &siteRepo{p: p, name: repoName, Repository: repo}, root, opts)
	var ce *oras.CopyError
	if errors.As(err, &ce) {
		err = ce.Err // our errors name the registry, the blob and the repository
	}
	return err
}

func (p *pusher) isMeta(d string) bool {
	_, ok := p.meta[d]
	return ok
}

func (p *pusher) descriptor(d digest.Digest) ocispec.Descriptor {
	b := p.blobs[d.String()]
	return ocispec.Descriptor{MediaType: b.MediaType, Digest: b.Digest, Size: b.Size}
}

// graphSource is what a graph copy into repository repo reads: manifests
// from the verified metadata, a blob whose home is another repository
// (or the base's) from there in the site registry, the rest from the
// bundle, verified as it streams.
type graphSource struct {
	p    *pusher
	repo string
}

func (s *graphSource) Fetch(ctx context.Context, desc ocispec.Descriptor) (io.ReadCloser, error) {
	d := desc.Digest.String()
	if data, ok := s.p.meta[d]; ok {
		return io.NopCloser(bytes.NewReader(data)), nil
	}
	if s.p.home[d] == s.repo && !s.p.blobs[d].Omitted {
		return s.p.a.Blob(desc.Digest)
	}
	return s.p.fetchFromHome(ctx, desc, s.repo)
}

// fetchFromHome opens a blob in its home repository of the site registry,
// to be uploaded into repository to.
func (p *pusher) fetchFromHome(ctx context.Context, desc ocispec.Descriptor, to string) (io.ReadCloser, error) {
	home := p.home[desc.Digest.String()]
	repo, err := p.repo(home)
	if err != nil {
		return nil, err
	}
	rc, err := repo.Blobs().Fetch(ctx, desc)
	if err != nil {
		return nil, fmt.Errorf("registry %s: reading %s from %s for %s: %w", p.opts.Registry, desc.Digest, home, to, Classify(err))
	}
	// Uploaded, the body is closed by the HTTP transport from its own
	// goroutine and by the deferred Close of whoever opened it.
	return &closeOnce{ReadCloser: rc}, nil
}

func (s *graphSource) Exists(_ context.Context, desc ocispec.Descriptor) (bool, error) {
	_, ok := s.p.blobs[desc.Digest.String()]
	return ok, nil
}

type closeOnce struct {
	io.ReadCloser
	once sync.Once
	err  error
}

func (c *closeOnce) Close() error {
	c.once.Do(func() { c.err = c.ReadCloser.Close() })
	return c.err
}

// siteRepo is a site repository as oras sees it during a push: blob
// existence comes from the plan where it asked, and a mount the registry
// refuses for lack of pull on the source becomes an upload.
type siteRepo struct {
	p    *pusher
	name string
	*remote.Repository
}

// Exists says no for manifests: pushing one is idempotent and cheaper
// than asking first.
func (s *siteRepo) Exists(ctx context.Context, desc ocispec.Descriptor) (bool, error) {
	if s.p.isMeta(desc.Digest.String()) {
		return false, nil
	}
	return s.p.exists(ctx, s.name, desc.Digest.String())
}

func (s *siteRepo) Push(ctx context.Context, desc ocispec.Descriptor, r io.Reader) error {
	if err := s.Repository.Push(ctx, desc, r); err != nil {
		return fmt.Errorf("registry %s: pushing %s to %s: %w", s.p.opts.Registry, desc.Digest, s.name, Classify(err))
	}
	return nil
}

func (s *siteRepo) Mount(ctx context.Context, desc ocispec.Descriptor, from string, getContent func() (io.ReadCloser, error)) error {
	err := s.Repository.Mount(ctx, desc, from, getContent)
	if err == nil || errors.Is(err, oras.SkipNode) {
		return err
	}
	if !errors.Is(Classify(err), ErrUnauthorized) {
		return fmt.Errorf("registry %s: mounting %s from %s into %s: %w", s.p.opts.Registry, desc.Digest, from, s.name, Classify(err))
	}
	if err := s.p.copyRefusedMount(ctx, s.p.blobs[desc.Digest.String()], s.name); err != nil {
		return err
	}
	return oras.SkipNode // in place, but not mounted: OnMounted must not count it
}

// uploadBlob streams one blob from the archive to the registry, trying
// again after a transient failure; a blob that does not match its signed
// digest stops the whole push.
func (p *pusher) uploadBlob(ctx context.Context, repo string, b bundle.Blob) error {
	desc := ocispec.Descriptor{MediaType: b.MediaType, Digest: b.Digest, Size: b.Size}
	tries := 0
	return p.c.retryIf(ctx, retryAttempts, uploadTransient, func() error {
		if tries++; tries > 1 {
			p.retried.Add(1)
		}
		r, err := p.a.Blob(b.Digest)
		if err != nil {
			return err
		}
		defer r.Close()
		counted := &countingReader{r: r, n: &p.read}
		err = p.upload(ctx, repo, desc, counted)
		if rerr := r.Err(); rerr != nil && errors.Is(rerr, bundle.ErrCorrupt) {
			return rerr
		}
		if err == nil && !r.Verified() {
			return fmt.Errorf("registry %s: took blob %s before the bundle's copy was read to its end", p.opts.Registry, b.Digest)
		}
		if err != nil {
			return fmt.Errorf("registry %s: uploading %s to %s: %w", p.opts.Registry, b.Digest, repo, err)
		}
		return nil
	})
}

type countingReader struct {
	r io.Reader
	n *atomic.Int64
}

func (c *countingReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.n.Add(int64(n))
	return n, err
}

func (p *pusher) upload(ctx context.Context, repoName string, desc ocispec.Descriptor, r io.Reader) error {
	repo, err := p.repo(repoName)
	if err != nil {
		return err
	}
	if err := repo.Blobs().Push(ctx, desc, r); err != nil {
		return Classify(err)
	}
	p.pushed.Add(1)
	p.bytes.Add(desc.Size)
	p.record(repoName, desc.Digest.String(), true)
	return nil
}

// copyRefusedMount puts blob b into repository to when the registry refused
// to mount it from its home repository: a token service that grants one
// repository per token leaves a mount without pull on its source, yet each
// repository alone is allowed. The bytes come from the bundle, verified;
// a differential bundle's base blob, which the bundle lacks, is read from
// its home repository in the site registry.
func (p *pusher) copyRefusedMount(ctx context.Context, b bundle.Blob, to string) error {
	from := p.home[b.Digest.String()]
	p.refusedOnce.Do(func() {
		p.logf("registry %s refused to mount %s from %s into %s (its token lacks pull on %s): uploading shared blobs instead", p.opts.Registry, b.Digest, from, to, from)
	})
	if !b.Omitted {
		return p.uploadBlob(ctx, to, b)
	}
	desc := p.descriptor(b.Digest)
	rc, err := p.fetchFromHome(ctx, desc, to)
	if err != nil {
		return err
	}
	defer rc.Close()
	if err := p.upload(ctx, to, desc, rc); err != nil {
		return fmt.Errorf("registry %s: uploading %s to %s: %w", p.opts.Registry, b.Digest, to, err)
	}
	return nil
}

// tagAll runs once every graph has landed and every read matched: it
// pushes each image's root manifest under its tag (or by digest),
// checking the digest the registry reports.
func (p *pusher) tagAll(ctx context.Context) error {
	var mu sync.Mutex
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(p.opts.Jobs)
	for _, img := range p.m.Images {
		t := p.targets[img.Ref]
		target := t.Ref(p.opts.Registry, img.Digest.String())
		record := func() {
			mu.Lock()
			p.res.Images = append(p.res.Images, PushedImage{Source: img.Ref, Target: target, Digest: img.Digest.String()})
			mu.Unlock()
		}
		if p.current[img.Ref] {
			record()
			continue
		}
		g.Go(func() error {
			repo, err := p.repo(t.Repository)
			if err != nil {
				return err
			}
			desc, data := p.descriptor(img.Digest), bytes.NewReader(p.meta[img.Digest.String()])
			if t.Tag == "" {
				err = repo.Manifests().Push(gctx, desc, data)
			} else {
				err = repo.PushReference(gctx, desc, data, t.Tag)
			}
			if err != nil {
				return fmt.Errorf("registry %s: pushing %s of %s: %w", p.opts.Registry, target, img.Ref, Classify(err))
			}
			record()
			p.logf("pushed %s -> %s (%s)", img.Ref, target, img.Digest)
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	sort.Slice(p.res.Images, func(i, j int) bool { return p.res.Images[i].Source < p.res.Images[j].Source })
	return nil
}
