package mirror

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/sigstore/sigstore/pkg/signature/payload"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/registry"
	"oras.land/oras-go/v2/registry/remote"

	"github.com/p7bundle/p7bundle/bundle"
)

const (
	// cosignSignatureAnnotation carries a layer's signature over its payload.
	cosignSignatureAnnotation = "dev.cosignproject.cosign/signature"
	maxSignaturePayload       = 1 << 20
)

// ErrImageSignature: an image has no signature the given key verifies.
var ErrImageSignature = errors.New("image signature")

// CosignSignatureTag is the tag cosign stores an image's signatures under,
// in the image's own repository: sha256-<hex>.sig.
func CosignSignatureTag(d digest.Digest) string {
	return d.Algorithm().String() + "-" + d.Encoded() + ".sig"
}

// SignatureRef is the reference of the cosign signatures of image name@d,
// "" when the registry has none.
func (c *Client) SignatureRef(ctx context.Context, name string, d digest.Digest) (string, error) {
	repo, err := c.repositoryOf(name)
	if err != nil {
		return "", err
	}
	tag := CosignSignatureTag(d)
	if _, err := resolve(ctx, repo, tag); err != nil {
		if err = Classify(err); errors.Is(err, ErrNotFound) {
			return "", nil
		}
		return "", fmt.Errorf("signatures of %s@%s: %w", name, d, err)
	}
	return name + ":" + tag, nil
}

// CosignSignatureArtifactType is the artifact type of a cosign signature
// stored as an OCI 1.1 referrer (cosign sign --registry-referrers-mode=oci-1-1).
const CosignSignatureArtifactType = "application/vnd.dev.cosign.artifact.sig.v1+json"

// SignatureReferrers lists, as name@digest, the cosign signatures of image
// name@d stored as OCI 1.1 referrers: through the registry's referrers API,
// or the sha256-<hex> tag index where it has none (oras decides).
func (c *Client) SignatureReferrers(ctx context.Context, name string, d digest.Digest) ([]string, error) {
	repo, err := c.repositoryOf(name)
	if err != nil {
		return nil, err
	}
	var refs []string
	err = repo.Referrers(ctx, ocispec.Descriptor{Digest: d}, CosignSignatureArtifactType, func(referrers []ocispec.Descriptor) error {
		for _, r := range referrers {
			refs = append(refs, name+"@"+r.Digest.String())
		}
		return nil
	})
	if err != nil {
		if err = Classify(err); errors.Is(err, ErrNotFound) {
			return nil, nil
		}
		return nil, fmt.Errorf("referrers of %s@%s: %w", name, d, err)
	}
	slices.Sort(refs)
	return refs, nil
}

// repositoryOf is the repository of image name (host/path, no tag).
func (c *Client) repositoryOf(name string) (*remote.Repository, error) {
	ref, err := registry.ParseReference(name)
	if err != nil {
		return nil, fmt.Errorf("invalid image reference %q: %w", name, err)
	}
	return c.Repository(ref)
}

// VerifyCosignSignatures checks that the signature manifest at sigRef holds
// at least one signature by v whose payload names digest d, as
// `cosign verify --key` decides (no transparency log: the site is offline).
func (c *Client) VerifyCosignSignatures(ctx context.Context, sigRef string, d digest.Digest, v bundle.Verifier) error {
	ref, tagOrDigest, err := splitRef(sigRef)
	if err != nil {
		return err
	}
	repo, err := c.Repository(ref)
	if err != nil {
		return err
	}
	desc, err := resolve(ctx, repo, tagOrDigest)
	if err != nil {
		return fmt.Errorf("%s: %w", sigRef, Classify(err))
	}
	if desc.Size > maxMetadataBytes {
		return fmt.Errorf("%w: %s: manifest of %d bytes", ErrImageSignature, sigRef, desc.Size)
	}
	m, err := fetchJSON[ocispec.Manifest](ctx, repo, desc, "signature manifest")
	if err != nil {
		return fmt.Errorf("%s: %w", sigRef, err)
	}
	var reasons []string
	for _, layer := range m.Layers {
		sig, ok := layer.Annotations[cosignSignatureAnnotation]
		if !ok {
			continue
		}
		if layer.Size > maxSignaturePayload {
			reasons = append(reasons, fmt.Sprintf("payload %s too large", layer.Digest))
			continue
		}
		body, err := content.FetchAll(ctx, repo, layer)
		if err != nil {
			return fmt.Errorf("%s: payload %s: %w", sigRef, layer.Digest, Classify(err))
		}
		if err := checkCosignPayload(body, sig, d, v); err != nil {
			reasons = append(reasons, err.Error())
			continue
		}
		return nil
	}
	if len(reasons) == 0 {
		reasons = append(reasons, "no signatures")
	}
	return fmt.Errorf("%w: %s: none verifies (%s)", ErrImageSignature, sigRef, reasons[0])
}

func checkCosignPayload(body []byte, sigBase64 string, d digest.Digest, v bundle.Verifier) error {
	sum := sha256.Sum256(body)
	if err := v.VerifyDigest(sum[:], sigBase64); err != nil {
		return fmt.Errorf("not signed by the key")
	}
	var p payload.SimpleContainerImage
	if err := json.Unmarshal(body, &p); err != nil {
		return fmt.Errorf("payload: %v", err)
	}
	if p.Critical.Type != payload.CosignSignatureType {
		return fmt.Errorf("payload type %q", p.Critical.Type)
	}
	if p.Critical.Image.DockerManifestDigest != d.String() {
		return fmt.Errorf("signs %s, not %s", p.Critical.Image.DockerManifestDigest, d)
	}
	return nil
}
