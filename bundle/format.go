// Package bundle reads, writes, signs and verifies p7bundle archives: one
// tar stream in independent zstd frames with a seek table, holding a
// signed bundle manifest (the table of contents), a Helm chart and an OCI
// image layout. It knows nothing of registries or Kubernetes; docs/FORMAT.md
// is the specification.
//
// The framed tar+zstd writer and the seek-table reader are written here,
// not taken from oras' oci store or go-containerregistry's layout: those
// need an extracted directory, while a bundle of tens of GB is written once
// in flat memory with byte-reproducible headers, order and frame cuts, and
// read one entry at a time, each checked against the signed manifest.
// The seek table is the zstd seekable format's; it is written here because
// frame cuts and levels follow the layout. Signatures are cosign's
// (sigstore libraries).
package bundle

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

const (
	// MediaType identifies the bundle manifest (entry ManifestEntry).
	MediaType = "application/vnd.p7bundle.manifest.v2+json"
	// FormatVersion is bumped on any change an older reader would misread.
	FormatVersion = 2

	ManifestEntry = "p7bundle.json"
	// TOCSignatureEntry signs ManifestEntry, the table of contents.
	TOCSignatureEntry = ManifestEntry + ".sig"
	ChartDir          = "chart/"
	LayoutDir         = "oci/"
	OCILayoutEntry    = LayoutDir + ocispec.ImageLayoutFile
	IndexEntry        = LayoutDir + ocispec.ImageIndexFile
	BlobDir           = LayoutDir + "blobs/sha256/"

	// RefNameAnnotation carries the original image reference in index.json.
	RefNameAnnotation = ocispec.AnnotationRefName
)

// Limits on untrusted metadata; blobs are streamed and never held in memory.
const (
	maxManifestBytes = 16 << 20 // the bundle manifest (p7bundle.json)
	maxMetadataBytes = 4 << 20  // one OCI manifest, index or index.json
	maxChartBytes    = 64 << 20
)

var (
	// ErrSignature: the signature does not match the archive and key.
	ErrSignature = errors.New("signature verification failed")
	// ErrCorrupt: the archive content contradicts its own manifest or is malformed.
	ErrCorrupt = errors.New("bundle is corrupt")
	// ErrUnsupported: a format version or feature this reader does not implement.
	ErrUnsupported = errors.New("unsupported bundle")
	// ErrBase: a differential bundle's base does not fit it, or is not at the site.
	ErrBase = errors.New("base bundle")
	// ErrKey: a signing or verification key cannot be loaded.
	ErrKey = errors.New("key error")
	// ErrTruncated: the file ends early (an interrupted copy); wraps ErrCorrupt.
	ErrTruncated = fmt.Errorf("%w: truncated", ErrCorrupt)
	// ErrNotFile: the bundle argument is a pipe, device or directory.
	ErrNotFile = errors.New("not a regular file")
	// ErrNotBundle: the file is not a p7bundle archive (or not split) at all.
	ErrNotBundle = errors.New("not a bundle")
)

// Manifest is the first entry of every bundle. Field order is the JSON order.
type Manifest struct {
	MediaType     string `json:"mediaType"`
	FormatVersion int    `json:"formatVersion"`
	Tool          Tool   `json:"tool"`
	// Created is set only from SOURCE_DATE_EPOCH so builds stay reproducible.
	Created        string   `json:"created,omitempty"`
	Chart          Chart    `json:"chart"`
	SourceRegistry string   `json:"sourceRegistry"`
	Platforms      []string `json:"platforms"`
	Secretgen      string   `json:"secretgen"`
	// Probe is the site probe image doctor runs (absent in bundles built
	// before p7bundle carried it).
	Probe  string  `json:"probe,omitempty"`
	Images []Image `json:"images"`
	// Blobs lists every blob of the OCI layout in archive order.
	Blobs []Blob `json:"blobs"`
	// Base names the bundle whose blobs a differential bundle omits.
	Base   *BaseBundle `json:"base,omitempty"`
	Totals Totals      `json:"totals"`
}

type Tool struct {
	Name    string `json:"name"`
	Version string `json:"version"`
}

type Chart struct {
	Name       string `json:"name"`
	Version    string `json:"version"`
	AppVersion string `json:"appVersion"`
	// Path is the tar entry name, under ChartDir.
	Path   string        `json:"path"`
	Digest digest.Digest `json:"digest"`
	Size   int64         `json:"size"`
}

type Image struct {
	// Ref is the original reference, e.g. registry.pseven.io/pseven-app:6.47.
	Ref       string        `json:"ref"`
	Digest    digest.Digest `json:"digest"`
	MediaType string        `json:"mediaType"`
	// Platforms kept from the upstream image ("linux/amd64").
	Platforms []string `json:"platforms"`
	// SourceDigest is the upstream index digest when an index was filtered
	// down to Platforms; empty when Digest is what upstream serves.
	SourceDigest digest.Digest `json:"sourceDigest,omitempty"`
	// Size sums every blob the image needs, shared ones included.
	Size int64 `json:"size"`
	// Blobs are the digests of every blob the image needs, root included,
	// sorted: an installer knows which repositories a blob belongs to before
	// the manifests that say so arrive at the end of the stream.
	Blobs   []digest.Digest `json:"blobs"`
	Sources []string        `json:"sources,omitempty"`
	// Signs marks the vendor's cosign signatures of the image with this
	// digest (tagged sha256-<hex>.sig, or an OCI 1.1 referrer by digest),
	// carried so that `cosign verify` works against the site registry.
	Signs digest.Digest `json:"signs,omitempty"`
}

type Blob struct {
	Digest    digest.Digest `json:"digest"`
	Size      int64         `json:"size"`
	MediaType string        `json:"mediaType"`
	// Omitted blobs are carried by Manifest.Base, not by this archive.
	Omitted bool `json:"omitted,omitempty"`
}

// BaseBundle binds a differential bundle to the bundle it builds on.
type BaseBundle struct {
	Name string `json:"name"`
	// Digest is the base archive's sha256; empty when the base was given
	// as an exported manifest.
	Digest string `json:"digest,omitempty"`
	// ManifestDigest is the sha256 of the base's canonical manifest.
	ManifestDigest string `json:"manifestDigest"`
}

// Digest is the sha256 of the manifest's canonical encoding: what a
// differential bundle names its base by.
func (m *Manifest) Digest() (string, error) {
	b, err := m.Encode()
	if err != nil {
		return "", err
	}
	return digest.FromBytes(b).String(), nil
}

// ContainerImages are the images a release runs: Images without the
// vendor signatures carried with them (Image.Signs).
func (m *Manifest) ContainerImages() []Image {
	out := make([]Image, 0, len(m.Images))
	for _, img := range m.Images {
		if img.Signs == "" {
			out = append(out, img)
		}
	}
	return out
}

// OmittedBytes sums the blobs a differential bundle expects at the site.
func (m *Manifest) OmittedBytes() (n int, bytes int64) {
	for _, b := range m.Blobs {
		if b.Omitted {
			n++
			bytes += b.Size
		}
	}
	return n, bytes
}

type Totals struct {
	Images int `json:"images"`
	Blobs  int `json:"blobs"`
	// BlobBytes counts each blob once: the uncompressed layout size.
	BlobBytes int64 `json:"blobBytes"`
	// ImageBytes sums Image.Size, counting shared blobs per image.
	ImageBytes int64 `json:"imageBytes"`
}

// Normalize sorts images by reference and blobs into archive order (leaves,
// then manifests, then indexes; by digest within a rank), recomputes totals
// and fills the constant fields, so equal content encodes to equal bytes.
func (m *Manifest) Normalize() {
	m.MediaType = MediaType
	m.FormatVersion = FormatVersion
	sort.Slice(m.Images, func(i, j int) bool { return m.Images[i].Ref < m.Images[j].Ref })
	sort.SliceStable(m.Blobs, func(i, j int) bool {
		ri, rj := blobRank(m.Blobs[i].MediaType), blobRank(m.Blobs[j].MediaType)
		if ri != rj {
			return ri < rj
		}
		return m.Blobs[i].Digest < m.Blobs[j].Digest
	})
	m.Totals = Totals{Images: len(m.Images), Blobs: len(m.Blobs)}
	for _, b := range m.Blobs {
		m.Totals.BlobBytes += b.Size
	}
	for _, img := range m.Images {
		m.Totals.ImageBytes += img.Size
	}
}

// blobRank orders blobs so children precede the manifests that name them.
func blobRank(mediaType string) int {
	switch {
	case IsIndex(mediaType):
		return 2
	case IsManifest(mediaType):
		return 1
	default:
		return 0
	}
}

// IsManifest reports an image manifest media type (OCI or Docker v2).
func IsManifest(mt string) bool { return types.MediaType(mt).IsImage() }

// IsIndex reports an index media type (OCI or Docker manifest list).
func IsIndex(mt string) bool { return types.MediaType(mt).IsIndex() }

// Encode returns the canonical JSON of the manifest.
func (m *Manifest) Encode() ([]byte, error) {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// DecodeManifest parses and validates a bundle manifest.
func DecodeManifest(data []byte) (*Manifest, error) {
	var m Manifest
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrCorrupt, ManifestEntry, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: %s: trailing data", ErrCorrupt, ManifestEntry)
	}
	if err := m.Validate(); err != nil {
		return nil, err
	}
	return &m, nil
}

// Validate checks the manifest's own consistency; it does not look at blobs.
func (m *Manifest) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s: %s", ErrCorrupt, ManifestEntry, fmt.Sprintf(format, args...))
	}
	if m.FormatVersion != FormatVersion {
		return fmt.Errorf("%w: format version %d (this p7bundle reads version %d: rebuild the bundle with it)", ErrUnsupported, m.FormatVersion, FormatVersion)
	}
	if m.MediaType != MediaType {
		return fmt.Errorf("%w: %s: mediaType %q, want %q", ErrUnsupported, ManifestEntry, m.MediaType, MediaType)
	}
	omitted, _ := m.OmittedBytes()
	if m.Base != nil {
		if _, err := digest.Parse(m.Base.ManifestDigest); err != nil || m.Base.Name == "" {
			return bad("base %q: manifest digest %q", m.Base.Name, m.Base.ManifestDigest)
		}
		if m.Base.Digest != "" {
			if _, err := digest.Parse(m.Base.Digest); err != nil {
				return bad("base %q: digest %q", m.Base.Name, m.Base.Digest)
			}
		}
	} else if omitted > 0 {
		return bad("%d blobs omitted but no base named", omitted)
	}
	if !strings.HasPrefix(m.Chart.Path, ChartDir) || !validChartFileName(strings.TrimPrefix(m.Chart.Path, ChartDir)) {
		return bad("chart path %q", m.Chart.Path)
	}
	if err := m.Chart.Digest.Validate(); err != nil {
		return bad("chart digest %q: %v", m.Chart.Digest, err)
	}
	if m.Chart.Size < 0 || m.Chart.Size > maxChartBytes {
		return bad("chart size %d", m.Chart.Size)
	}
	seen := make(map[digest.Digest]Blob, len(m.Blobs))
	for i, b := range m.Blobs {
		if err := b.Digest.Validate(); err != nil || b.Digest.Algorithm() != digest.SHA256 {
			return bad("blob %d: digest %q is not sha256", i, b.Digest)
		}
		if b.Size < 0 {
			return bad("blob %s: negative size", b.Digest)
		}
		if (IsManifest(b.MediaType) || IsIndex(b.MediaType)) && b.Size > maxMetadataBytes {
			return bad("blob %s: manifest of %d bytes exceeds %d", b.Digest, b.Size, maxMetadataBytes)
		}
		if _, dup := seen[b.Digest]; dup {
			return bad("blob %s listed twice", b.Digest)
		}
		if i > 0 {
			prev := m.Blobs[i-1]
			pr, r := blobRank(prev.MediaType), blobRank(b.MediaType)
			if pr > r || (pr == r && prev.Digest > b.Digest) {
				return bad("blobs are not in archive order at %s", b.Digest)
			}
		}
		seen[b.Digest] = b
	}
	refs := make(map[string]bool, len(m.Images))
	for _, img := range m.Images {
		if img.Ref == "" || refs[img.Ref] {
			return bad("image reference %q empty or duplicated", img.Ref)
		}
		refs[img.Ref] = true
		b, ok := seen[img.Digest]
		if !ok {
			return bad("image %s: digest %s is not among the blobs", img.Ref, img.Digest)
		}
		if b.MediaType != img.MediaType {
			return bad("image %s: media type %q, blob says %q", img.Ref, img.MediaType, b.MediaType)
		}
		var size int64
		hasRoot := false
		for i, d := range img.Blobs {
			bb, ok := seen[d]
			if !ok {
				return bad("image %s: blob %s is not among the blobs", img.Ref, d)
			}
			if i > 0 && img.Blobs[i-1] >= d {
				return bad("image %s: blobs not sorted or duplicated at %s", img.Ref, d)
			}
			size += bb.Size
			hasRoot = hasRoot || d == img.Digest
		}
		if !hasRoot || size != img.Size {
			return bad("image %s: blob list does not add up (root listed: %v, %d bytes, size says %d)", img.Ref, hasRoot, size, img.Size)
		}
	}
	return nil
}

func validChartFileName(s string) bool {
	return s != "" && !strings.ContainsAny(s, "/\\") && s != "." && s != ".." && strings.HasSuffix(s, ".tgz")
}

// BlobPath is the tar entry name of a blob.
func BlobPath(d digest.Digest) string {
	return BlobDir + d.Encoded()
}
