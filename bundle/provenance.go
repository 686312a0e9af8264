package bundle

import (
	"bytes"
	"context"
	"crypto"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"time"

	"github.com/in-toto/in-toto-golang/in_toto"
	"github.com/in-toto/in-toto-golang/in_toto/slsa_provenance/common"
	slsa1 "github.com/in-toto/in-toto-golang/in_toto/slsa_provenance/v1"
	"github.com/opencontainers/go-digest"
	"github.com/secure-systems-lab/go-securesystemslib/dsse"
)

const (
	// ProvenanceSuffix names the signed provenance beside the bundle.
	ProvenanceSuffix = ".intoto.jsonl"
	// InTotoPayloadType is the DSSE payload type of an in-toto statement.
	InTotoPayloadType = "application/vnd.in-toto+json"
	statementType     = "https://in-toto.io/Statement/v1"
	// ProvenanceBuildType describes ProvenanceParameters (docs/SECURITY.md).
	ProvenanceBuildType = "https://github.com/p7bundle/p7bundle/blob/main/docs/SECURITY.md#provenance"
	builderID           = "https://github.com/p7bundle/p7bundle"
	maxProvenanceBytes  = 16 << 20
)

// ProvenancePath is where the provenance of the bundle at path is written.
func ProvenancePath(path string) string { return path + ProvenanceSuffix }

// ProvenanceParameters are the build's inputs that the manifest does not
// record. Paths are base names: the provenance of a rebuild elsewhere
// must be the same bytes.
type ProvenanceParameters struct {
	Chart          string   `json:"chart"`
	SourceRegistry string   `json:"sourceRegistry"`
	Mirrors        []string `json:"mirrors,omitempty"`
	Platforms      []string `json:"platforms"`
	Images         []string `json:"images,omitempty"`
	Exclude        []string `json:"exclude,omitempty"`
	Base           string   `json:"base,omitempty"`
	SplitSize      int64    `json:"splitSize,omitempty"`
}

type provenanceInternal struct {
	FormatVersion int `json:"formatVersion"`
	// SourceDateEpoch is SOURCE_DATE_EPOCH as the build saw it; empty when unset.
	SourceDateEpoch string `json:"sourceDateEpoch,omitempty"`
	ManifestDigest  string `json:"manifestDigest"`
}

// Provenance is the in-toto statement (SLSA provenance v1) of the bundle
// whose archive has sha256 fileDigest ("sha256:…"), built from m.
func Provenance(m *Manifest, name, fileDigest string, params ProvenanceParameters) (*in_toto.ProvenanceStatementSLSA1, error) {
	if d := digest.Digest(fileDigest); d.Validate() != nil || d.Algorithm() != digest.SHA256 {
		return nil, fmt.Errorf("provenance: bundle digest %q is not sha256", fileDigest)
	}
	md, err := m.Digest()
	if err != nil {
		return nil, err
	}
	internal := provenanceInternal{FormatVersion: m.FormatVersion, ManifestDigest: md}
	var startedOn *time.Time
	if m.Created != "" {
		t, err := time.Parse(time.RFC3339, m.Created)
		if err != nil {
			return nil, fmt.Errorf("provenance: created %q: %v", m.Created, err)
		}
		t = t.UTC()
		startedOn = &t
		internal.SourceDateEpoch = strconv.FormatInt(t.Unix(), 10)
	}
	deps := []slsa1.ResourceDescriptor{chartDependency(m.Chart)}
	for _, img := range m.Images {
		deps = append(deps, imageDependency(img))
	}
	st := &in_toto.ProvenanceStatementSLSA1{
		StatementHeader: in_toto.StatementHeader{
			Type:          statementType,
			PredicateType: slsa1.PredicateSLSAProvenance,
			Subject:       []in_toto.Subject{{Name: filepath.Base(name), Digest: digestSet(digest.Digest(fileDigest))}},
		},
		Predicate: slsa1.ProvenancePredicate{
			BuildDefinition: slsa1.ProvenanceBuildDefinition{
				BuildType:            ProvenanceBuildType,
				ExternalParameters:   params,
				InternalParameters:   internal,
				ResolvedDependencies: deps,
			},
			RunDetails: slsa1.ProvenanceRunDetails{
				Builder:       slsa1.Builder{ID: builderID, Version: map[string]string{m.Tool.Name: m.Tool.Version}},
				BuildMetadata: slsa1.BuildMetadata{StartedOn: startedOn},
			},
		},
	}
	return st, nil
}

func chartDependency(c Chart) slsa1.ResourceDescriptor {
	return slsa1.ResourceDescriptor{
		Name:      c.Path,
		Digest:    digestSet(c.Digest),
		MediaType: "application/vnd.cncf.helm.chart.content.v1.tar+gzip",
		Annotations: map[string]any{
			"name": c.Name, "version": c.Version, "appVersion": c.AppVersion,
		},
	}
}

// imageDependency records the reference as built from and the digest
// upstream served: the index digest when the bundle keeps a filtered one.
func imageDependency(img Image) slsa1.ResourceDescriptor {
	upstream, mediaType := img.Digest, img.MediaType
	ann := map[string]any{"platforms": img.Platforms, "bundledDigest": img.Digest.String()}
	if img.SourceDigest != "" {
		// The media type bundled is the kept manifest's, not the index's.
		upstream, mediaType = img.SourceDigest, ""
		ann["indexDigest"] = img.SourceDigest.String()
	}
	if len(img.Sources) > 0 {
		ann["sources"] = img.Sources
	}
	return slsa1.ResourceDescriptor{
		URI:         "oci://" + img.Ref,
		Digest:      digestSet(upstream),
		MediaType:   mediaType,
		Annotations: ann,
	}
}

// digestSet is a descriptor's digest in in-toto's form.
func digestSet(d digest.Digest) common.DigestSet {
	if d.Validate() != nil {
		return nil
	}
	return common.DigestSet{d.Algorithm().String(): d.Encoded()}
}

// dsseSigner adapts a Signer (it signs SHA-256 digests) to DSSE, which
// signs the pre-authentication encoding of the payload.
type dsseSigner struct{ s Signer }

func (d dsseSigner) Sign(_ context.Context, data []byte) ([]byte, error) {
	sum := sha256.Sum256(data)
	sig, err := d.s.SignDigest(sum[:])
	if err != nil {
		return nil, err
	}
	return base64.StdEncoding.DecodeString(sig)
}

func (d dsseSigner) KeyID() (string, error) { return "", nil }

type dsseVerifier struct{ v Verifier }

func (d dsseVerifier) Verify(_ context.Context, data, sig []byte) error {
	sum := sha256.Sum256(data)
	return d.v.VerifyDigest(sum[:], base64.StdEncoding.EncodeToString(sig))
}

func (d dsseVerifier) KeyID() (string, error)   { return "", nil }
func (d dsseVerifier) Public() crypto.PublicKey { return nil }

// SignProvenance wraps the statement in a DSSE envelope signed by s: one
// line of JSON, what `cosign attest-blob` writes and
// `cosign verify-blob-attestation --signature` reads.
func SignProvenance(ctx context.Context, s Signer, st *in_toto.ProvenanceStatementSLSA1) ([]byte, error) {
	return signStatement(ctx, s, "provenance", st)
}

// signStatement wraps an in-toto statement in a DSSE envelope signed by s:
// one line of JSON.
func signStatement(ctx context.Context, s Signer, what string, st any) ([]byte, error) {
	payload, err := json.Marshal(st)
	if err != nil {
		return nil, err
	}
	es, err := dsse.NewEnvelopeSigner(dsseSigner{s})
	if err != nil {
		return nil, err
	}
	env, err := es.SignPayload(ctx, InTotoPayloadType, payload)
	if err != nil {
		return nil, fmt.Errorf("signing %s: %w", what, err)
	}
	line, err := json.Marshal(env)
	if err != nil {
		return nil, err
	}
	return append(line, '\n'), nil
}

// ErrProvenance: the provenance is unsigned, signed by another key, or
// disagrees with the bundle it sits beside.
var ErrProvenance = errors.New("provenance does not match")

// VerifyProvenance checks the DSSE signature of the provenance file with v
// and that its statement is the one this tool writes for the bundle with
// manifest m and archive digest fileDigest, except for the build
// parameters the manifest does not record (reported back) and the
// subject's name: a renamed bundle is the same bundle. signedAs is that
// name when it is not bundleName's.
func VerifyProvenance(ctx context.Context, path string, v Verifier, m *Manifest, bundleName, fileDigest string) (params *ProvenanceParameters, signedAs string, err error) {
	fail := func(format string, args ...any) (*ProvenanceParameters, string, error) {
		return nil, "", fmt.Errorf("%w: %s: %s", ErrProvenance, path, fmt.Sprintf(format, args...))
	}
	data, err := readLimited(path, maxProvenanceBytes)
	if err != nil {
		return nil, "", fmt.Errorf("%w: reading %s: %v", ErrProvenance, path, err)
	}
	var env dsse.Envelope
	if err := json.Unmarshal(bytes.TrimSpace(data), &env); err != nil {
		return fail("not a DSSE envelope: %v", err)
	}
	if env.PayloadType != InTotoPayloadType {
		return fail("payload type %q, want %q", env.PayloadType, InTotoPayloadType)
	}
	ev, err := dsse.NewEnvelopeVerifier(dsseVerifier{v})
	if err != nil {
		return nil, "", err
	}
	if _, err := ev.Verify(ctx, &env); err != nil {
		return nil, "", fmt.Errorf("%w: %s: %w: %v", ErrProvenance, path, ErrSignature, err)
	}
	payload, err := env.DecodeB64Payload()
	if err != nil {
		return fail("payload: %v", err)
	}
	var got in_toto.ProvenanceStatementSLSA1
	dec := json.NewDecoder(bytes.NewReader(payload))
	if err := dec.Decode(&got); err != nil {
		return fail("statement: %v", err)
	}
	if params, err = decodeParameters(got.Predicate.BuildDefinition.ExternalParameters); err != nil {
		return fail("externalParameters: %v", err)
	}
	name := filepath.Base(bundleName)
	if len(got.Subject) == 1 && got.Subject[0].Name != name {
		name, signedAs = got.Subject[0].Name, got.Subject[0].Name
	}
	want, err := Provenance(m, name, fileDigest, *params)
	if err != nil {
		return nil, "", err
	}
	// Compare as JSON documents: what was signed against what this
	// bundle implies (subject digest, chart, every image, epoch, tool).
	if !sameJSON(want, &got) {
		return fail("the statement does not describe this bundle (%s, subject %v)", fileDigest, got.Subject)
	}
	return params, signedAs, nil
}

func decodeParameters(v any) (*ProvenanceParameters, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	var p ProvenanceParameters
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		return nil, err
	}
	return &p, nil
}

func sameJSON(a, b any) bool {
	var x, y any
	for _, p := range []struct {
		in  any
		out *any
	}{{a, &x}, {b, &y}} {
		raw, err := json.Marshal(p.in)
		if err != nil || json.Unmarshal(raw, p.out) != nil {
			return false
		}
	}
	return reflect.DeepEqual(x, y)
}

func readLimited(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err == nil && int64(len(data)) > limit {
		err = fmt.Errorf("more than the %d bytes allowed", limit)
	}
	return data, err
}
