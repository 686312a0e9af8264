package bundle

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/in-toto/in-toto-golang/in_toto"
	"github.com/secure-systems-lab/go-securesystemslib/dsse"
)

var testParams = ProvenanceParameters{
	Chart: "pseven-2026.11.01.tgz", SourceRegistry: "registry.pseven.io",
	Mirrors: []string{"registry.pseven.io=127.0.0.1:5000"}, Platforms: []string{"linux/amd64"},
}

func writeWithProvenance(t *testing.T, f *fixture, path string, s Signer) *WriteResult {
	t.Helper()
	params := testParams
	res, err := Write(context.Background(), path, WriteOptions{
		Manifest: f.manifest, Chart: f.chart, Blobs: f.open, Signer: s,
		ModTime: time.Unix(1764547200, 0), Provenance: &params,
	})
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func readStatement(t *testing.T, path string) (*dsse.Envelope, *in_toto.ProvenanceStatementSLSA1) {
	t.Helper()
	var env dsse.Envelope
	if err := json.Unmarshal(mustRead(t, path), &env); err != nil {
		t.Fatal(err)
	}
	payload, err := env.DecodeB64Payload()
	if err != nil {
		t.Fatal(err)
	}
	var st in_toto.ProvenanceStatementSLSA1
	if err := json.Unmarshal(payload, &st); err != nil {
		t.Fatal(err)
	}
	return &env, &st
}

func TestProvenance(t *testing.T) {
	dir := t.TempDir()
	s, v := testKeys(t, dir)
	f := newFixture(t)
	f.manifest.Created = "2025-12-01T00:00:00Z"
	out := filepath.Join(dir, "b.tar.zst")
	res := writeWithProvenance(t, f, out, s)
	if res.ProvenancePath != out+ProvenanceSuffix {
		t.Fatalf("ProvenancePath = %q", res.ProvenancePath)
	}
	line := mustRead(t, res.ProvenancePath)
	if bytes.Count(line, []byte("\n")) != 1 || line[len(line)-1] != '\n' {
		t.Errorf("provenance is not one JSON line: %q", line)
	}
	env, st := readStatement(t, res.ProvenancePath)
	if env.PayloadType != InTotoPayloadType || len(env.Signatures) != 1 {
		t.Errorf("envelope: %s, %d signatures", env.PayloadType, len(env.Signatures))
	}
	if st.Type != "https://in-toto.io/Statement/v1" || st.PredicateType != "https://slsa.dev/provenance/v1" {
		t.Errorf("statement %s / %s", st.Type, st.PredicateType)
	}
	if len(st.Subject) != 1 || st.Subject[0].Name != "b.tar.zst" || "sha256:"+st.Subject[0].Digest["sha256"] != res.Digest {
		t.Errorf("subject %+v, bundle %s", st.Subject, res.Digest)
	}
	bd := st.Predicate.BuildDefinition
	deps := bd.ResolvedDependencies
	if len(deps) != 1+len(f.manifest.Images) {
		t.Fatalf("%d resolved dependencies for a chart and %d images", len(deps), len(f.manifest.Images))
	}
	if c := deps[0]; "sha256:"+c.Digest["sha256"] != f.manifest.Chart.Digest.String() || c.Annotations["appVersion"] != f.manifest.Chart.AppVersion {
		t.Errorf("chart dependency %+v", c)
	}
	for i, img := range f.manifest.Images {
		if d := deps[i+1]; d.URI != "oci://"+img.Ref || "sha256:"+d.Digest["sha256"] != img.Digest.String() {
			t.Errorf("image dependency %+v for %s@%s", d, img.Ref, img.Digest)
		}
	}
	internal, _ := json.Marshal(bd.InternalParameters)
	if !strings.Contains(string(internal), `"sourceDateEpoch":"1764547200"`) {
		t.Errorf("internal parameters %s lack SOURCE_DATE_EPOCH", internal)
	}
	if st.Predicate.RunDetails.Builder.Version["p7bundle"] == "" {
		t.Errorf("builder %+v has no p7bundle version", st.Predicate.RunDetails.Builder)
	}

	rep, err := Verify(context.Background(), out, VerifyOptions{Verifier: v})
	if err != nil || !rep.ProvenanceVerified || rep.Provenance != res.ProvenancePath || rep.BuildParameters == nil || rep.BuildParameters.Mirrors[0] != testParams.Mirrors[0] {
		t.Fatalf("Verify = %+v, %v", rep, err)
	}

	t.Run("renamed", func(t *testing.T) {
		renamed := filepath.Join(t.TempDir(), "anything")
		for _, ext := range []string{"", ".sig", ProvenanceSuffix} {
			if err := os.WriteFile(renamed+ext, mustRead(t, out+ext), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		rep, err := Verify(context.Background(), renamed, VerifyOptions{Verifier: v})
		if err != nil || !rep.ProvenanceVerified || len(rep.Notes) != 1 || !strings.Contains(rep.Notes[0], "names the bundle b.tar.zst") {
			t.Fatalf("Verify of the renamed bundle = %+v, %v", rep, err)
		}
	})

	t.Run("reproducible", func(t *testing.T) {
		other := filepath.Join(t.TempDir(), "b.tar.zst")
		res2 := writeWithProvenance(t, f, other, s)
		if !bytes.Equal(mustRead(t, res2.ProvenancePath), line) {
			t.Error("two builds of the same bundle wrote different provenance")
		}
	})

	t.Run("rejected", func(t *testing.T) {
		otherSigner, _ := testKeys(t, t.TempDir())
		foreign := newFixture(t)
		foreign.addImage(t, "extra", "application/vnd.oci.image.layer.v1.tar", []byte("another image"))
		foreignRes := writeWithProvenance(t, foreign, filepath.Join(t.TempDir(), "b.tar.zst"), s)

		// A statement changed after signing, then signed again with the right key.
		resign := func(edit func(*in_toto.ProvenanceStatementSLSA1)) []byte {
			_, st := readStatement(t, res.ProvenancePath)
			edit(st)
			b, err := SignProvenance(context.Background(), s, st)
			if err != nil {
				t.Fatal(err)
			}
			return b
		}
		otherKey, err := SignProvenance(context.Background(), otherSigner, st)
		if err != nil {
			t.Fatal(err)
		}
		payloadSwapped := func() []byte {
			e, _ := readStatement(t, res.ProvenancePath)
			fe, _ := readStatement(t, foreignRes.ProvenancePath)
			e.Payload = fe.Payload
			b, _ := json.Marshal(e)
			return b
		}()
		cases := []struct {
			name string
			data []byte
			want error
		}{
			{"signed by another key", otherKey, ErrSignature},
			{"another bundle's provenance", mustRead(t, foreignRes.ProvenancePath), ErrProvenance},
			{"payload of another bundle under this signature", payloadSwapped, ErrSignature},
			{"image digest changed", resign(func(st *in_toto.ProvenanceStatementSLSA1) {
				st.Predicate.BuildDefinition.ResolvedDependencies[1].Digest["sha256"] = strings.Repeat("0", 64)
			}), ErrProvenance},
			{"subject changed", resign(func(st *in_toto.ProvenanceStatementSLSA1) {
				st.Subject[0].Digest["sha256"] = strings.Repeat("a", 64)
			}), ErrProvenance},
			{"epoch changed", resign(func(st *in_toto.ProvenanceStatementSLSA1) {
				st.Predicate.BuildDefinition.InternalParameters = map[string]any{"sourceDateEpoch": "1"}
			}), ErrProvenance},
			{"unknown parameter", resign(func(st *in_toto.ProvenanceStatementSLSA1) {
				st.Predicate.BuildDefinition.ExternalParameters = map[string]any{"chart": "x", "script": "curl | sh"}
			}), ErrProvenance},
			{"payload type", []byte(strings.Replace(string(line), InTotoPayloadType, "text/plain", 1)), ErrProvenance},
			{"not JSON", []byte("garbage\n"), ErrProvenance},
			{"empty", nil, ErrProvenance},
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				p := filepath.Join(t.TempDir(), "prov.jsonl")
				os.WriteFile(p, c.data, 0o644)
				_, err := Verify(context.Background(), out, VerifyOptions{Verifier: v, ProvenancePath: p})
				if !errors.Is(err, c.want) || !errors.Is(err, ErrProvenance) || !strings.Contains(err.Error(), p) {
					t.Fatalf("Verify = %v, want %v naming %s", err, c.want, p)
				}
			})
		}
		_, err = Verify(context.Background(), out, VerifyOptions{Verifier: v, ProvenancePath: filepath.Join(dir, "missing.jsonl")})
		if !errors.Is(err, ErrProvenance) {
			t.Errorf("Verify with a missing --provenance = %v", err)
		}
	})

	t.Run("absent is no error", func(t *testing.T) {
		os.Remove(res.ProvenancePath)
		rep, err := Verify(context.Background(), out, VerifyOptions{Verifier: v})
		if err != nil || rep.ProvenanceVerified {
			t.Fatalf("Verify without provenance = %+v, %v", rep, err)
		}
	})
}

// The DSSE signature is over the pre-authentication encoding, as the
// in-toto/DSSE spec says: checked here without our verifier.
func TestProvenanceSignsPAE(t *testing.T) {
	dir := t.TempDir()
	s, v := testKeys(t, dir)
	res := writeWithProvenance(t, newFixture(t), filepath.Join(dir, "b.tar.zst"), s)
	env, _ := readStatement(t, res.ProvenancePath)
	payload, _ := env.DecodeB64Payload()
	sig, _ := base64.StdEncoding.DecodeString(env.Signatures[0].Sig)
	if err := (dsseVerifier{v}).Verify(context.Background(), dsse.PAE(env.PayloadType, payload), sig); err != nil {
		t.Fatalf("signature over PAE: %v", err)
	}
}
