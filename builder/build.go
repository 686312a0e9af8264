// Package builder is the build phase: one action, Build, composes chart
// discovery (manifests), image pulls (mirror) and the bundle writer (bundle)
// into `p7bundle build`; Approve (approve.go) is the security team's review
// of what Build wrote. Neither talks to a cluster or a site registry.
// The progress line (progress.go) is its own: one line per image, and on a
// terminal a live total redrawn at most five times a second, with no
// dependency that would pull in a terminal UI library.
package builder

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"sync/atomic"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/errgroup"

	"github.com/p7bundle/p7bundle/bundle"
	"github.com/p7bundle/p7bundle/internal/atomicfile"
	"github.com/p7bundle/p7bundle/internal/humanize"
	"github.com/p7bundle/p7bundle/internal/imageref"
	"github.com/p7bundle/p7bundle/internal/probeimage"
	"github.com/p7bundle/p7bundle/manifests"
	"github.com/p7bundle/p7bundle/mirror"
)

// DefaultJobs is how many images Build pulls at once when Jobs is zero.
const DefaultJobs = 4

// metadataJobs × Jobs manifests and signature lookups run at once.
const metadataJobs = 4

// Build is `p7bundle build`: it pulls every image the chart names and
// writes one signed, reproducible bundle. Zero fields mean the defaults.
type Build struct {
	Chart  string
	Output string // default "<chart>-<version>.tar.zst" in the working directory
	// Force replaces an existing bundle at Output; without it Run refuses
	// before pulling anything.
	Force bool
	// KeyPath is the cosign private key; KeyPassword decrypts it.
	KeyPath     string
	KeyPassword []byte
	// Signer overrides KeyPath (tests, KMS).
	Signer bundle.Signer

	SourceRegistry string // default registry.pseven.io
	Registry       mirror.RegistryOptions
	Platforms      []string // default linux/amd64
	Jobs           int      // images pulled at once (manifests 4× as many); default DefaultJobs
	CacheDir       string   // empty: a temporary cache removed afterwards
	Images         []string
	Exclude        []string
	// Base, a bundle or an exported manifest, makes a differential bundle:
	// blobs it lists are omitted.
	Base string

	ToolVersion string
	// Created, when non-zero (SOURCE_DATE_EPOCH), stamps the manifest and entries.
	Created time.Time
	// Level is the zstd level; zero is zstd.SpeedDefault.
	Level zstd.EncoderLevel
	// SplitSize, when > 0, writes the bundle in parts of at most this many bytes.
	SplitSize int64
	// VerifyImagesKey (a public key file or KMS URI) makes every image need
	// a cosign signature by that key; signatures found are carried either way.
	VerifyImagesKey string

	// Log receives human-readable progress (stderr); nil discards it.
	Log io.Writer
	// TTY draws a live progress line instead of one line per event.
	TTY bool
}

// Result summarizes a finished build.
type Result struct {
	*bundle.WriteResult
	Manifest *bundle.Manifest
	Retries  int64
	Elapsed  time.Duration
}

// Run builds, signs and writes one bundle.
func (b *Build) Run(ctx context.Context) (*Result, error) {
	opts := *b
	start := time.Now()
	log := opts.Log
	if log == nil {
		log = io.Discard
	}
	if opts.SourceRegistry == "" {
		opts.SourceRegistry = manifests.DefaultSourceRegistry
	}
	if opts.Jobs <= 0 {
		opts.Jobs = DefaultJobs
	}
	// A named output is checked before the key prompt and any work.
	if opts.Output != "" {
		if err := checkOutput(opts.Output, opts.Force); err != nil {
			return nil, err
		}
	}
	// Key first: a wrong password must fail before any request reaches the
	// registry (a manifest GET counts against pull rate limits).
	signer := opts.Signer
	if signer == nil {
		s, err := bundle.LoadSigner(ctx, opts.KeyPath, opts.KeyPassword)
		if err != nil {
			return nil, err
		}
		signer = s
	}
	var imagesKey bundle.Verifier
	if opts.VerifyImagesKey != "" {
		v, err := bundle.LoadVerifier(ctx, opts.VerifyImagesKey)
		if err != nil {
			return nil, err
		}
		imagesKey = v
	}
	platforms, err := parsePlatforms(opts.Platforms)
	if err != nil {
		return nil, err
	}
	// The site probe is built here, from binaries embedded in p7bundle.
	var platformNames []string
	for _, p := range platforms {
		platformNames = append(platformNames, mirror.PlatformString(p))
	}
	probe, err := probeimage.Build(platformNames)
	if err != nil {
		return nil, err
	}
	ch, err := manifests.LoadChart(opts.Chart)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(log, "chart %s version %s appVersion %s (%s)\n", ch.Name, ch.Version, ch.AppVersion, ch.Digest)
	images, err := manifests.DiscoverImages(ch, manifests.DiscoverOptions{
		SourceRegistry: opts.SourceRegistry, Extra: opts.Images, Exclude: opts.Exclude,
	})
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(log, "%d images:\n", len(images))
	refs := make([]string, len(images))
	sources := map[string][]string{}
	for i, img := range images {
		refs[i] = img.Ref
		sources[img.Ref] = img.Sources
		fmt.Fprintf(log, "  %s\n", img.Ref)
		for _, s := range img.Sources {
			fmt.Fprintf(log, "      found in %s\n", s)
		}
	}

	output := opts.Output
	if output == "" {
		output = ch.Name + "-" + ch.Version + ".tar.zst"
	}
	if err := checkOutput(output, opts.Force); err != nil {
		return nil, err
	}

	cacheDir := opts.CacheDir
	if cacheDir == "" {
		tmp, err := os.MkdirTemp(filepath.Dir(output), ".p7bundle-cache-")
		if err != nil {
			return nil, fmt.Errorf("temporary cache next to %s: %w", output, err)
		}
		defer os.RemoveAll(tmp)
		cacheDir = tmp
	}
	cache, err := mirror.OpenCache(cacheDir)
	if err != nil {
		return nil, err
	}
	if opts.Registry.Retries == nil {
		opts.Registry.Retries = new(atomic.Int64)
	}
	client, err := mirror.NewClient(opts.Registry)
	if err != nil {
		return nil, err
	}
	progress := newProgress(log, opts.TTY, len(refs))
	// Manifests and configs first: the bundle manifest, which leads the
	// archive, needs every digest. Layers follow while the archive is written.
	// Manifests are small: over a WAN each costs a round trip, not bandwidth.
	metaJobs := metadataJobs * opts.Jobs
	pulled, err := client.Pull(ctx, cache, refs, mirror.PullOptions{Platforms: platforms, Jobs: metaJobs, Progress: progress, MetadataOnly: true})
	if err != nil {
		return nil, err
	}
	signed, err := imageSignatures(ctx, client, pulled, imagesKey, metaJobs)
	if err != nil {
		return nil, err
	}
	if len(signed) > 0 {
		sigRefs := make([]string, 0, len(signed))
		for ref := range signed {
			sigRefs = append(sigRefs, ref)
		}
		slices.Sort(sigRefs)
		sigs, err := client.Pull(ctx, cache, sigRefs, mirror.PullOptions{Jobs: metaJobs, MetadataOnly: true, Artifacts: true})
		if err != nil {
			return nil, err
		}
		pulled = append(pulled, sigs...)
		fmt.Fprintf(log, "carrying the cosign signatures of %d images\n", len(sigs))
	}
	probeRef := ""
	if probe == nil {
		fmt.Fprintf(log, "no site probe for %v: p7bundle doctor will skip its in-cluster checks\n", platformNames)
	} else {
		probeRef = probeimage.Ref(opts.ToolVersion)
		p := &mirror.Pulled{Ref: probeRef, Root: probe.Root, Platforms: probe.Platforms}
		for _, b := range probe.Blobs {
			if err := cache.Put(ctx, b.Descriptor, b.Data); err != nil {
				return nil, fmt.Errorf("site probe image: cache %s: %w", cache.Dir, err)
			}
			p.Blobs = append(p.Blobs, b.Descriptor)
		}
		pulled = append(pulled, p)
		fmt.Fprintf(log, "adding the site probe %s (%s) for p7bundle doctor\n", probeRef, probe.Root.Digest)
	}
	progress.pullDone()

	m := &bundle.Manifest{
		Tool:           bundle.Tool{Name: "p7bundle", Version: opts.ToolVersion},
		SourceRegistry: opts.SourceRegistry,
		Secretgen:      manifests.SecretgenRef(opts.SourceRegistry, ch.AppVersion),
		Probe:          probeRef,
		Chart: bundle.Chart{
			Name: ch.Name, Version: ch.Version, AppVersion: ch.AppVersion,
			Path: bundle.ChartDir + ch.FileName, Digest: digest.Digest(ch.Digest), Size: int64(len(ch.Archive)),
		},
	}
	m.Platforms = platformNames
	if !opts.Created.IsZero() {
		m.Created = opts.Created.UTC().Format(time.RFC3339)
	}
	blobs := map[string]bundle.Blob{}
	for _, p := range pulled {
		img := bundle.Image{
			Ref: p.Ref, Digest: digest.Digest(p.Root.Digest.String()), MediaType: p.Root.MediaType,
			Platforms: p.Platforms, SourceDigest: digest.Digest(p.SourceDigest), Sources: sources[p.Ref],
			Signs: signed[p.Ref],
		}
		for _, b := range p.Blobs {
			img.Size += b.Size
			img.Blobs = append(img.Blobs, digest.Digest(b.Digest.String()))
			blobs[b.Digest.String()] = bundle.Blob{Digest: digest.Digest(b.Digest.String()), Size: b.Size, MediaType: blobMediaType(b)}
		}
		m.Images = append(m.Images, img)
	}
	for _, b := range blobs {
		m.Blobs = append(m.Blobs, b)
	}
	sort.Slice(m.Blobs, func(i, j int) bool { return m.Blobs[i].Digest < m.Blobs[j].Digest })

	m.Normalize()
	if opts.Base != "" {
		base, err := bundle.LoadManifest(opts.Base)
		if err != nil {
			return nil, err
		}
		if err := bundle.BaseFor(m, base, opts.Base); err != nil {
			return nil, err
		}
		n, size := m.OmittedBytes()
		fmt.Fprintf(log, "differential against %s (%s %s): %d of %d blobs (%s) left to the base\n", opts.Base, base.Chart.Name, base.Chart.Version, n, len(m.Blobs), humanize.Bytes(size))
	}
	order := make([]ocispec.Descriptor, 0, len(m.Blobs))
	for _, b := range m.Blobs {
		if b.Omitted {
			continue
		}
		order = append(order, ocispec.Descriptor{MediaType: b.MediaType, Digest: b.Digest, Size: b.Size})
	}
	prefetch := client.Prefetch(ctx, cache, order, blobSources(pulled), mirror.PrefetchOptions{
		Jobs: opts.Jobs, Ahead: 2 * opts.Jobs, Progress: progress,
		// A temporary cache is thrown away: blobs need not go through it.
		Stream: opts.CacheDir == "",
	})
	defer prefetch.Close()
	res, err := bundle.Write(ctx, output, bundle.WriteOptions{
		Manifest:  m,
		Chart:     ch.Archive,
		Blobs:     prefetch.Open,
		Fresh:     prefetch.Fresh,
		Signer:    signer,
		ModTime:   opts.Created,
		Level:     opts.Level,
		SplitSize: opts.SplitSize,
		Progress:  progress.written(m),
		Provenance: &bundle.ProvenanceParameters{
			Chart:          filepath.Base(opts.Chart),
			SourceRegistry: opts.SourceRegistry,
			Mirrors:        mirrorPairs(opts.Registry.Mirrors),
			Platforms:      m.Platforms,
			Images:         opts.Images,
			Exclude:        opts.Exclude,
			Base:           baseName(opts.Base),
			SplitSize:      opts.SplitSize,
		},
	})
	if err != nil {
		return nil, err
	}
	progress.writeDone()
	out := &Result{WriteResult: res, Manifest: m, Retries: opts.Registry.Retries.Load(), Elapsed: time.Since(start)}
	fmt.Fprintf(log, "wrote %s: %d images, %d blobs, %s uncompressed -> %s (%.1f%%), sha256 %s, %d retries, %s\n",
		res.Path, m.Totals.Images, m.Totals.Blobs, humanize.Bytes(res.UncompressedSize), humanize.Bytes(res.Size),
		100*float64(res.Size)/float64(max(res.UncompressedSize, 1)), res.Digest, out.Retries, out.Elapsed.Round(time.Millisecond))
	if len(res.Parts) > 0 {
		fmt.Fprintf(log, "split into %d parts listed in %s (cat them in order, or p7bundle join, for %s)\n", len(res.Parts), res.PartsPath, res.Path)
	}
	return out, nil
}

// blobSources names, for each blob, an image that has it: where to fetch it.
func blobSources(pulled []*mirror.Pulled) map[string]string {
	src := map[string]string{}
	for _, p := range pulled {
		for _, b := range p.Blobs {
			if _, ok := src[b.Digest.String()]; !ok {
				src[b.Digest.String()] = p.Ref
			}
		}
	}
	return src
}

func parsePlatforms(in []string) ([]ocispec.Platform, error) {
	if len(in) == 0 {
		in = []string{"linux/amd64"}
	}
	var out []ocispec.Platform
	for _, s := range in {
		p, err := mirror.ParsePlatform(s)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}

// blobMediaType keeps the descriptor's type; layers of unknown type stay layers.
func blobMediaType(d ocispec.Descriptor) string {
	if d.MediaType == "" {
		return "application/octet-stream"
	}
	return d.MediaType
}

// ErrOutput: the bundle cannot be written where it was asked to go.
var ErrOutput = errors.New("cannot write output")

// checkOutput fails early, before any pull, when the output cannot be
// written: a directory, a bundle already there (unless force), a
// directory that does not take files.
func checkOutput(output string, force bool) error {
	for _, p := range []string{output, bundle.PartsPath(output)} {
		if err := atomicfile.Check(p, force); errors.Is(err, os.ErrExist) {
			return fmt.Errorf("%w: %w (--force replaces it)", ErrOutput, err)
		} else if err != nil {
			return fmt.Errorf("%w: %w", ErrOutput, err)
		}
	}
	return nil
}

// mirrorPairs lists --mirror as given, sorted: HOST=ENDPOINT.
func mirrorPairs(mirrors map[string]string) []string {
	var pairs []string
	for host, endpoint := range mirrors {
		pairs = append(pairs, host+"="+endpoint)
	}
	slices.Sort(pairs)
	return pairs
}

func baseName(path string) string {
	if path == "" {
		return ""
	}
	return filepath.Base(path)
}

// imageSignatures finds the cosign signatures of every pulled image (the
// sha256-<hex>.sig tag beside it, and OCI 1.1 referrers) and returns the
// signature references to carry, each mapped to the digest it signs. With
// key, every image must have a signature by key: over the digest bundled,
// or over the index it was filtered from (which names that digest).
func imageSignatures(ctx context.Context, client *mirror.Client, pulled []*mirror.Pulled, key bundle.Verifier, jobs int) (map[string]digest.Digest, error) {
	found := make([][]string, len(pulled))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(jobs)
	for i, p := range pulled {
		g.Go(func() error {
			name, _, _ := imageref.Split(p.Ref)
			sigs, err := signatureRefs(gctx, client, name, p.Root.Digest)
			if err != nil {
				return fmt.Errorf("image %s: %w", p.Ref, err)
			}
			found[i] = sigs
			if key == nil {
				return nil
			}
			verr := verifyAny(gctx, client, sigs, p.Root.Digest, key)
			if verr != nil && p.SourceDigest != "" {
				index := digest.Digest(p.SourceDigest)
				indexSigs, err := signatureRefs(gctx, client, name, index)
				if err != nil {
					return fmt.Errorf("image %s: %w", p.Ref, err)
				}
				if verifyAny(gctx, client, indexSigs, index, key) == nil {
					verr = nil
				}
			}
			if verr != nil {
				return fmt.Errorf("%w: image %s (%s) is not signed by the --verify-images-key key: %v", bundle.ErrSignature, p.Ref, p.Root.Digest, verr)
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	signed := map[string]digest.Digest{}
	for i, refs := range found {
		for _, ref := range refs {
			signed[ref] = pulled[i].Root.Digest
		}
	}
	return signed, nil
}

func signatureRefs(ctx context.Context, client *mirror.Client, name string, d digest.Digest) ([]string, error) {
	// Both at once: over a WAN each lookup is a round trip or two.
	var refs []string
	var rerr error
	done := make(chan struct{})
	go func() {
		defer close(done)
		refs, rerr = client.SignatureReferrers(ctx, name, d)
	}()
	tagged, err := client.SignatureRef(ctx, name, d)
	<-done
	if err != nil {
		return nil, err
	}
	if rerr != nil {
		return nil, rerr
	}
	if tagged != "" {
		refs = append([]string{tagged}, refs...)
	}
	return refs, nil
}

// verifyAny passes when one of the signature manifests holds a signature
// of d by key.
func verifyAny(ctx context.Context, client *mirror.Client, sigRefs []string, d digest.Digest, key bundle.Verifier) error {
	err := errors.New("no cosign signature")
	for _, ref := range sigRefs {
		if err = client.VerifyCosignSignatures(ctx, ref, d, key); err == nil {
			return nil
		}
	}
	return err
}
