package mirror

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/p7bundle/p7bundle/bundle"
	"github.com/p7bundle/p7bundle/internal/imageref"
	"golang.org/x/sync/errgroup"
	"oras.land/oras-go/v2"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/content/oci"
	"oras.land/oras-go/v2/errdef"
	"oras.land/oras-go/v2/registry"
)

// maxMetadataBytes caps manifests, indexes and configs read into memory.
const maxMetadataBytes = 4 << 20

// Cache is a content-addressed blob directory (OCI layout blobs/). Blobs
// are verified on the way in and written via rename, so an interrupted
// build leaves only whole blobs and a rerun fetches only what is missing.
type Cache struct {
	Dir     string
	storage *oci.Storage
}

// OpenCache opens or creates a blob cache in dir.
func OpenCache(dir string) (*Cache, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("cache dir %s: %w", dir, err)
	}
	// Partial downloads of a killed run are useless: drop them.
	os.RemoveAll(filepath.Join(dir, "ingest"))
	s, err := oci.NewStorage(dir)
	if err != nil {
		return nil, fmt.Errorf("cache dir %s: %w", dir, err)
	}
	probe, err := os.CreateTemp(dir, ".probe-*")
	if err != nil {
		return nil, fmt.Errorf("cache dir %s is not writable: %w", dir, err)
	}
	probe.Close()
	os.Remove(probe.Name())
	return &Cache{Dir: dir, storage: s}, nil
}

// Open returns a cached blob by digest ("sha256:...").
func (c *Cache) Open(ctx context.Context, d digest.Digest) (io.ReadCloser, error) {
	if err := d.Validate(); err != nil {
		return nil, err
	}
	return c.storage.Fetch(ctx, ocispec.Descriptor{Digest: d})
}

// Put stores a blob made here, not pulled (the site probe image).
func (c *Cache) Put(ctx context.Context, desc ocispec.Descriptor, data []byte) error {
	err := c.storage.Push(ctx, desc, bytes.NewReader(data))
	if errors.Is(err, errdef.ErrAlreadyExists) {
		return nil
	}
	return err
}

// PullOptions configure Pull.
type PullOptions struct {
	// Platforms to keep from an index; default linux/amd64.
	Platforms []ocispec.Platform
	// Jobs is the number of images fetched at once (default 4).
	Jobs int
	// Attempts per image for errors a retry can fix (default 4).
	Attempts int
	// Progress receives events; nil is silent.
	Progress Progress
	// MetadataOnly fetches manifests, indexes and configs but not layers;
	// Prefetch brings those while the bundle is being written.
	MetadataOnly bool
	// Artifacts pulls manifests that are not images of a platform (cosign
	// signatures): no platform is required or recorded.
	Artifacts bool
}

// Progress observes a pull. Implementations must be safe for concurrent use.
type Progress interface {
	ImageStarted(ref string)
	BlobDone(ref string, desc ocispec.Descriptor, cached bool)
	ImageDone(ref string, img *Pulled)
}

// Pulled is one image in the cache.
type Pulled struct {
	Ref string
	// Root is the manifest (or filtered index) kept for the bundle.
	Root ocispec.Descriptor
	// Platforms kept, e.g. ["linux/amd64"].
	Platforms []string
	// SourceDigest is the upstream index digest when it was filtered.
	SourceDigest string
	// Blobs reachable from Root, Root included, each once.
	Blobs []ocispec.Descriptor
}

// ParsePlatform parses os/arch[/variant] (go-containerregistry's syntax;
// the architecture is required).
func ParsePlatform(s string) (ocispec.Platform, error) {
	p, err := v1.ParsePlatform(s)
	if err != nil || p.OS == "" || p.Architecture == "" || strings.Count(s, "/") > 2 {
		return ocispec.Platform{}, fmt.Errorf("--platform %q: want os/arch[/variant]", s)
	}
	return ocispec.Platform{OS: p.OS, Architecture: p.Architecture, Variant: p.Variant, OSVersion: p.OSVersion}, nil
}

// PlatformString renders os/arch[/variant].
func PlatformString(p ocispec.Platform) string { return ggcrPlatform(p).String() }

func ggcrPlatform(p ocispec.Platform) v1.Platform {
	return v1.Platform{OS: p.OS, Architecture: p.Architecture, Variant: p.Variant, OSVersion: p.OSVersion, OSFeatures: p.OSFeatures}
}

// Pull copies every image into cache, in parallel, and reports what it
// kept. The first failure cancels the rest and names its image.
func (c *Client) Pull(ctx context.Context, cache *Cache, refs []string, opts PullOptions) ([]*Pulled, error) {
	if len(opts.Platforms) == 0 {
		opts.Platforms = []ocispec.Platform{{OS: "linux", Architecture: "amd64"}}
	}
	if opts.Jobs <= 0 {
		opts.Jobs = 4
	}
	if opts.Attempts <= 0 {
		opts.Attempts = retryAttempts
	}
	out := make([]*Pulled, len(refs))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(opts.Jobs)
	for i, ref := range refs {
		g.Go(func() error {
			if opts.Progress != nil {
				opts.Progress.ImageStarted(ref)
			}
			// Whole blobs already in the cache are kept; a retry fetches only the rest.
			err := c.retry(gctx, opts.Attempts, func() (err error) {
				out[i], err = c.pullOne(gctx, cache, ref, opts)
				return err
			})
			if err != nil {
				return fmt.Errorf("image %s: %w", ref, Classify(err))
			}
			if opts.Progress != nil {
				opts.Progress.ImageDone(ref, out[i])
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	return out, nil
}

// splitRef parses an image reference for oras; "repo:tag@digest"
// resolves by digest, the tag being informational.
func splitRef(s string) (registry.Reference, string, error) {
	r, err := imageref.Parse(s)
	if err != nil {
		return registry.Reference{}, "", fmt.Errorf("invalid image reference: %w", err)
	}
	ref, err := registry.ParseReference(r.Name)
	if err != nil {
		return ref, "", fmt.Errorf("invalid image reference %q: %w", s, err)
	}
	ref.Reference = r.Tag
	if r.Digest != "" {
		ref.Reference = r.Digest.String()
	}
	if ref.Reference == "" {
		return ref, "", fmt.Errorf("reference %q has no tag or digest", s)
	}
	return ref, ref.Reference, nil
}

func (c *Client) pullOne(ctx context.Context, cache *Cache, refStr string, opts PullOptions) (*Pulled, error) {
	ref, tagOrDigest, err := splitRef(refStr)
	if err != nil {
		return nil, err
	}
	repo, err := c.Repository(ref)
	if err != nil {
		return nil, err
	}
	memo := newMetadataMemo(repo)
	desc, err := memo.resolve(ctx, repo, tagOrDigest)
	if err != nil {
		return nil, err
	}
	p := &Pulled{Ref: refStr}
	copyOpts := oras.CopyGraphOptions{Concurrency: 3, MaxMetadataBytes: maxMetadataBytes, FindSuccessors: successors}
	if opts.MetadataOnly {
		copyOpts.FindSuccessors = metadataSuccessors
	}
	if opts.Progress != nil {
		copyOpts.PostCopy = func(_ context.Context, d ocispec.Descriptor) error {
			opts.Progress.BlobDone(refStr, d, false)
			return nil
		}
		copyOpts.OnCopySkipped = func(_ context.Context, d ocispec.Descriptor) error {
			opts.Progress.BlobDone(refStr, d, true)
			return nil
		}
	}

	switch {
	case bundle.IsIndex(desc.MediaType):
		idx, err := fetchJSON[ocispec.Index](ctx, memo, desc, "index")
		if err != nil {
			return nil, err
		}
		var kept []ocispec.Descriptor
		var available []string
		for _, m := range idx.Manifests {
			if m.Platform == nil || m.Platform.OS == "unknown" {
				continue
			}
			available = append(available, PlatformString(*m.Platform))
			if matchPlatform(*m.Platform, opts.Platforms) {
				kept = append(kept, m)
			}
		}
		if len(kept) == 0 {
			return nil, fmt.Errorf("%w: wanted %s, image has %s", ErrPlatform, platformList(opts.Platforms), strings.Join(available, ", "))
		}
		p.SourceDigest = desc.Digest.String()
		for _, m := range kept {
			if err := oras.CopyGraph(ctx, memo, cache.storage, m, copyOpts); err != nil {
				return nil, err
			}
			p.Platforms = append(p.Platforms, PlatformString(*m.Platform))
		}
		if len(kept) == 1 {
			p.Root = kept[0]
			p.Root.Platform = nil
		} else {
			// Several platforms kept: a new index naming only them.
			filtered := ocispec.Index{MediaType: ocispec.MediaTypeImageIndex, Manifests: kept}
			filtered.SchemaVersion = 2
			b, err := json.Marshal(filtered)
			if err != nil {
				return nil, err
			}
			p.Root = ocispec.Descriptor{MediaType: ocispec.MediaTypeImageIndex, Digest: digest.FromBytes(b), Size: int64(len(b))}
			if err := cache.storage.Push(ctx, p.Root, strings.NewReader(string(b))); err != nil && !errors.Is(err, errdef.ErrAlreadyExists) {
				return nil, err
			}
		}
	case opts.Artifacts && bundle.IsManifest(desc.MediaType):
		if err := oras.CopyGraph(ctx, memo, cache.storage, desc, copyOpts); err != nil {
			return nil, err
		}
		p.Root = ocispec.Descriptor{MediaType: desc.MediaType, Digest: desc.Digest, Size: desc.Size}
	case bundle.IsManifest(desc.MediaType):
		plat, err := manifestPlatform(ctx, memo, desc)
		if err != nil {
			return nil, err
		}
		if !matchPlatform(plat, opts.Platforms) {
			is := PlatformString(plat)
			if is == "" {
				is = "of no platform (its config names no os/architecture)"
			}
			return nil, fmt.Errorf("%w: wanted %s, image is %s", ErrPlatform, platformList(opts.Platforms), is)
		}
		if err := oras.CopyGraph(ctx, memo, cache.storage, desc, copyOpts); err != nil {
			return nil, err
		}
		p.Root = ocispec.Descriptor{MediaType: desc.MediaType, Digest: desc.Digest, Size: desc.Size}
		p.Platforms = []string{PlatformString(plat)}
	default:
		return nil, fmt.Errorf("unsupported manifest media type %q", desc.MediaType)
	}
	p.Blobs, err = graph(ctx, cache.storage, p.Root)
	return p, err
}

// successors is content.Successors without a manifest's subject: a
// signature stored as a referrer is carried without the image it signs
// (that is an image of the bundle in its own right), as the bundle lists it.
func successors(ctx context.Context, f content.Fetcher, desc ocispec.Descriptor) ([]ocispec.Descriptor, error) {
	if !bundle.IsManifest(desc.MediaType) {
		return content.Successors(ctx, f, desc)
	}
	m, err := fetchJSON[ocispec.Manifest](ctx, f, desc, "manifest")
	if err != nil {
		return nil, err
	}
	return append([]ocispec.Descriptor{m.Config}, m.Layers...), nil
}

// metadataSuccessors is successors without layers: an image manifest
// leads only to its config, an index to its manifests.
func metadataSuccessors(ctx context.Context, f content.Fetcher, desc ocispec.Descriptor) ([]ocispec.Descriptor, error) {
	if !bundle.IsManifest(desc.MediaType) {
		return content.Successors(ctx, f, desc)
	}
	m, err := fetchJSON[ocispec.Manifest](ctx, f, desc, "manifest")
	if err != nil {
		return nil, err
	}
	return []ocispec.Descriptor{m.Config}, nil
}

// manifestPlatform reads the platform from an image's config.
func manifestPlatform(ctx context.Context, f content.Fetcher, desc ocispec.Descriptor) (ocispec.Platform, error) {
	m, err := fetchJSON[ocispec.Manifest](ctx, f, desc, "manifest")
	if err != nil {
		return ocispec.Platform{}, err
	}
	if m.Config.Size > maxMetadataBytes {
		return ocispec.Platform{}, fmt.Errorf("config %s too large", m.Config.Digest)
	}
	return fetchJSON[ocispec.Platform](ctx, f, m.Config, "config")
}

// fetchJSON fetches desc (size and digest checked by oras) and decodes it.
func fetchJSON[T any](ctx context.Context, f content.Fetcher, desc ocispec.Descriptor, what string) (T, error) {
	var v T
	raw, err := content.FetchAll(ctx, f, desc)
	if err != nil {
		return v, err
	}
	if err := json.Unmarshal(raw, &v); err != nil {
		return v, fmt.Errorf("%s %s: %w", what, desc.Digest, err)
	}
	return v, nil
}

// graph lists root and everything below it, each blob once, sorted.
func graph(ctx context.Context, f content.Fetcher, root ocispec.Descriptor) ([]ocispec.Descriptor, error) {
	seen := map[digest.Digest]ocispec.Descriptor{}
	var walk func(d ocispec.Descriptor) error
	walk = func(d ocispec.Descriptor) error {
		if _, ok := seen[d.Digest]; ok {
			return nil
		}
		seen[d.Digest] = ocispec.Descriptor{MediaType: d.MediaType, Digest: d.Digest, Size: d.Size}
		children, err := successors(ctx, f, d)
		if err != nil {
			return fmt.Errorf("reading %s from cache: %w", d.Digest, err)
		}
		for _, c := range children {
			if err := walk(c); err != nil {
				return err
			}
		}
		return nil
	}
	if err := walk(root); err != nil {
		return nil, err
	}
	out := make([]ocispec.Descriptor, 0, len(seen))
	for _, d := range seen {
		out = append(out, d)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Digest < out[j].Digest })
	return out, nil
}

// matchPlatform: p satisfies one of want, as go-containerregistry decides
// (an unset variant in want matches any).
func matchPlatform(p ocispec.Platform, want []ocispec.Platform) bool {
	for _, w := range want {
		if ggcrPlatform(p).Satisfies(ggcrPlatform(w)) {
			return true
		}
	}
	return false
}

func platformList(ps []ocispec.Platform) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = PlatformString(p)
	}
	return strings.Join(s, ", ")
}
