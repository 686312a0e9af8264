package mirror

import (
	"context"
	"fmt"
	"io"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/errdef"

	"github.com/p7bundle/p7bundle/bundle"
)

// ArchiveStore is a bundle as oras read-only content: every Fetch streams
// the blob through the seek table and fails its last Read unless the
// bytes match the signed table of contents. Open the archive verified.
type ArchiveStore struct {
	carried map[digest.Digest]carriedBlob
}

// carriedBlob is a blob's descriptor and the archive holding it.
type carriedBlob struct {
	a    *bundle.Archive
	desc ocispec.Descriptor
}

var _ content.ReadOnlyStorage = (*ArchiveStore)(nil)

// NewArchiveStore serves the blobs of archives; a blob a differential
// bundle leaves to its base is found when the base is among them.
func NewArchiveStore(archives ...*bundle.Archive) *ArchiveStore {
	s := &ArchiveStore{carried: map[digest.Digest]carriedBlob{}}
	for _, a := range archives {
		for _, b := range a.Manifest().Blobs {
			if !b.Omitted {
				s.carried[b.Digest] = carriedBlob{a, ocispec.Descriptor{MediaType: b.MediaType, Digest: b.Digest, Size: b.Size}}
			}
		}
	}
	return s
}

// Descriptor is a carried blob's media type and size, as the signed table
// of contents gives them.
func (s *ArchiveStore) Descriptor(d digest.Digest) (ocispec.Descriptor, bool) {
	c, ok := s.carried[d]
	return c.desc, ok
}

func (s *ArchiveStore) carrier(desc ocispec.Descriptor) *bundle.Archive {
	return s.carried[desc.Digest].a
}

// Fetch opens a blob; reading it to the end verifies it.
func (s *ArchiveStore) Fetch(_ context.Context, desc ocispec.Descriptor) (io.ReadCloser, error) {
	a := s.carrier(desc)
	if a == nil {
		return nil, fmt.Errorf("%s: %w", desc.Digest, errdef.ErrNotFound)
	}
	return a.Blob(desc.Digest)
}

// Exists reports whether a blob is carried.
func (s *ArchiveStore) Exists(_ context.Context, desc ocispec.Descriptor) (bool, error) {
	return s.carrier(desc) != nil, nil
}
