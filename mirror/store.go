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
	carriers map[digest.Digest]*bundle.Archive
}

var _ content.ReadOnlyStorage = (*ArchiveStore)(nil)

// NewArchiveStore serves the blobs of archives; a blob a differential
// bundle leaves to its base is found when the base is among them.
func NewArchiveStore(archives ...*bundle.Archive) *ArchiveStore {
	s := &ArchiveStore{carriers: map[digest.Digest]*bundle.Archive{}}
	for _, a := range archives {
		for _, b := range a.Manifest().Blobs {
			if !b.Omitted {
				s.carriers[b.Digest] = a
			}
		}
	}
	return s
}

func (s *ArchiveStore) carrier(desc ocispec.Descriptor) *bundle.Archive {
	return s.carriers[desc.Digest]
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
