package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
	"oras.land/oras-go/v2/registry"

	"github.com/p7bundle/p7bundle/bundle"
	"github.com/p7bundle/p7bundle/internal/testing/faultproxy"
	"github.com/p7bundle/p7bundle/internal/testing/testenv"
	"github.com/p7bundle/p7bundle/internal/testing/testregistry"
	"github.com/p7bundle/p7bundle/mirror"
)

// faultyFront puts a fault-injecting proxy (10 % of requests) in front of reg.
func faultyFront(t *testing.T, reg *testregistry.Registry, seed int64) *faultproxy.Proxy {
	t.Helper()
	p, err := faultproxy.Start(faultproxy.Options{Target: reg.URL(), Rate: 0.10, Seed: seed, Transport: reg.HTTPClient().Transport})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// TestFlakyNetwork: 500/502/503/429 and mid-body resets on ~10 % of
// requests, for build (pulling) and push; both finish with the right digests.
func TestFlakyNetwork(t *testing.T) {
	s := startSite(t)
	for seed := int64(0); seed < int64(faultScale()); seed++ {
		t.Run("seed "+strconv.FormatInt(seed, 10), func(t *testing.T) { flakyRun(t, s, seed) })
	}
}

func flakyRun(t *testing.T, s *site, seed int64) {
	up := faultyFront(t, s.up.Registry, 11+seed)
	out := filepath.Join(s.dir, "flaky.tar.zst")
	r := p7(t, s.up.Password+"\n", "build", "--chart", testenv.FixtureChart(), "--key", s.key, "-o", out,
		"--mirror", "registry.pseven.io="+up.Host, "--plain-http", "--username", s.up.Username, "--password-stdin")
	if r.code != 0 {
		t.Fatalf("build through a flaky network: %v", r)
	}
	retries := regexp.MustCompile(`(\d+) retries`).FindStringSubmatch(r.stderr)
	t.Logf("build: %d requests, %d faults injected (%d 5xx, %d 429, %d resets), build reported %v retries",
		up.Requests.Load(), up.Injected(), up.Status5xx.Load(), up.Status429.Load(), up.Resets.Load(), retries)
	if up.Injected() == 0 {
		t.Fatal("no fault was injected")
	}
	var m bundle.Manifest
	if err := json.Unmarshal([]byte(p7(t, "", "inspect", out, "--json").stdout), &m); err != nil {
		t.Fatal(err)
	}
	for _, img := range m.Images {
		want := s.up.Digests[img.Ref]
		if img.Digest.String() != want && img.SourceDigest.String() != want {
			t.Errorf("%s: digest %s, upstream %s", img.Ref, img.Digest, want)
		}
	}
	if r := p7(t, "", "verify", out, "--key", s.pub); r.code != 0 {
		t.Fatalf("verify: %v", r)
	}

	site := startSiteRegistry(t)
	front := faultyFront(t, site, 1000+seed)
	r = p7(t, site.Password+"\n", "push", out, "--key", s.pub, "--registry", front.Host, "--plain-http",
		"--registry-username", site.Username, "--registry-password-stdin", "--json")
	if r.code != 0 {
		t.Fatalf("push through a flaky network: %v", r)
	}
	var res mirror.PushResult
	if err := json.Unmarshal([]byte(r.stdout), &res); err != nil {
		t.Fatalf("push --json: %v\n%s", err, r.stdout)
	}
	t.Logf("push: %d requests, %d faults injected (%d 5xx, %d 429, %d resets), %d blob uploads retried",
		front.Requests.Load(), front.Injected(), front.Status5xx.Load(), front.Status429.Load(), front.Resets.Load(), res.Retried)
	if front.Injected() == 0 {
		t.Fatal("no fault was injected during the push")
	}
	client, err := mirror.NewClient(mirror.RegistryOptions{CAFile: site.CAFile, Username: site.Username, Password: site.Password})
	if err != nil {
		t.Fatal(err)
	}
	for _, img := range res.Images {
		ref := site.Host + strings.TrimPrefix(img.Target, front.Host)
		if err := resolveDigest(client, ref, img.Digest); err != nil {
			t.Error(err)
		}
	}
	if len(res.Images) != len(m.Images) {
		t.Errorf("pushed %d of %d images", len(res.Images), len(m.Images))
	}
}

// TestTamperedBundleNeverTagged: tampered variants fail verify and push,
// install fails on them too (at its signature check when the table of
// contents is hit, else at its push step — here it stops earlier, at the
// unreachable cluster), and the site registry holds no tag afterwards.
func TestTamperedBundleNeverTagged(t *testing.T) {
	s := startSite(t)
	good := filepath.Join(s.dir, "good.tar.zst")
	if r := s.build(t, good); r.code != 0 {
		t.Fatalf("build: %v", r)
	}
	other := filepath.Join(s.dir, "other.tar.zst")
	if r := s.build(t, other, "--exclude", "registry.pseven.io/pseven-files:6.47.4712"); r.code != 0 {
		t.Fatalf("build: %v", r)
	}
	otherKey := filepath.Join(s.dir, "mallory")
	if r := p7(t, "", "keygen", "--output-prefix", otherKey); r.code != 0 {
		t.Fatal(r)
	}
	data, sig := mustRead(t, good), mustRead(t, good+".sig")
	rng := rand.New(rand.NewSource(5))
	type variant struct {
		name      string
		data, sig []byte
	}
	var variants []variant
	// 200 flips, one in each of 200 equal slices of the file, the first
	// at byte 0 (the zstd frame header).
	flips := 200 * faultScale()
	for i := 0; i < flips; i++ {
		b := append([]byte(nil), data...)
		off := i * len(b) / flips
		if i > 0 {
			off += rng.Intn(max(len(b)/flips, 1))
		}
		b[off] ^= byte(1 << rng.Intn(8))
		variants = append(variants, variant{"flip@" + strconv.Itoa(off), b, sig})
	}
	variants = append(variants,
		variant{"last byte", append(append([]byte(nil), data[:len(data)-1]...), data[len(data)-1]^1), sig},
		variant{"truncated", data[:rng.Intn(len(data))], sig},
		variant{"appended tail", append(append([]byte(nil), data...), "tail"...), sig},
	)
	// Signed with another key: the bytes are good, the key is not ours.
	m := filepath.Join(s.dir, "mallory.tar.zst")
	args := s.buildArgs(m)
	args[indexOf(args, "--key")+1] = otherKey + ".key"
	if r := p7(t, s.up.Password+"\n", args...); r.code != 0 {
		t.Fatalf("build with another key: %v", r)
	}
	variants = append(variants, variant{"signed by another key", mustRead(t, m), mustRead(t, m+".sig")})

	kubeconfig := unreachableKubeconfig(t, s.dir)
	p := filepath.Join(s.dir, "tampered.tar.zst")
	// The .sig beside the file is what verify (and stock cosign) checks;
	// push and install check the signed table of contents inside it.
	os.WriteFile(p, data, 0o644)
	os.WriteFile(p+".sig", mustRead(t, other+".sig"), 0o644)
	if r := p7(t, "", "verify", p, "--key", s.pub); r.code != exitVerify {
		t.Errorf("signature of another bundle: verify: %v", r)
	}
	atStart, void := 0, 0
	signed := zstdDecode(data)
	for i, v := range variants {
		prefix := "--registry-prefix=t" + strconv.Itoa(i)
		os.WriteFile(p, v.data, 0o644)
		os.WriteFile(p+".sig", v.sig, 0o644)
		if r := p7(t, "", "verify", p, "--key", s.pub); r.code != exitVerify {
			t.Errorf("%s: verify: %v", v.name, r)
		}
		// A few zstd bits do not change the output: push, which checks
		// what it reads and not the file's bytes, may carry those (exactly
		// the signed content); verify refused them above.
		if out := zstdDecode(v.data); out != nil && bytes.Equal(out, signed) {
			void++
			continue
		}
		// Each variant pushes into an empty registry of its own. Blobs an
		// earlier variant uploaded are not read again (a re-install reads
		// only what the registry lacks), and a registry that shares blobs
		// across repositories (go-containerregistry's) would hold, intact,
		// the very blob this variant tampered with.
		reg, err := testregistry.Start(context.Background(), testregistry.Options{Username: "site-admin", Password: "site-pa55-" + t.Name()[:4], TLS: true})
		if err != nil {
			t.Fatal(err)
		}
		if r := p7(t, reg.Password+"\n", pushArgs(reg, p, s.pub, prefix)...); r.code != exitVerify {
			t.Errorf("%s: push: %v", v.name, r)
		}
		ir := p7(t, reg.Password+"\n", "install", p, "--key", s.pub, "--registry", reg.Host, "--ca-file", reg.CAFile,
			"--registry-username", reg.Username, "--registry-password-stdin", "--kubeconfig", kubeconfig,
			"-o", filepath.Join(s.dir, "values.yaml"), "--log-file", filepath.Join(s.dir, "install.log"), prefix)
		switch {
		case ir.code == exitVerify:
			atStart++
		case ir.code == exitPreflight && strings.Contains(ir.stderr, "preflight failed"):
		default:
			t.Errorf("%s: install: %v", v.name, ir)
		}
		if tags := allTags(t, reg); len(tags) != 0 {
			t.Errorf("%s: tampered bundle left tags: %v", v.name, tags)
		}
		reg.Stop()
	}
	if void > len(variants)/20 {
		t.Errorf("%d of %d flips left the decoded bytes unchanged: more than zstd's slack explains", void, len(variants))
	}
	t.Logf("%d tampered variants rejected by verify; %d decode to the signed bytes; the others rejected by push, install refused %d at its signature check, the rest never reached a tag; no site registry holds a tag", len(variants), void, atStart)
}

// zstdDecode is the whole decompressed stream, or nil if it does not decode.
func zstdDecode(b []byte) []byte {
	zr, err := zstd.NewReader(bytes.NewReader(b))
	if err != nil {
		return nil
	}
	defer zr.Close()
	out, err := io.ReadAll(zr)
	if err != nil {
		return nil
	}
	return out
}

func resolveDigest(client *mirror.Client, ref, want string) error {
	r, err := registry.ParseReference(ref)
	if err != nil {
		return err
	}
	repo, err := client.Repository(r)
	if err != nil {
		return err
	}
	desc, err := repo.Resolve(context.Background(), r.Reference)
	if err != nil {
		return fmt.Errorf("%s: %v", ref, err)
	}
	if desc.Digest.String() != want {
		return fmt.Errorf("%s resolves to %s, bundle says %s", ref, desc.Digest, want)
	}
	return nil
}

// faultScale multiplies trial counts: `make faults` sets P7BUNDLE_FAULT_SCALE.
func faultScale() int {
	n, err := strconv.Atoi(os.Getenv("P7BUNDLE_FAULT_SCALE"))
	if err != nil || n < 1 {
		return 1
	}
	return n
}

// unreachableKubeconfig writes a kubeconfig whose API server nothing
// listens for: commands get past their local checks and fail at the dial.
func unreachableKubeconfig(t *testing.T, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "unreachable.kubeconfig")
	if err := os.WriteFile(path, []byte(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
`), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
