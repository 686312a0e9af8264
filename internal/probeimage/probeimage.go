// Package probeimage turns the site probe binaries embedded at `make build`
// into the OCI image every bundle carries as p7bundle-probe:<tool version>.
// The image is built from the binaries alone (no timestamps, uncompressed
// layer), so the same p7bundle always makes the same digest.
package probeimage

import (
	"archive/tar"
	"bytes"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

//go:embed embedded
var embedded embed.FS

// Host and Repository name the probe in a bundle manifest: not an upstream
// registry (nothing pulls from it); the path after it lands under the site
// prefix like every image.
const (
	Host       = "p7bundle.local"
	Repository = "p7bundle-probe"
	binaryPath = "p7bundle-probe"
)

// ErrMissing: this p7bundle was built without `make build`.
var ErrMissing = errors.New("site probe not embedded")

var badTag = regexp.MustCompile(`[^A-Za-z0-9_.-]`)

// Ref is the probe's reference for a tool version.
func Ref(toolVersion string) string {
	tag := badTag.ReplaceAllString(toolVersion, "-")
	if tag == "" || tag[0] == '.' || tag[0] == '-' {
		tag = "dev" + tag
	}
	if len(tag) > 128 {
		tag = tag[:128]
	}
	return Host + "/" + Repository + ":" + tag
}

// IsProbe says whether ref names a probe image.
func IsProbe(ref string) bool { return strings.HasPrefix(ref, Host+"/"+Repository+":") }

// Blob is one blob of the image.
type Blob struct {
	Descriptor ocispec.Descriptor
	Data       []byte
}

// Image is the probe image: Root is an image manifest for one platform,
// an index for several.
type Image struct {
	Root      ocispec.Descriptor
	Platforms []string
	Blobs     []Blob // Root included, sorted by digest as in a bundle manifest
}

// Architectures is what the probe is built for (the Makefile's probe target).
var Architectures = []string{"amd64", "arm64"}

// Build makes the probe image for those of platforms ("linux/amd64") it
// is built for; nil when there is none (a windows-only bundle).
func Build(platforms []string) (*Image, error) {
	img := &Image{}
	var manifests []ocispec.Descriptor
	for _, p := range platforms {
		os, arch, _ := strings.Cut(p, "/")
		if os != "linux" || !slices.Contains(Architectures, arch) {
			continue
		}
		bin, err := embedded.ReadFile("embedded/" + binaryPath + "-linux-" + arch)
		if err != nil {
			return nil, fmt.Errorf("%w for linux/%s: build p7bundle with `make build`", ErrMissing, arch)
		}
		m, blobs, err := platformImage(arch, bin)
		if err != nil {
			return nil, err
		}
		img.Blobs = append(img.Blobs, blobs...)
		m.Platform = &ocispec.Platform{OS: "linux", Architecture: arch}
		manifests = append(manifests, m)
		img.Platforms = append(img.Platforms, p)
	}
	if len(manifests) == 0 {
		return nil, nil
	}
	defer func() {
		slices.SortFunc(img.Blobs, func(a, b Blob) int { return strings.Compare(string(a.Descriptor.Digest), string(b.Descriptor.Digest)) })
	}()
	if len(manifests) == 1 {
		img.Root = *manifestWithoutPlatform(manifests[0])
		return img, nil
	}
	index, err := blob(ocispec.MediaTypeImageIndex, ocispec.Index{
		Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex, Manifests: manifests,
	})
	if err != nil {
		return nil, err
	}
	img.Root = index.Descriptor
	img.Blobs = append(img.Blobs, index)
	return img, nil
}

func manifestWithoutPlatform(d ocispec.Descriptor) *ocispec.Descriptor {
	d.Platform = nil
	return &d
}

// platformImage returns the manifest descriptor and the blobs of one
// platform's image: layer, config, manifest.
func platformImage(arch string, bin []byte) (ocispec.Descriptor, []Blob, error) {
	var layer bytes.Buffer
	tw := tar.NewWriter(&layer)
	hdr := &tar.Header{Name: binaryPath, Mode: 0o755, Size: int64(len(bin)), Typeflag: tar.TypeReg,
		ModTime: time.Unix(0, 0), Format: tar.FormatPAX}
	if err := tw.WriteHeader(hdr); err != nil {
		return ocispec.Descriptor{}, nil, err
	}
	tw.Write(bin)
	if err := tw.Close(); err != nil {
		return ocispec.Descriptor{}, nil, err
	}
	layerBlob := Blob{Data: layer.Bytes(), Descriptor: ocispec.Descriptor{
		MediaType: ocispec.MediaTypeImageLayer, Digest: digest.FromBytes(layer.Bytes()), Size: int64(layer.Len()),
	}}
	config, err := blob(ocispec.MediaTypeImageConfig, ocispec.Image{
		Platform: ocispec.Platform{OS: "linux", Architecture: arch},
		Config: ocispec.ImageConfig{
			User: "11111:11111", Entrypoint: []string{"/" + binaryPath}, Cmd: []string{"idle"}, WorkingDir: "/",
			Labels: map[string]string{"org.opencontainers.image.title": "p7bundle site probe"},
		},
		RootFS: ocispec.RootFS{Type: "layers", DiffIDs: []digest.Digest{layerBlob.Descriptor.Digest}},
	})
	if err != nil {
		return ocispec.Descriptor{}, nil, err
	}
	manifest, err := blob(ocispec.MediaTypeImageManifest, ocispec.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest,
		Config: config.Descriptor, Layers: []ocispec.Descriptor{layerBlob.Descriptor},
	})
	if err != nil {
		return ocispec.Descriptor{}, nil, err
	}
	return manifest.Descriptor, []Blob{layerBlob, config, manifest}, nil
}

func blob(mediaType string, v any) (Blob, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return Blob{}, err
	}
	return Blob{Data: data, Descriptor: ocispec.Descriptor{MediaType: mediaType, Digest: digest.FromBytes(data), Size: int64(len(data))}}, nil
}
