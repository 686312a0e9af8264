package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/p7bundle/p7bundle/internal/testing/faultproxy"
	"github.com/p7bundle/p7bundle/internal/testing/storagefront"
	"github.com/p7bundle/p7bundle/internal/testing/testenv"
	"github.com/p7bundle/p7bundle/internal/testing/testregistry"
	"github.com/p7bundle/p7bundle/manifests"
	"github.com/p7bundle/p7bundle/mirror"
)

// monthBundles builds last month's bundle, this month's, and this month's
// differential against last month's.
func monthBundles(t *testing.T, s *site) (v1, v2, delta string) {
	t.Helper()
	v1, v2chart := monthPair(t, s)
	v2 = filepath.Join(s.dir, "pseven-2023.10.30.tar.zst")
	delta = filepath.Join(s.dir, "pseven-2023.10.30-delta.tar.zst")
	if r := p7(t, s.up.Password+"\n", append(s.buildArgs(v2), "--chart", v2chart)...); r.code != 0 {
		t.Fatalf("build v2: %v", r)
	}
	if r := p7(t, s.up.Password+"\n", append(s.buildArgs(delta), "--chart", v2chart, "--base", v1)...); r.code != 0 {
		t.Fatalf("build delta: %v", r)
	}
	return v1, v2, delta
}

// egressLines are the delegation lines of a run's log.
func egressLines(r result) []string {
	var out []string
	for _, l := range strings.Split(r.stderr, "\n") {
		if strings.HasPrefix(l, "egress: ") {
			out = append(out, l)
		}
	}
	return out
}

// The site registry delegates, as real ones do: its token service runs on
// another port, its blob reads are redirected to object storage. install
// and push follow exactly what the site registry names, say so once, keep
// credentials from the storage, and refuse anything else.
func TestRegistryDelegations(t *testing.T) {
	s := startSite(t)
	v1, v2, delta := monthBundles(t, s)
	m2 := manifestOf(t, v2)

	t.Run("token service on another port", func(t *testing.T) {
		reg, err := testregistry.Start(context.Background(), testregistry.Options{
			Username: "robot$pseven", Password: "t0ken-pa55-" + t.Name()[:4], TLS: true, Token: true,
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { reg.Stop() })
		push := func(bundle string, extra ...string) result {
			t.Helper()
			r := p7(t, reg.Password+"\n", pushArgs(reg, bundle, s.pub, extra...)...)
			if strings.Contains(r.stdout+r.stderr, reg.Password) {
				t.Error("registry password in output")
			}
			return r
		}
		line := "egress: token service " + reg.Token.Host + ", named by " + reg.Host

		r := push(v1, "--strict-egress")
		want := "refusing to dial " + reg.Token.Host + ", the token service named by " + reg.Host +
			" (--strict-egress; to allow it, add --allow-endpoint " + reg.Token.Host + ")"
		if r.code != exitRegistry || !strings.Contains(r.stderr, want) || len(egressLines(r)) != 0 {
			t.Fatalf("strict push: %v\nwant: %s", r, want)
		}
		t.Logf("--strict-egress: %s", lastLine(r.stderr))
		if tags := allTags(t, reg); len(tags) != 0 {
			t.Fatalf("the refused push tagged %v", tags)
		}
		if r := push(v1, "--strict-egress", "--allow-endpoint", reg.Token.Host); r.code != 0 || len(egressLines(r)) != 0 {
			t.Fatalf("strict push with --allow-endpoint: %v", r)
		}
		for _, run := range []struct {
			name   string
			bundle string
		}{{"re-push", v1}, {"differential push", delta}, {"next month's full push", v2}, {"its re-push", v2}} {
			r := push(run.bundle)
			if got := egressLines(r); r.code != 0 || len(got) != 1 || got[0] != line {
				t.Fatalf("%s: %v\nwant exactly one line: %s", run.name, r, line)
			}
			if run.name == "differential push" {
				t.Logf("delegation logged: %s", line)
			}
		}
		assertPulls(t, reg, m2)

		// Basic credentials went to the realm the registry named and were
		// good: every token request carried them, none was refused.
		basic := "Basic " + base64.StdEncoding.EncodeToString([]byte(reg.Username+":"+reg.Password))
		reqs := reg.Token.Requests()
		for _, q := range reqs {
			if q.Header.Get("Authorization") != basic || q.Status != http.StatusOK {
				t.Fatalf("token request %v answered %d", q.Scopes, q.Status)
			}
		}
		t.Logf("%d token requests", len(reqs))
	})

	t.Run("token auth: tokens expire within the push, wrong password", func(t *testing.T) {
		// distribution accepts a token up to a minute past its exp (clock
		// skew leeway): a TTL of -58 s gives tokens that live 1 to 2 seconds.
		reg, err := testregistry.Start(context.Background(), testregistry.Options{
			Username: "robot$pseven+ci", Password: "t0ken-pa55-short", TLS: true, Token: true, TokenTTL: -58 * time.Second,
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { reg.Stop() })
		// 60 ms a request, one image at a time: the push outlives many tokens.
		slow, err := faultproxy.Start(faultproxy.Options{Target: reg.URL(), Transport: reg.HTTPClient().Transport, Delay: 60 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { slow.Close() })
		args := []string{"push", v2, "--key", s.pub, "--registry", slow.Host, "--plain-http", "--ca-file", reg.CAFile,
			"--registry-username", reg.Username, "--registry-password-stdin", "--jobs", "1", "--json"}
		started := time.Now()
		r := p7(t, reg.Password+"\n", args...)
		took := time.Since(started)
		if r.code != 0 {
			t.Fatalf("push with short-lived tokens: %v", r)
		}
		var rep struct {
			BytesPushed int64 `json:"bytesPushed"`
		}
		json.Unmarshal([]byte(r.stdout), &rep)
		var total int64
		for _, b := range manifestOf(t, v2).Blobs {
			total += b.Size
		}
		scopes := map[string]int{}
		for _, q := range reg.Token.Requests() {
			scopes[strings.Join(q.Scopes, " ")]++
		}
		again := 0
		for _, n := range scopes {
			again += n - 1
		}
		t.Logf("push with 1-2 s tokens took %v: %d token requests for %d scopes; %d bytes pushed of %d", took.Round(time.Millisecond), len(reg.Token.Requests()), len(scopes), rep.BytesPushed, total)
		if took < 3*time.Second || again == 0 {
			t.Errorf("the push (%v) never needed a fresh token for a scope it had: the test proves nothing", took)
		}
		if rep.BytesPushed > total {
			t.Errorf("pushed %d bytes of a %d-byte bundle: a blob went twice", rep.BytesPushed, total)
		}
		assertPulls(t, reg, m2)

		// A wrong password: exit 4, one line naming the registry.
		r = p7(t, "wrong\n", pushArgs(reg, v1, s.pub)...)
		if r.code != exitRegistry || !strings.HasPrefix(lastLine(r.stderr), "p7bundle: registry "+reg.Host) || !strings.Contains(lastLine(r.stderr), reg.Token.Host) {
			t.Errorf("wrong password: %v", r)
		}
		t.Logf("wrong password: %s", lastLine(r.stderr))
	})

	t.Run("token auth: mounts with and without pull on the source", func(t *testing.T) {
		refused := "refused to mount"
		// push pushes each bundle in turn into a fresh registry; it returns
		// the registry and the last push's report and stderr.
		push := func(oneRepository bool, bundles ...string) (*testregistry.Registry, mirror.PushResult, string) {
			t.Helper()
			reg, err := testregistry.Start(context.Background(), testregistry.Options{
				Username: "robot$pseven+ci", Password: "t0ken-pa55-mount", TLS: true, Token: true, TokenOneRepository: oneRepository,
			})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { reg.Stop() })
			var r result
			for _, b := range bundles {
				if r = p7(t, reg.Password+"\n", pushArgs(reg, b, s.pub, "--json")...); r.code != 0 {
					t.Fatalf("push of %s (one repository per token: %v): %v", filepath.Base(b), oneRepository, r)
				}
			}
			var res mirror.PushResult
			if err := json.Unmarshal([]byte(r.stdout), &res); err != nil {
				t.Fatal(err)
			}
			assertPulls(t, reg, m2)
			return reg, res, r.stderr
		}
		_, full, fullLog := push(false, v2)
		reg, narrow, narrowLog := push(true, v2)
		t.Logf("pull granted on the source: %d blobs mounted, %d uploaded (%d bytes); not granted: %d mounted, %d uploaded (%d bytes)",
			full.BlobsMounted, full.BlobsPushed, full.BytesPushed, narrow.BlobsMounted, narrow.BlobsPushed, narrow.BytesPushed)
		if full.BlobsMounted == 0 {
			t.Fatal("no blob was mounted with full tokens: the test proves nothing")
		}
		// Each mount asked for the target and the source in one token.
		asked := 0
		for _, q := range reg.Token.Requests() {
			if strings.Count(strings.Join(q.Scopes, " "), "repository:") > 1 {
				asked++
			}
		}
		if asked == 0 {
			t.Fatal("no token request named two repositories: no mount was tried")
		}
		if narrow.BlobsMounted != 0 || narrow.BlobsPushed != full.BlobsPushed+full.BlobsMounted {
			t.Errorf("without pull on the source, every mount should become an upload: %+v", narrow)
		}
		if strings.Contains(fullLog, refused) || strings.Count(narrowLog, refused) != 1 {
			t.Errorf("want one %q line, only without pull on the source:\n%s\n---\n%s", refused, fullLog, narrowLog)
		}
		// A differential bundle's base blobs are not in it: each is read from
		// the repository that holds it and uploaded where it is missing.
		_, delta, deltaLog := push(true, v1, delta)
		if delta.BlobsMounted != 0 || !strings.Contains(deltaLog, refused) {
			t.Errorf("differential push without pull on the source: %+v\n%s", delta, deltaLog)
		}
		t.Logf("differential push without pull on the source: %d blobs uploaded (%d bytes, %d read from the bundle)", delta.BlobsPushed, delta.BytesPushed, delta.BytesRead)
	})

	t.Run("token auth: build pulls from a token-auth source registry", func(t *testing.T) {
		// The vendor's registry as a token-auth one, tokens living 1-2 s, and
		// 150 ms a request, --jobs 1 (manifests 4 at a time): the build
		// outlives many tokens.
		up, err := testenv.StartUpstreamWith(context.Background(), testenv.FixtureChart(), testregistry.Options{
			Username: "customer-1234", Password: "vend0r-t0ken", TLS: true, Token: true, TokenTTL: -58 * time.Second,
			TokenRealmHost: "localhost", Dir: filepath.Join(t.TempDir(), "upstream"),
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { up.Stop() })
		slow, err := faultproxy.Start(faultproxy.Options{Target: up.URL(), Transport: up.HTTPClient().Transport, Delay: 150 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { slow.Close() })
		out := filepath.Join(t.TempDir(), "token.tar.zst")
		// The realm names localhost (see TokenRealmHost), so does the mirror:
		// oras-go sends credentials to a loopback token service only under
		// the name the registry is reached by.
		_, port, _ := net.SplitHostPort(slow.Host)
		mirrorHost := net.JoinHostPort("localhost", port)
		build := func(password string) result {
			return p7(t, password+"\n", "build", "--chart", testenv.FixtureChart(), "--key", s.key, "-o", out,
				"--mirror", manifests.DefaultSourceRegistry+"="+mirrorHost, "--plain-http", "--ca-file", up.CAFile,
				"--username", up.Username, "--password-stdin", "--jobs", "1")
		}
		started := time.Now()
		if r := build(up.Password); r.code != 0 {
			t.Fatalf("build from a token-auth registry: %v", r)
		}
		took := time.Since(started)
		if r := p7(t, "", "verify", out, "--key", s.pub); r.code != 0 {
			t.Fatalf("verify: %v", r)
		}
		if got, want := len(manifestOf(t, out).Images), len(up.Images)+1; got != want { // + the doctor probe
			t.Errorf("bundle holds %d images, want %d", got, want)
		}
		basic := "Basic " + base64.StdEncoding.EncodeToString([]byte(up.Username+":"+up.Password))
		scopes := map[string]int{}
		for _, q := range up.Token.Requests() {
			if q.Header.Get("Authorization") != basic || q.Status != http.StatusOK {
				t.Fatalf("token request %v answered %d", q.Scopes, q.Status)
			}
			scopes[strings.Join(q.Scopes, " ")]++
		}
		again := 0
		for _, n := range scopes {
			again += n - 1
		}
		t.Logf("build with 1-2 s tokens took %v: %d token requests for %d scopes", took.Round(time.Millisecond), len(up.Token.Requests()), len(scopes))
		if again == 0 {
			t.Errorf("the build (%v) never needed a fresh token for a scope it had: the test proves nothing", took)
		}

		// A wrong password: exit 4, one line naming the registry and the
		// token service, nothing written.
		os.Remove(out)
		r := build("wrong")
		if last := lastLine(r.stderr); r.code != exitRegistry || !strings.Contains(last, mirrorHost) || !strings.Contains(last, up.Token.Host) {
			t.Errorf("build with a wrong password: %v", r)
		}
		if _, err := os.Stat(out); !os.IsNotExist(err) {
			t.Errorf("a failed build left %s", out)
		}
		t.Logf("wrong password: %s", lastLine(r.stderr))

		// Reached as 127.0.0.1, the registry's realm at localhost is a
		// loopback token service under another name: refused, exit 4.
		r = p7(t, up.Password+"\n", "build", "--chart", testenv.FixtureChart(), "--key", s.key, "-o", out,
			"--mirror", manifests.DefaultSourceRegistry+"="+slow.Host, "--plain-http", "--ca-file", up.CAFile,
			"--username", up.Username, "--password-stdin")
		if last := lastLine(r.stderr); r.code != exitRegistry || !strings.Contains(last, `bearer realm host "localhost"`) {
			t.Errorf("build whose realm is loopback under another name: %v", r)
		}
		t.Logf("realm guard: %s", lastLine(r.stderr))
	})

	t.Run("blob storage redirects", func(t *testing.T) {
		reg := startSiteRegistry(t)
		front := startFront(t, reg, false)
		push := func(f *storagefront.Front, bundle string, extra ...string) result {
			t.Helper()
			return p7(t, reg.Password+"\n", append([]string{"push", bundle, "--key", s.pub, "--registry", f.Host, "--plain-http",
				"--registry-username", reg.Username, "--registry-password-stdin"}, extra...)...)
		}
		line := "egress: blob storage " + front.Storage + ", named by " + front.Host

		if r := push(front, v1); r.code != 0 {
			t.Fatalf("first install's push: %v", r)
		}
		// HTTPS to a registry that speaks plain HTTP says what to do.
		r := p7(t, reg.Password+"\n", "push", v1, "--key", s.pub, "--registry", front.Host, "--registry-username", reg.Username, "--registry-password-stdin")
		if r.code != exitRegistry || !strings.Contains(r.stderr, "use --plain-http") {
			t.Errorf("push over HTTPS to a plain-HTTP registry: %v", r)
		}
		before := front.Redirects.Load()
		r = push(front, v2, "--strict-egress")
		want := "refusing to dial " + front.Storage + ", the blob storage named by " + front.Host +
			" (--strict-egress; to allow it, add --allow-endpoint " + front.Storage + ")"
		if r.code != exitRegistry || !strings.Contains(r.stderr, want) {
			t.Fatalf("strict push over a redirecting registry: %v\nwant: %s", r, want)
		}
		t.Logf("--strict-egress: %s", lastLine(r.stderr))
		if front.Redirects.Load() == before {
			t.Fatal("the registry redirected no blob read: the test proves nothing")
		}
		if r := push(front, v2); r.code != 0 || strings.Join(egressLines(r), "\n") != line {
			t.Fatalf("next month's full push: %v\nwant exactly one line: %s", r, line)
		}
		t.Logf("delegation logged: %s", line)
		assertPulls(t, reg, m2)

		// Next month as a differential bundle, at a site holding last month.
		reg = startSiteRegistry(t)
		front, hop := startFront(t, reg, false), startFront(t, reg, true)
		line = "egress: blob storage " + front.Storage + ", named by " + front.Host
		if r := push(front, v1); r.code != 0 {
			t.Fatalf("first install's push: %v", r)
		}
		// A storage that redirects again, to a host the registry never named.
		r = push(hop, delta)
		if r.code != exitRegistry || !strings.Contains(r.stderr, "refusing to dial "+hop.Elsewhere+", the blob storage named by "+hop.Storage+", which is not the site registry") {
			t.Fatalf("second hop: %v", r)
		}
		if n := len(hop.Requests(hop.Elsewhere)); n != 0 || len(hop.Requests(hop.Storage)) == 0 {
			t.Fatalf("the second hop: %d requests reached its target, %d the storage", n, len(hop.Requests(hop.Storage)))
		}
		t.Logf("second hop: %s", lastLine(r.stderr))
		if r := push(front, delta); r.code != 0 || strings.Join(egressLines(r), "\n") != line {
			t.Fatalf("next month's differential push: %v\nwant exactly one line: %s", r, line)
		}
		assertPulls(t, reg, m2)

		// Credentials stay with the registry: a presigned URL carries its own.
		for _, f := range []*storagefront.Front{front, hop} {
			for _, q := range f.Requests(f.Storage) {
				if a := q.Header.Get("Authorization"); a != "" {
					t.Fatalf("%s %s reached the storage with Authorization %.10s…", q.Method, q.Path, a)
				}
			}
		}
		t.Logf("%d storage requests, none with Authorization", len(front.Requests(front.Storage))+len(hop.Requests(hop.Storage)))
	})
}

func startFront(t *testing.T, reg *testregistry.Registry, secondHop bool) *storagefront.Front {
	t.Helper()
	f, err := storagefront.Start(storagefront.Options{
		Target: reg.URL(), Transport: reg.HTTPClient().Transport, StorageDir: filepath.Join(reg.Dir, "storage"), SecondHop: secondHop,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Close)
	return f
}
