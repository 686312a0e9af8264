package inventory

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	"github.com/package-url/packageurl-go"

	"github.com/p7bundle/p7bundle/bundle"
	"github.com/p7bundle/p7bundle/internal/testing/cdxschema"
)

func d(s string) digest.Digest { return digest.FromString(s) }

func testManifest() *bundle.Manifest {
	return &bundle.Manifest{
		MediaType: bundle.MediaType, FormatVersion: bundle.FormatVersion,
		Tool:    bundle.Tool{Name: "p7bundle", Version: "v1.2.3"},
		Created: "2026-11-01T00:00:00Z",
		Chart: bundle.Chart{Name: "pseven", Version: "2026.11.01", AppVersion: "6.50.1",
			Path: "chart/pseven-2026.11.01.tgz", Digest: d("chart"), Size: 100},
		SourceRegistry: "registry.pseven.io",
		Platforms:      []string{"linux/amd64"},
		Secretgen:      "registry.pseven.io/pseven-secretgen:6.50.1",
		Images: []bundle.Image{
			{Ref: "registry.pseven.io/pseven-app:6.50.1", Digest: d("app"), MediaType: "application/vnd.oci.image.manifest.v1+json", Platforms: []string{"linux/amd64"}, Size: 10},
			{Ref: "registry.pseven.io/pseven-secretgen:6.50.1", Digest: d("gen"), MediaType: "application/vnd.oci.image.manifest.v1+json", Platforms: []string{"linux/amd64"}, Size: 10},
			// A filtered index, a registry with a port, a nested path.
			{Ref: "registry.pseven.io:5000/third/party/postgres:16", Digest: d("pg"), SourceDigest: d("pg-index"), MediaType: "application/vnd.oci.image.index.v1+json", Platforms: []string{"linux/amd64", "linux/arm64/v8"}, Size: 20},
			// Pinned by digest only.
			{Ref: "registry.pseven.io/pseven-nginx@" + d("nginx").String(), Digest: d("nginx"), MediaType: "application/vnd.docker.distribution.manifest.v2+json", Platforms: []string{"linux/arm/v7"}, Size: 5},
			// The vendor's signatures of pseven-app: a property of it, not a component.
			{Ref: "registry.pseven.io/pseven-app:sha256-" + d("app").Encoded() + ".sig", Digest: d("sig"), MediaType: "application/vnd.oci.image.manifest.v1+json", Signs: d("app"), Size: 1},
		},
		Base: &bundle.BaseBundle{Name: "pseven-2026.10.01.tar.zst", ManifestDigest: d("base").String()},
	}
}

func TestCycloneDX(t *testing.T) {
	m := testManifest()
	bom, err := CycloneDX(m, "/media/usb/pseven-2026.11.01.tar.zst")
	if err != nil {
		t.Fatal(err)
	}
	out, err := Encode(bom)
	if err != nil {
		t.Fatal(err)
	}
	if err := cdxschema.Validate(out); err != nil {
		t.Fatalf("BOM does not validate against CycloneDX 1.6:\n%v\n%s", err, out)
	}

	var got struct {
		BOMFormat, SpecVersion, SerialNumber string
		Metadata                             struct {
			Timestamp string
			Component struct{ Name, Type, Version, BOMRef string }
		}
		Components []struct {
			Type, Name, Version, Purl string
			Hashes                    []struct{ Alg, Content string }
		}
		Dependencies []struct {
			Ref       string
			DependsOn []string
		}
	}
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatal(err)
	}
	if got.BOMFormat != "CycloneDX" || got.SpecVersion != "1.6" || !strings.HasPrefix(got.SerialNumber, "urn:uuid:") {
		t.Errorf("header %s %s %s", got.BOMFormat, got.SpecVersion, got.SerialNumber)
	}
	if c := got.Metadata.Component; c.Name != "pseven-2026.11.01.tar.zst" || c.Type != "file" || got.Metadata.Timestamp != m.Created {
		t.Errorf("root component %+v at %s", c, got.Metadata.Timestamp)
	}
	images := m.Images[:len(m.Images)-1]
	if len(got.Components) != 1+len(images) || got.Components[0].Name != "pseven" || got.Components[0].Hashes[0].Content != m.Chart.Digest.Encoded() {
		t.Fatalf("components %+v", got.Components)
	}
	// name, version (the digest), qualifiers (sorted, as purl wants)
	wantPurls := [][3]string{
		{"pseven-app", d("app").String(), "arch=amd64 repository_url=registry.pseven.io/pseven-app tag=6.50.1"},
		{"pseven-secretgen", d("gen").String(), "arch=amd64 repository_url=registry.pseven.io/pseven-secretgen tag=6.50.1"},
		{"postgres", d("pg").String(), "repository_url=registry.pseven.io:5000/third/party/postgres tag=16"},
		{"pseven-nginx", d("nginx").String(), "arch=armv7 repository_url=registry.pseven.io/pseven-nginx"},
	}
	for i, img := range images {
		c := got.Components[i+1]
		if c.Type != "container" || c.Hashes[0].Alg != "SHA-256" || c.Hashes[0].Content != img.Digest.Encoded() {
			t.Errorf("image %s: %+v", img.Ref, c)
		}
		p, err := packageurl.FromString(c.Purl)
		if err != nil {
			t.Fatalf("image %s: purl %q: %v", img.Ref, c.Purl, err)
		}
		var q []string
		for _, kv := range p.Qualifiers {
			q = append(q, kv.Key+"="+kv.Value)
		}
		if w := wantPurls[i]; p.Type != "oci" || p.Name != w[0] || p.Version != w[1] || strings.Join(q, " ") != w[2] {
			t.Errorf("image %s: purl %s, want name %s version %s qualifiers %s", img.Ref, c.Purl, w[0], w[1], w[2])
		}
	}
	if got.Components[4].Version != d("nginx").String() {
		t.Errorf("a digest-only image is versioned %q, want its digest", got.Components[4].Version)
	}
	if len(got.Dependencies) == 0 || got.Dependencies[0].Ref != "bundle" || len(got.Dependencies[0].DependsOn) != 1+len(images) {
		t.Errorf("dependencies %+v", got.Dependencies)
	}

	if !strings.Contains(string(out), `"name": "p7bundle:cosignSignatures",
          "value": "registry.pseven.io/pseven-app:sha256-`+d("app").Encoded()+`.sig"`) {
		t.Errorf("pseven-app does not name its signatures:\n%s", out)
	}

	// Same manifest, same bytes.
	again, _ := CycloneDX(testManifest(), "pseven-2026.11.01.tar.zst")
	if b, _ := Encode(again); !bytes.Equal(b, out) {
		t.Error("the BOM of the same manifest changed between runs")
	}
}

// The schema check is not vacuous: a BOM the schema forbids is refused.
func TestSchemaRejects(t *testing.T) {
	if err := cdxschema.Validate([]byte(`{"bomFormat":"CycloneDX","specVersion":"1.6","components":[{"type":"vessel","name":"x"}]}`)); err == nil {
		t.Fatal("a component of type vessel validated")
	}
}
