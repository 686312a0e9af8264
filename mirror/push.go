package mirror

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/errgroup"
	"golang.org/x/sync/semaphore"
	"oras.land/oras-go/v2"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/registry"
	"oras.land/oras-go/v2/registry/remote"

	"github.com/p7bundle/p7bundle/bundle"
	"github.com/p7bundle/p7bundle/internal/imageref"
)

// PushOptions configure PushBundle.
type PushOptions struct {
	// Registry is the site registry, HOST[:PORT].
	Registry string
	// Prefix is the repository path under which images land ("pseven"); "" mirrors at the root.
	Prefix string
	// Jobs is the number of concurrent uploads (default 8).
	Jobs int
	// Log receives one line per image; nil is silent.
	Log io.Writer
	// Only, when set, pushes just these images of the bundle (doctor's probe).
	Only []string
}

// PushedImage maps a bundle image to where it now lives.
type PushedImage struct {
	Source string `json:"source"`
	Target string `json:"target"`
	Digest string `json:"digest"`
}

// PushResult counts what a push did.
type PushResult struct {
	Images       []PushedImage `json:"images"`
	BlobsPushed  int64         `json:"blobsPushed"`
	BlobsSkipped int64         `json:"blobsSkipped"`
	BlobsMounted int64         `json:"blobsMounted"`
	BytesPushed  int64         `json:"bytesPushed"`
	// BytesRead counts blob bytes read from the bundle; a re-install reads none.
	BytesRead int64 `json:"bytesRead"`
	// Retried counts blob uploads tried again after a transient failure.
	Retried int64 `json:"retried"`
}

// Target is where a source reference lands in the site registry.
type Target struct {
	Repository string // "pseven/pseven-app"
	Tag        string // "" for digest-only references
}

// TargetFor maps "registry.pseven.io/pseven-app:6.47" to repository
// "<prefix>/pseven-app", tag "6.47": the path after the source host.
func TargetFor(source, prefix string) (Target, error) {
	r, err := imageref.Parse(source)
	if err != nil {
		return Target{}, err
	}
	ref, err := registry.ParseReference(r.Name)
	if err != nil {
		return Target{}, fmt.Errorf("image %s: %w", source, err)
	}
	tag := r.Tag
	repo := ref.Repository
	if p := strings.Trim(prefix, "/"); p != "" {
		repo = p + "/" + repo
	}
	return Target{Repository: repo, Tag: tag}, nil
}

// Ref renders the target as HOST/REPO[:TAG][@DIGEST].
func (t Target) Ref(registryHost, dgst string) string {
	s := registryHost + "/" + t.Repository
	if t.Tag != "" {
		s += ":" + t.Tag
	}
	if dgst != "" && t.Tag == "" {
		s += "@" + dgst
	}
	return s
}

type pusher struct {
	c       *Client
	a       *bundle.Archive
	opts    PushOptions
	m       *bundle.Manifest
	blobs   map[string]bundle.Blob // by digest
	targets map[string]Target      // by image ref
	home    map[string]string      // blob digest -> repository its bytes go to
	// slots bounds the uploads running at once across every image's copy.
	slots *semaphore.Weighted
	mu    sync.Mutex
	// have records, per repository, blobs known present (true) or known
	// missing when the plan asked (false); a digest not there is unknown.
	have     map[string]map[string]bool
	landings map[string]*landing
	meta     map[string][]byte // manifests and indexes, pushed after sealing
	current  map[string]bool   // image ref -> already tagged with its digest
	res      PushResult
	read     atomic.Int64
	retried  atomic.Int64
	pushed   atomic.Int64
	skipped  atomic.Int64
	bytes    atomic.Int64
	mounted  atomic.Int64
	logMu    sync.Mutex
	// refusedOnce logs the first mount the registry refused.
	refusedOnce sync.Once
}

// PushBundle copies the images of a (verified) bundle archive into the
// site registry, one oras graph copy per image: blobs the registry has
// are not read, a blob shared between images is uploaded once into its
// home repository (the first image's) and mounted into the others, each
// upload streams through the seek table checked against the signed table
// of contents and is tried again after a transient failure. Tags come
// last, once every graph has landed and every read matched; a rerun after
// an interruption uploads only what is missing.
func (c *Client) PushBundle(ctx context.Context, a *bundle.Archive, opts PushOptions) (*PushResult, error) {
	if opts.Jobs <= 0 {
		opts.Jobs = 8
	}
	m := a.Manifest()
	if len(opts.Only) > 0 {
		if m = only(m, opts.Only); len(m.Images) != len(opts.Only) {
			return nil, fmt.Errorf("%w: bundle has no image %v", ErrNotFound, opts.Only)
		}
	}
	p := &pusher{c: c, a: a, opts: opts, m: m, blobs: map[string]bundle.Blob{}, targets: map[string]Target{},
		home: map[string]string{}, slots: semaphore.NewWeighted(int64(opts.Jobs)),
		have: map[string]map[string]bool{}, landings: map[string]*landing{}, meta: map[string][]byte{}}
	for _, b := range m.Blobs {
		p.blobs[b.Digest.String()] = b
	}
	if err := p.plan(ctx); err != nil {
		return nil, err
	}
	if p.allCurrent() {
		// A re-install: every image is tagged with its digest already.
		p.logf("every image is already in %s with the bundle's digest", p.opts.Registry)
	} else if err := p.copyGraphs(ctx); err != nil {
		return nil, err
	}
	if err := p.tagAll(ctx); err != nil {
		return nil, err
	}
	p.res.BlobsPushed, p.res.BlobsSkipped, p.res.BytesPushed = p.pushed.Load(), p.skipped.Load(), p.bytes.Load()
	p.res.BlobsMounted, p.res.BytesRead, p.res.Retried = p.mounted.Load(), p.read.Load(), p.retried.Load()
	return &p.res, nil
}

// only is m cut down to the images refs and their blobs.
func only(m *bundle.Manifest, refs []string) *bundle.Manifest {
	sub := *m
	sub.Images, sub.Blobs = nil, nil
	need := map[digest.Digest]bool{}
	for _, img := range m.Images {
		if slices.Contains(refs, img.Ref) {
			sub.Images = append(sub.Images, img)
			for _, d := range img.Blobs {
				need[d] = true
			}
		}
	}
	for _, b := range m.Blobs {
		if need[b.Digest] {
			sub.Blobs = append(sub.Blobs, b)
		}
	}
	return &sub
}

func (p *pusher) logf(format string, args ...any) {
	if p.opts.Log != nil {
		p.logMu.Lock()
		defer p.logMu.Unlock()
		fmt.Fprintf(p.opts.Log, format+"\n", args...)
	}
}

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
	// Each graph walks its own nodes; started from the walks, uploads would
	// begin in walk order. Started here largest first across all images,
	// the last to start is a small one and the uploads end together; a walk
	// reaching a blob waits for its landing (or starts it, if first).
	sort.SliceStable(todo, func(i, j int) bool { return todo[i].Size > todo[j].Size })
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
			uploads.Go(func() error { return keep(p.land(uctx, b)) })
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

// landing is one blob's upload into its home repository, which every
// image sharing the blob waits for before mounting it: the file is read
// once.
type landing struct {
	done chan struct{}
	err  error
}

// land puts blob b into its home repository unless it is there already.
func (p *pusher) land(ctx context.Context, b bundle.Blob) error {
	d := b.Digest.String()
	p.mu.Lock()
	l, started := p.landings[d]
	if !started {
		l = &landing{done: make(chan struct{})}
		p.landings[d] = l
	}
	p.mu.Unlock()
	if started {
		select {
		case <-l.done:
			return l.err
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	defer close(l.done)
	home := p.home[d]
	if !p.uploaded(b) || p.present(home, d) {
		return nil
	}
	if l.err = p.slots.Acquire(ctx, 1); l.err != nil {
		return l.err
	}
	defer p.slots.Release(1)
	l.err = p.uploadBlob(ctx, home, b)
	return l.err
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
			if err := p.land(ctx, p.blobs[d]); err != nil {
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
			if err := p.land(ctx, p.blobs[d]); err != nil {
				return nil, err
			}
			return []string{home}, nil
		},
		OnMounted: func(_ context.Context, desc ocispec.Descriptor) error {
			p.mounted.Add(1)
			p.markPresent(repoName, desc.Digest.String())
			return nil
		},
		PostCopy: func(_ context.Context, desc ocispec.Descriptor) error {
			if !p.isMeta(desc.Digest.String()) {
				p.pushed.Add(1)
				p.bytes.Add(desc.Size)
				p.markPresent(repoName, desc.Digest.String())
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
	home := s.p.home[d]
	if home == s.repo && !s.p.blobs[d].Omitted {
		return s.p.a.Blob(desc.Digest)
	}
	repo, err := s.p.repo(home)
	if err != nil {
		return nil, err
	}
	rc, err := repo.Blobs().Fetch(ctx, desc)
	if err != nil {
		return nil, fmt.Errorf("registry %s: reading %s from %s for %s: %w", s.p.opts.Registry, d, home, s.repo, Classify(err))
	}
	// The HTTP transport closes an upload body that is a Closer from its
	// own goroutine while oras closes it too.
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
	p.markPresent(repoName, desc.Digest.String())
	return nil
}

// plan maps images to repositories, picks a home repository for every
// blob (the first image needing it) and asks the registry what it has.
func (p *pusher) plan(ctx context.Context) error {
	for _, img := range p.m.Images {
		t, err := TargetFor(img.Ref, p.opts.Prefix)
		if err != nil {
			return err
		}
		p.targets[img.Ref] = t
		for _, d := range img.Blobs {
			if _, ok := p.home[string(d)]; !ok {
				p.home[string(d)] = t.Repository
			}
		}
	}
	type check struct{ repo, digest string }
	var checks []check
	for _, b := range p.m.Blobs {
		if !bundle.IsManifest(b.MediaType) && !bundle.IsIndex(b.MediaType) {
			checks = append(checks, check{p.home[b.Digest.String()], b.Digest.String()})
		}
	}
	p.current = make(map[string]bool, len(p.m.Images))
	var currentMu sync.Mutex
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(4 * p.opts.Jobs)
	for _, img := range p.m.Images {
		g.Go(func() error {
			ok, err := p.isCurrent(gctx, img)
			currentMu.Lock()
			p.current[img.Ref] = ok
			currentMu.Unlock()
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	if p.allCurrent() {
		return nil // a re-install: no blob needs asking about
	}
	g, gctx = errgroup.WithContext(ctx)
	g.SetLimit(4 * p.opts.Jobs)
	for _, c := range checks {
		g.Go(func() error {
			ok, err := p.exists(gctx, c.repo, c.digest)
			if err != nil {
				return err
			}
			if ok {
				p.skipped.Add(1)
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	return p.checkBase(ctx)
}

// checkBase runs before anything is uploaded: every blob a differential
// bundle leaves to its base must be in the site registry, in the image's
// repository or (mounted from there) in another one; the manifests among
// them are fetched, so finish can push and tag them like the others.
func (p *pusher) checkBase(ctx context.Context) error {
	if p.m.Base == nil {
		return nil
	}
	omitted := map[string]bundle.Blob{}
	for _, b := range p.m.Blobs {
		if b.Omitted {
			omitted[b.Digest.String()] = b
		}
	}
	// Every repository of this bundle that may hold a blob, its own first.
	repos := map[string][]string{}
	for _, img := range p.m.Images {
		for _, d := range img.Blobs {
			if _, ok := omitted[string(d)]; ok {
				repos[string(d)] = append(repos[string(d)], p.targets[img.Ref].Repository)
			}
		}
	}
	var mu sync.Mutex
	var missing []string
	var missingBytes int64
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(4 * p.opts.Jobs)
	for d, b := range omitted {
		g.Go(func() error {
			for _, repo := range repos[d] {
				found, err := p.fromBase(gctx, repo, b)
				if err != nil || found {
					return err
				}
			}
			mu.Lock()
			missing = append(missing, d)
			missingBytes += b.Size
			mu.Unlock()
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	if len(missing) > 0 {
		return fmt.Errorf("%w: %w: this differential bundle leaves %d blobs (%d bytes) to its base %s, and registry %s lacks them: install %s first, or this month's full bundle",
			bundle.ErrBase, ErrNotFound, len(missing), missingBytes, p.m.Base.Name, p.opts.Registry, p.m.Base.Name)
	}
	p.logf("differential bundle: the %d blobs its base %s carried are in %s", len(omitted), p.m.Base.Name, p.opts.Registry)
	return nil
}

// fromBase looks for an omitted blob in repo: a manifest is fetched (and
// verified), another blob becomes the source of later mounts.
func (p *pusher) fromBase(ctx context.Context, repoName string, b bundle.Blob) (bool, error) {
	desc := ocispec.Descriptor{MediaType: b.MediaType, Digest: b.Digest, Size: b.Size}
	if !bundle.IsManifest(b.MediaType) && !bundle.IsIndex(b.MediaType) {
		ok, err := p.exists(ctx, repoName, b.Digest.String())
		if ok {
			p.mu.Lock()
			p.home[b.Digest.String()] = repoName
			p.mu.Unlock()
		}
		return ok, err
	}
	repo, err := p.repo(repoName)
	if err != nil {
		return false, err
	}
	rc, err := repo.Manifests().Fetch(ctx, desc)
	if err != nil {
		if errors.Is(Classify(err), ErrNotFound) {
			return false, nil
		}
		return false, fmt.Errorf("registry %s: fetching manifest %s from %s: %w", p.opts.Registry, b.Digest, repoName, Classify(err))
	}
	defer rc.Close()
	data, err := content.ReadAll(rc, desc)
	if err != nil {
		return false, fmt.Errorf("%w: registry %s: manifest %s in %s: %v", bundle.ErrBase, p.opts.Registry, b.Digest, repoName, err)
	}
	p.mu.Lock()
	p.meta[b.Digest.String()] = data
	p.mu.Unlock()
	return true, nil
}

// isCurrent reports whether the image is already in its repository under
// its tag (or digest) with the bundle's digest. The registry accepted that
// manifest only with all its blobs linked, so the image is complete.
func (p *pusher) isCurrent(ctx context.Context, img bundle.Image) (bool, error) {
	t := p.targets[img.Ref]
	repo, err := p.repo(t.Repository)
	if err != nil {
		return false, err
	}
	ref := t.Tag
	if ref == "" {
		ref = img.Digest.String()
	}
	desc, err := resolve(ctx, repo, ref)
	if err != nil {
		if errors.Is(Classify(err), ErrNotFound) {
			return false, nil
		}
		return false, fmt.Errorf("registry %s: resolving %s: %w", p.opts.Registry, t.Ref(p.opts.Registry, ""), Classify(err))
	}
	return desc.Digest == img.Digest, nil
}

func (p *pusher) allCurrent() bool {
	for _, img := range p.m.Images {
		if !p.current[img.Ref] {
			return false
		}
	}
	return len(p.m.Images) > 0
}

func (p *pusher) exists(ctx context.Context, repoName, d string) (bool, error) {
	p.mu.Lock()
	ok, known := p.have[repoName][d]
	p.mu.Unlock()
	if known {
		return ok, nil
	}
	repo, err := p.repo(repoName)
	if err != nil {
		return false, err
	}
	ok, err = repo.Blobs().Exists(ctx, ocispec.Descriptor{Digest: digest.Digest(d)})
	if err != nil {
		return false, fmt.Errorf("registry %s: checking %s in %s: %w", p.opts.Registry, d, repoName, Classify(err))
	}
	p.record(repoName, d, ok)
	return ok, nil
}

func (p *pusher) present(repo, d string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.have[repo][d]
}

func (p *pusher) markPresent(repo, d string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.have[repo] == nil {
		p.have[repo] = map[string]bool{}
	}
	p.have[repo][d] = true
}

// record keeps what a check found, unless an upload or mount meanwhile
// put the blob there.
func (p *pusher) record(repo, d string, ok bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.have[repo] == nil {
		p.have[repo] = map[string]bool{}
	}
	if !p.have[repo][d] {
		p.have[repo][d] = ok
	}
}

func (p *pusher) repo(name string) (*remote.Repository, error) {
	ref, err := registry.ParseReference(p.opts.Registry + "/" + name)
	if err != nil {
		return nil, fmt.Errorf("site repository %s/%s: %w", p.opts.Registry, name, err)
	}
	return p.c.Repository(ref)
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
	src, err := p.repo(from)
	if err != nil {
		return err
	}
	desc := ocispec.Descriptor{MediaType: b.MediaType, Digest: b.Digest, Size: b.Size}
	rc, err := src.Blobs().Fetch(ctx, desc)
	if err != nil {
		return fmt.Errorf("registry %s: reading %s from %s for %s: %w", p.opts.Registry, b.Digest, from, to, Classify(err))
	}
	defer rc.Close()
	// Only a Reader: the HTTP transport closes a body that is a Closer, from
	// its own goroutine, racing the deferred Close.
	if err := p.upload(ctx, to, desc, struct{ io.Reader }{rc}); err != nil {
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
