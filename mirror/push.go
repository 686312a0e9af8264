package mirror

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/errgroup"
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
	mu      sync.Mutex
	// have records, per repository, blobs known present (true) or known
	// missing when the plan asked (false); a digest not there is unknown.
	have map[string]map[string]bool
	// landings are the uploads each image's copy waits for, by digest;
	// written before the copies start.
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
		home: map[string]string{},
		have: map[string]map[string]bool{}, meta: map[string][]byte{}}
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
