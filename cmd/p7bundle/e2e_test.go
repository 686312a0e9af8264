package main

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/p7bundle/p7bundle/bundle"
	"github.com/p7bundle/p7bundle/internal/probeimage"
	"github.com/p7bundle/p7bundle/internal/testing/cdxschema"
	"github.com/p7bundle/p7bundle/internal/testing/testenv"
)

const testKeyPassword = "key-pa55word-never-printed"

type result struct {
	code           int
	stdout, stderr string
}

// p7 runs the CLI in-process with the given stdin.
func p7(t *testing.T, stdin string, args ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(context.Background(), append([]string{"p7bundle"}, args...), strings.NewReader(stdin), &out, &errb)
	if len(args) > 0 && slices.Contains(args, "--json") {
		checkJSONDocumented(t, args[0], out.String())
	}
	return result{code, out.String(), errb.String()}
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
}

type site struct {
	up       *testenv.Upstream
	dir      string
	key, pub string
}

func startSite(t *testing.T) *site {
	t.Helper()
	if testing.Short() {
		t.Skip("starts a registry")
	}
	t.Setenv("COSIGN_PASSWORD", testKeyPassword)
	dir := t.TempDir()
	up, err := testenv.StartUpstream(context.Background(), testenv.FixtureChart(), filepath.Join(dir, "upstream"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { up.Stop() })
	s := &site{up: up, dir: dir}
	r := p7(t, "", "keygen", "--output-prefix", filepath.Join(dir, "cosign"))
	if r.code != 0 {
		t.Fatalf("keygen: %v", r)
	}
	s.key, s.pub = filepath.Join(dir, "cosign.key"), filepath.Join(dir, "cosign.pub")
	return s
}

// buildArgs are the flags of a build from the upstream fixture registry.
func (s *site) buildArgs(out string, extra ...string) []string {
	return append([]string{"build", "--chart", testenv.FixtureChart(), "--key", s.key, "-o", out,
		"--mirror", s.up.MirrorFlag(), "--ca-file", s.up.CAFile, "--username", s.up.Username, "--password-stdin"}, extra...)
}

func (s *site) build(t *testing.T, out string, extra ...string) result {
	t.Helper()
	r := p7(t, s.up.Password+"\n", s.buildArgs(out, extra...)...)
	for _, secret := range []string{s.up.Password, testKeyPassword} {
		if strings.Contains(r.stdout+r.stderr, secret) {
			t.Errorf("a password appears in the output of build")
		}
	}
	return r
}

func TestBuildVerifyInspect(t *testing.T) {
	s := startSite(t)
	out := filepath.Join(s.dir, "pseven-2023.09.25.tar.zst")
	r := s.build(t, out, "--cache-dir", filepath.Join(s.dir, "cache"))
	if r.code != 0 {
		t.Fatalf("build: %v", r)
	}
	// Build prints every image with where it was found.
	for _, want := range []string{"registry.pseven.io/pseven-upkeep:6.47.4712", "found in template:", "found in values:image.blocknetworkgate", "found in secretgen"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("build output lacks %q:\n%s", want, r.stderr)
		}
	}

	v := p7(t, "", "verify", out, "--key", s.pub)
	if v.code != 0 || !strings.Contains(v.stdout, "Verified OK") || !strings.Contains(v.stdout, "provenance: valid") {
		t.Fatalf("verify: %v", v)
	}
	vj := p7(t, "", "verify", out, "--key", s.pub, "--json")
	var rep bundle.Report
	if err := json.Unmarshal([]byte(vj.stdout), &rep); err != nil || !rep.SignatureVerified || !rep.ContentVerified || !rep.ProvenanceVerified {
		t.Fatalf("verify --json: %v / %v", err, vj)
	}

	in := p7(t, "", "inspect", out, "--json")
	if in.code != 0 {
		t.Fatalf("inspect: %v", in)
	}
	var m bundle.Manifest
	if err := json.Unmarshal([]byte(in.stdout), &m); err != nil {
		t.Fatal(err)
	}
	if m.Chart.Name != "pseven" || m.Chart.Version != "2023.09.25" || m.Chart.AppVersion != "6.47.4712" {
		t.Errorf("chart = %+v", m.Chart)
	}
	if m.Secretgen != "registry.pseven.io/pseven-secretgen:6.47.4712" {
		t.Errorf("secretgen = %q", m.Secretgen)
	}
	// Every discovered image is in the bundle with the upstream digest; the
	// multi-platform one is filtered to linux/amd64 and records the index.
	if len(m.Images) != len(s.up.Images)+1 || !probeimage.IsProbe(m.Probe) {
		t.Fatalf("bundle has %d images and probe %q, discovery found %d (plus the probe)", len(m.Images), m.Probe, len(s.up.Images))
	}
	multi := map[string]bool{}
	for _, ref := range s.up.MultiPlatform {
		multi[ref] = true
	}
	for _, img := range m.Images {
		want, ok := s.up.Digests[img.Ref]
		switch {
		case img.Ref == m.Probe:
		case !ok:
			t.Errorf("unexpected image %s", img.Ref)
		case multi[img.Ref]:
			if img.SourceDigest.String() != want || img.Digest.String() == want || strings.Join(img.Platforms, ",") != "linux/amd64" {
				t.Errorf("%s: digest %s source %s platforms %v; upstream index %s", img.Ref, img.Digest, img.SourceDigest, img.Platforms, want)
			}
		case img.Digest.String() != want:
			t.Errorf("%s: digest %s, upstream %s", img.Ref, img.Digest, want)
		}
	}
	if len(multi) == 0 {
		t.Error("fixture has no multi-platform image")
	}
	// Each blob once, although every image shares the fixture binary layer.
	names := entryNames(t, out)
	seen := map[string]bool{}
	for _, n := range names {
		if seen[n] {
			t.Errorf("entry %s appears twice", n)
		}
		seen[n] = true
	}
	if blobs := countPrefix(names, bundle.BlobDir); blobs != m.Totals.Blobs || m.Totals.ImageBytes <= m.Totals.BlobBytes {
		t.Errorf("%d blob entries, manifest says %d; image bytes %d vs unique %d", blobs, m.Totals.Blobs, m.Totals.ImageBytes, m.Totals.BlobBytes)
	}

	bom := p7(t, "", "inspect", out, "--cyclonedx")
	if err := cdxschema.Validate([]byte(bom.stdout)); bom.code != 0 || err != nil {
		t.Fatalf("inspect --cyclonedx: %v (schema: %v)", bom, err)
	}
	for _, img := range m.Images {
		if !strings.Contains(bom.stdout, `"pkg:oci/`) || !strings.Contains(bom.stdout, img.Digest.Encoded()) {
			t.Errorf("the BOM lacks %s@%s", img.Ref, img.Digest)
		}
	}

	hi := p7(t, "", "inspect", out)
	if hi.code != 0 || !strings.Contains(hi.stdout, "pseven-memcached:1.6.21") || !strings.Contains(hi.stdout, "AppVersion: 6.47.4712") {
		t.Errorf("inspect: %v", hi)
	}

	t.Run("reproducible", func(t *testing.T) {
		// A fresh build, no shared cache, other encoder concurrency: same bytes.
		out2 := filepath.Join(s.dir, "again.tar.zst")
		if r := s.build(t, out2, "--jobs", "1"); r.code != 0 {
			t.Fatalf("second build: %v", r)
		}
		a, b := sha256File(t, out), sha256File(t, out2)
		if a != b {
			t.Fatalf("two builds differ: %s vs %s", a, b)
		}
	})

	t.Run("cache rerun fetches nothing", func(t *testing.T) {
		out3 := filepath.Join(s.dir, "cached.tar.zst")
		r := s.build(t, out3, "--cache-dir", filepath.Join(s.dir, "cache"))
		if r.code != 0 || !strings.Contains(r.stderr, "0 B fetched") {
			t.Fatalf("rerun with warm cache: %v", r)
		}
	})

	t.Run("cosign interop", func(t *testing.T) {
		cosignInterop(t, s, out)
	})

	// The key password and the upstream password are never written anywhere
	// (the encrypted key holds neither).
	assertSecretsContained(t, s.dir, []string{testKeyPassword, s.up.Password}, "htpasswd")
}

func cosignInterop(t *testing.T, s *site, out string) {
	cosign, err := testenv.Tool("cosign")
	if err != nil {
		t.Fatal(err)
	}
	cosignCmd := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(cosign, args...)
		cmd.Dir = s.dir
		cmd.Env = append(os.Environ(), "COSIGN_PASSWORD="+testKeyPassword, "TUF_ROOT="+filepath.Join(s.dir, "tuf"), "SIGSTORE_NO_CACHE=true")
		b, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("cosign %v: %v\n%s", args, err, b)
		}
		return string(b)
	}
	// Stock cosign verifies our signature.
	cosignCmd("verify-blob", "--key", s.pub, "--signature", out+".sig", "--insecure-ignore-tlog", out)

	// ... and the table of contents signature, extracted with stock zstd and tar.
	toc := filepath.Join(s.dir, "toc")
	os.MkdirAll(toc, 0o755)
	extract := exec.Command("sh", "-c", `zstd -dc "$1" | tar -x -C "$2" p7bundle.json p7bundle.json.sig`, "sh", out, toc)
	if b, err := extract.CombinedOutput(); err != nil {
		t.Fatalf("zstd -d | tar -x: %v\n%s", err, b)
	}
	cosignCmd("verify-blob", "--key", s.pub, "--signature", filepath.Join(toc, "p7bundle.json.sig"), "--insecure-ignore-tlog", filepath.Join(toc, "p7bundle.json"))

	// ... and our Sigstore bundle, offline, with an empty trusted root.
	root := filepath.Join(s.dir, "trusted-root.json")
	os.WriteFile(root, []byte(`{"mediaType":"application/vnd.dev.sigstore.trustedroot+json;version=0.1"}`), 0o644)
	cosignCmd("verify-blob", "--new-bundle-format", "--bundle", out+".sigstore.json", "--trusted-root", root, "--key", s.pub, "--insecure-ignore-tlog", out)

	// ... and the signed SLSA provenance: its DSSE signature, its predicate
	// type and that its subject is this very file.
	cosignCmd("verify-blob-attestation", "--key", s.pub, "--type", "slsaprovenance1", "--signature", out+bundle.ProvenanceSuffix, "--insecure-ignore-tlog", out)
	// A renamed bundle (a data diode, a ticket attachment) is the same
	// bundle: both verify it, the subject's name is only a note.
	renamed := filepath.Join(s.dir, "attachment-7.bin")
	for _, ext := range []string{"", ".sig", bundle.ProvenanceSuffix} {
		copyFile(t, out+ext, renamed+ext)
	}
	cosignCmd("verify-blob-attestation", "--key", s.pub, "--type", "slsaprovenance1", "--signature", renamed+bundle.ProvenanceSuffix, "--insecure-ignore-tlog", renamed)
	if r := p7(t, "", "verify", renamed, "--key", s.pub); r.code != 0 || !strings.Contains(r.stdout, "provenance: valid") ||
		!strings.Contains(r.stdout, "note: attachment-7.bin.intoto.jsonl names the bundle "+filepath.Base(out)) {
		t.Fatalf("verify of the renamed bundle: %v", r)
	}
	// The provenance of this bundle does not pass for another file.
	other := filepath.Join(s.dir, "other-blob")
	os.WriteFile(other, []byte("not the bundle"), 0o644)
	cmd := exec.Command(cosign, "verify-blob-attestation", "--key", s.pub, "--type", "slsaprovenance1", "--signature", out+bundle.ProvenanceSuffix, "--insecure-ignore-tlog", other)
	cmd.Env = append(os.Environ(), "TUF_ROOT="+filepath.Join(s.dir, "tuf"), "SIGSTORE_NO_CACHE=true")
	if b, err := cmd.CombinedOutput(); err == nil {
		t.Fatalf("cosign accepted the provenance for another file:\n%s", b)
	}

	// public-key prints the key's public half, as cosign.pub holds it.
	pk := p7(t, "", "public-key", "--key", s.key)
	if pub, _ := os.ReadFile(s.pub); pk.code != 0 || pk.stdout != string(pub) {
		t.Fatalf("public-key = %v, want the contents of %s", pk, s.pub)
	}

	// We verify what cosign sign-blob makes with our keygen key.
	sig := filepath.Join(s.dir, "by-cosign.sig")
	cosignCmd("sign-blob", "--yes", "--tlog-upload=false", "--key", s.key, "--output-signature", sig, out)
	if r := p7(t, "", "verify", out, "--key", s.pub, "--signature", sig); r.code != 0 {
		t.Fatalf("verify of a cosign signature: %v", r)
	}

	// A key from cosign generate-key-pair signs our bundle.
	cosignCmd("generate-key-pair", "--output-key-prefix", "stock")
	stockKey, stockPub := filepath.Join(s.dir, "stock.key"), filepath.Join(s.dir, "stock.pub")
	out2 := filepath.Join(s.dir, "stock-signed.tar.zst")
	args := s.buildArgs(out2, "--cache-dir", filepath.Join(s.dir, "cache"))
	for i, a := range args {
		if a == s.key {
			args[i] = stockKey
		}
	}
	if r := p7(t, s.up.Password+"\n", args...); r.code != 0 {
		t.Fatalf("build with a cosign key: %v", r)
	}
	if r := p7(t, "", "verify", out2, "--key", stockPub); r.code != 0 {
		t.Fatalf("verify with cosign pub: %v", r)
	}
	cosignCmd("verify-blob", "--key", stockPub, "--signature", out2+".sig", "--insecure-ignore-tlog", out2)
}

func TestBuildBadInput(t *testing.T) {
	s := startSite(t)
	bad := filepath.Join(testenv.RepoRoot(), "testdata", "charts", "bad")
	good := filepath.Join(s.dir, "good.tar.zst")
	if r := s.build(t, good); r.code != 0 {
		t.Fatalf("build: %v", r)
	}
	otherPub := filepath.Join(s.dir, "other")
	if r := p7(t, "", "keygen", "--output-prefix", otherPub); r.code != 0 {
		t.Fatal(r)
	}
	flipped := filepath.Join(s.dir, "flipped.tar.zst")
	data, _ := os.ReadFile(good)
	data[len(data)/3] ^= 0x10
	os.WriteFile(flipped, data, 0o644)
	sig, _ := os.ReadFile(good + ".sig")
	os.WriteFile(flipped+".sig", sig, 0o644)

	type tc struct {
		name string
		args []string
		env  map[string]string
		code int
		want string
	}
	out := func(n string) string { return filepath.Join(s.dir, n+".tar.zst") }
	cases := []tc{
		{"chart without appVersion", replaceFlag(s.buildArgs(out("a")), "--chart", filepath.Join(bad, "no-appversion")), nil, exitInput, "no appVersion"},
		{"not a chart", replaceFlag(s.buildArgs(out("b")), "--chart", filepath.Join(bad, "not-a-chart.tgz")), nil, exitInput, "not-a-chart.tgz"},
		{"chart file missing", replaceFlag(s.buildArgs(out("c")), "--chart", filepath.Join(bad, "nope.tgz")), nil, exitInput, "nope.tgz"},
		{"no images", replaceFlag(s.buildArgs(out("d")), "--chart", filepath.Join(bad, "no-images")), nil, exitInput, "no images found"},
		{"image missing upstream", s.buildArgs(out("e"), "--image", "registry.pseven.io/pseven-missing:9.9"), nil, exitRegistry, "registry.pseven.io/pseven-missing:9.9"},
		{"registry unreachable", replaceFlag(s.buildArgs(out("f")), "--mirror", "registry.pseven.io=127.0.0.1:1"), nil, exitRegistry, "unreachable"},
		{"wrong upstream password", s.buildArgs(out("g")), map[string]string{"stdin": "wrong\n"}, exitRegistry, "unauthorized"},
		{"wrong key password", s.buildArgs(out("h")), map[string]string{"COSIGN_PASSWORD": "wrong"}, exitKey, "wrong password"},
		{"bad platform flag", s.buildArgs(out("i"), "--platform", "linux"), nil, exitUsage, "--platform"},
		{"platform absent", s.buildArgs(out("j"), "--platform", "windows/amd64"), nil, exitRegistry, "windows/amd64"},
		{"verify with wrong key", []string{"verify", good, "--key", otherPub + ".pub"}, nil, exitVerify, "signature"},
		{"verify flipped byte", []string{"verify", flipped, "--key", s.pub}, nil, exitVerify, "flipped.tar.zst"},
		{"verify missing bundle", []string{"verify", out("none"), "--key", s.pub}, nil, exitInput, "none.tar.zst"},
		{"keygen over existing key", []string{"keygen", "--output-prefix", filepath.Join(s.dir, "cosign")}, nil, exitKey, "refusing to overwrite"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			stdin := s.up.Password + "\n"
			for k, v := range c.env {
				if k == "stdin" {
					stdin = v
				} else {
					t.Setenv(k, v)
				}
			}
			r := p7(t, stdin, c.args...)
			if r.code != c.code || !strings.Contains(r.stderr, c.want) {
				t.Fatalf("want exit %d with %q, got %v", c.code, c.want, r)
			}
			if lines := strings.Count(strings.TrimSpace(r.stderr[strings.LastIndex(r.stderr, "p7bundle: "):]), "\n"); lines != 0 {
				t.Errorf("error is not one line: %q", r.stderr)
			}
			for _, secret := range []string{s.up.Password, testKeyPassword} {
				if strings.Contains(r.stdout+r.stderr, secret) {
					t.Errorf("output contains a password")
				}
			}
			if c.args[0] == "build" {
				o := c.args[indexOf(c.args, "-o")+1]
				if _, err := os.Stat(o); err == nil {
					t.Errorf("failed build left %s", o)
				}
				if left, _ := filepath.Glob(filepath.Join(s.dir, ".*")); len(left) != 0 {
					t.Errorf("failed build left temp files %v", left)
				}
			}
		})
	}

	// One overwrite rule: an existing bundle is replaced only with --force,
	// and -o naming a directory is refused before anything is written.
	before := mustRead(t, good)
	if r := s.build(t, good); r.code != exitOutput || !strings.Contains(r.stderr, good+": file already exists (--force replaces it)") || !bytes.Equal(mustRead(t, good), before) {
		t.Errorf("build over an existing bundle: %v", r)
	}
	dir := filepath.Join(s.dir, "a-directory")
	os.MkdirAll(dir, 0o755)
	if r := s.build(t, dir); r.code != exitOutput || !strings.Contains(r.stderr, dir+": it is a directory") {
		t.Errorf("build -o DIR: %v", r)
	}
	if left, _ := filepath.Glob(dir + ".*"); len(left) != 0 {
		t.Errorf("build -o DIR left %v", left)
	}
	var built buildReport
	if r := s.build(t, good, "--force", "--json"); r.code != 0 || json.Unmarshal([]byte(r.stdout), &built) != nil ||
		built.Bundle != good || built.Digest != "sha256:"+sha256File(t, good) || built.Provenance != good+bundle.ProvenanceSuffix || built.Images == 0 {
		t.Errorf("build --force --json over an existing bundle: %v", r)
	}
	if r := p7(t, "", "verify", good, "--key", s.pub); r.code != 0 {
		t.Errorf("the bundle --force wrote: %v", r)
	}
	if r := p7(t, "", "values", good, "--registry", "reg.corp", "-o", "-"); r.code != exitUsage || !strings.Contains(r.stderr, "-o -") {
		t.Errorf("values -o -: %v", r)
	}
}

func replaceFlag(args []string, flag, value string) []string {
	out := append([]string(nil), args...)
	out[indexOf(out, flag)+1] = value
	return out
}

func indexOf(args []string, s string) int {
	for i, a := range args {
		if a == s {
			return i
		}
	}
	panic("no " + s)
}

func entryNames(t *testing.T, path string) []string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dec, err := zstd.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Close()
	tr := tar.NewReader(dec)
	var names []string
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return names
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, h.Name)
	}
}

func countPrefix(names []string, prefix string) int {
	n := 0
	for _, s := range names {
		if strings.HasPrefix(s, prefix) {
			n++
		}
	}
	return n
}

func sha256File(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path + ".sha256")
	if err != nil {
		t.Fatal(err)
	}
	return strings.Fields(string(b))[0]
}

// assertSecretsContained walks dir: files named in holders must be mode
// 0600; every other file must not contain any of the secrets.
func assertSecretsContained(t *testing.T, dir string, secrets []string, holders ...string) {
	t.Helper()
	allowed := map[string]bool{}
	for _, h := range holders {
		allowed[h] = true
	}
	checked := 0
	filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err != nil || !info.Mode().IsRegular() || info.Size() > 64<<20 {
			return nil
		}
		if allowed[filepath.Base(p)] {
			if info.Mode().Perm() != 0o600 {
				t.Errorf("%s holds secrets with mode %v", p, info.Mode().Perm())
			}
			return nil
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return nil
		}
		checked++
		for _, s := range secrets {
			if s != "" && bytes.Contains(data, []byte(s)) {
				t.Errorf("%s contains a secret", p)
			}
		}
		return nil
	})
	if checked == 0 {
		t.Errorf("no file checked under %s", dir)
	}
}
