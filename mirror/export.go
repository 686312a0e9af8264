package mirror

import (
	"context"
	"encoding/json"
	"fmt"
	"io"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/content/oci"

	"github.com/p7bundle/p7bundle/bundle"
)

// rootDescriptor is an image's manifest or index as a descriptor.
func (s *ArchiveStore) rootDescriptor(img bundle.Image) (ocispec.Descriptor, error) {
	desc, ok := s.Descriptor(img.Digest)
	if !ok {
		return ocispec.Descriptor{}, fmt.Errorf("image %s: manifest %s is not carried (a differential bundle's base?)", img.Ref, img.Digest)
	}
	return desc, nil
}

// ExportOCILayout copies images into the OCI image layout at dir (created
// by oras's oci.Store), each tagged with its original reference, as a
// graph copy from the bundle.
func (s *ArchiveStore) ExportOCILayout(ctx context.Context, dir string, images []bundle.Image) error {
	dst, err := oci.New(dir)
	if err != nil {
		return err
	}
	dst.AutoSaveIndex = false
	for _, img := range images {
		desc, err := s.rootDescriptor(img)
		if err != nil {
			return err
		}
		if err := oras.CopyGraph(ctx, s, dst, desc, oras.CopyGraphOptions{Concurrency: 4}); err != nil {
			return fmt.Errorf("image %s: %w", img.Ref, err)
		}
		if err := dst.Tag(ctx, desc, img.Ref); err != nil {
			return fmt.Errorf("image %s: %w", img.Ref, err)
		}
	}
	return dst.SaveIndex()
}

// ExportDockerArchive writes images as one `docker load` tarball (ggcr's
// tarball), each under its original reference. An index contributes its
// first manifest: a bundle carries only the platforms it was built for.
func (s *ArchiveStore) ExportDockerArchive(ctx context.Context, w io.Writer, images []bundle.Image) error {
	refs := map[name.Reference]v1.Image{}
	for _, img := range images {
		desc, err := s.rootDescriptor(img)
		if err != nil {
			return err
		}
		if bundle.IsIndex(desc.MediaType) {
			data, err := content.FetchAll(ctx, s, desc)
			if err != nil {
				return fmt.Errorf("image %s: %w", img.Ref, err)
			}
			var idx ocispec.Index
			if err := json.Unmarshal(data, &idx); err != nil || len(idx.Manifests) == 0 {
				return fmt.Errorf("image %s: index %s has no manifest", img.Ref, desc.Digest)
			}
			desc = idx.Manifests[0]
		}
		raw, err := content.FetchAll(ctx, s, desc)
		if err != nil {
			return fmt.Errorf("image %s: %w", img.Ref, err)
		}
		var m ocispec.Manifest
		if err := json.Unmarshal(raw, &m); err != nil {
			return fmt.Errorf("image %s: manifest %s: %w", img.Ref, desc.Digest, err)
		}
		cfg, err := content.FetchAll(ctx, s, m.Config)
		if err != nil {
			return fmt.Errorf("image %s: config: %w", img.Ref, err)
		}
		v1img, err := partial.CompressedToImage(&archiveImage{s: s, raw: raw, mediaType: types.MediaType(desc.MediaType), config: cfg, m: m})
		if err != nil {
			return fmt.Errorf("image %s: %w", img.Ref, err)
		}
		ref, err := name.ParseReference(img.Ref)
		if err != nil {
			return fmt.Errorf("image %s: %w", img.Ref, err)
		}
		refs[ref] = v1img
	}
	return tarball.MultiRefWrite(refs, w)
}

// archiveImage is an image of the bundle as go-containerregistry sees one.
type archiveImage struct {
	s         *ArchiveStore
	raw       []byte
	mediaType types.MediaType
	config    []byte
	m         ocispec.Manifest
}

func (i *archiveImage) RawConfigFile() ([]byte, error)      { return i.config, nil }
func (i *archiveImage) MediaType() (types.MediaType, error) { return i.mediaType, nil }
func (i *archiveImage) RawManifest() ([]byte, error)        { return i.raw, nil }

func (i *archiveImage) LayerByDigest(h v1.Hash) (partial.CompressedLayer, error) {
	for _, l := range append([]ocispec.Descriptor{i.m.Config}, i.m.Layers...) {
		if l.Digest.String() == h.String() {
			return &archiveLayer{s: i.s, desc: l}, nil
		}
	}
	return nil, fmt.Errorf("layer %s is not in manifest", h)
}

type archiveLayer struct {
	s    *ArchiveStore
	desc ocispec.Descriptor
}

func (l *archiveLayer) Digest() (v1.Hash, error) { return v1.NewHash(l.desc.Digest.String()) }
func (l *archiveLayer) Size() (int64, error)     { return l.desc.Size, nil }
func (l *archiveLayer) MediaType() (types.MediaType, error) {
	return types.MediaType(l.desc.MediaType), nil
}
func (l *archiveLayer) Compressed() (io.ReadCloser, error) {
	return l.s.Fetch(context.Background(), l.desc)
}
