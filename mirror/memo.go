package mirror

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"sync"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/registry/remote"
)

// memoLimit bounds what metadataMemo keeps: manifests and configs, not layers.
const memoLimit = 1 << 20

// metadataMemo keeps the manifests and configs one image's pull reads, so
// that resolving the tag, checking the platform and copying the graph
// fetch each once: over a WAN every fetch is a round trip.
type metadataMemo struct {
	content.ReadOnlyStorage // the repository
	mu                      sync.Mutex
	kept                    map[digest.Digest][]byte
}

func newMetadataMemo(repo content.ReadOnlyStorage) *metadataMemo {
	return &metadataMemo{ReadOnlyStorage: repo, kept: map[digest.Digest][]byte{}}
}

func (m *metadataMemo) Fetch(ctx context.Context, desc ocispec.Descriptor) (io.ReadCloser, error) {
	if desc.Size > memoLimit {
		return m.ReadOnlyStorage.Fetch(ctx, desc)
	}
	m.mu.Lock()
	b, ok := m.kept[desc.Digest]
	m.mu.Unlock()
	if !ok {
		var err error
		// FetchAll checks size and digest.
		if b, err = content.FetchAll(ctx, m.ReadOnlyStorage, desc); err != nil {
			return nil, err
		}
		m.keep(desc.Digest, b)
	}
	if int64(len(b)) != desc.Size {
		return nil, fmt.Errorf("%s: %d bytes, the descriptor says %d", desc.Digest, len(b), desc.Size)
	}
	return io.NopCloser(bytes.NewReader(b)), nil
}

func (m *metadataMemo) keep(d digest.Digest, b []byte) {
	m.mu.Lock()
	m.kept[d] = b
	m.mu.Unlock()
}

// resolve resolves ref with one GET, where a HEAD and then a GET would be
// two round trips, and keeps the manifest.
func (m *metadataMemo) resolve(ctx context.Context, repo *remote.Repository, ref string) (ocispec.Descriptor, error) {
	desc, rc, err := repo.FetchReference(ctx, ref)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	defer rc.Close()
	if desc.Size > maxMetadataBytes {
		return ocispec.Descriptor{}, fmt.Errorf("manifest %s: %d bytes, more than %d", desc.Digest, desc.Size, maxMetadataBytes)
	}
	b, err := content.ReadAll(rc, desc) // checks size and digest
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	m.keep(desc.Digest, b)
	return desc, nil
}
