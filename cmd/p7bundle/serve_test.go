package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"golang.org/x/crypto/bcrypt"

	"github.com/p7bundle/p7bundle/bundle"
	"github.com/p7bundle/p7bundle/internal/testing/testenv"
	"github.com/p7bundle/p7bundle/internal/testing/testregistry"
	"github.com/p7bundle/p7bundle/mirror"
)

// served is a `p7bundle serve` process.
type served struct {
	cmd    *exec.Cmd
	addr   string
	stderr *syncBuffer
	stdout *syncBuffer
	done   chan error
}

// startServe runs serve as a real process and waits for its address; it
// fails the test unless serve starts.
func startServe(t *testing.T, args ...string) *served {
	t.Helper()
	s, err := tryServe(t, args...)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func tryServe(t *testing.T, args ...string) (*served, error) {
	t.Helper()
	self, _ := os.Executable()
	cmd := exec.Command(self, append([]string{"serve"}, args...)...)
	cmd.Env = os.Environ()
	return runServe(t, cmd)
}

// runServe starts cmd, a serve command line, and waits for its address.
func runServe(t *testing.T, cmd *exec.Cmd) (*served, error) {
	t.Helper()
	cmd.Env = append(cmd.Env, asCLI+"=1")
	errPipe, _ := cmd.StderrPipe()
	s := &served{cmd: cmd, stderr: &syncBuffer{}, stdout: &syncBuffer{}, done: make(chan error, 1)}
	cmd.Stdout = s.stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	addrc := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(errPipe)
		re := regexp.MustCompile(`at https?://(\S+)/v2/`)
		for sc.Scan() {
			s.stderr.Write([]byte(sc.Text() + "\n"))
			if m := re.FindStringSubmatch(sc.Text()); m != nil {
				addrc <- m[1]
			}
		}
		close(addrc)
		s.done <- cmd.Wait()
	}()
	t.Cleanup(func() { cmd.Process.Kill() })
	select {
	case a, ok := <-addrc:
		if !ok {
			return nil, fmt.Errorf("serve did not start: %v\n%s", <-s.done, s.stderr)
		}
		s.addr = a
		return s, nil
	case <-time.After(time.Minute):
		return nil, fmt.Errorf("serve did not start in a minute:\n%s", s.stderr)
	}
}

// syncBuffer is written by the process's copier while the test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func httpGet(t *testing.T, method, url string, header ...string) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequest(method, url, nil)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: body: %v", method, url, err)
	}
	return resp, b
}

// The bundle as a registry: the API as the spec has it, and the tools
// people use (crane, skopeo, oras) see exactly the bundle's digests.
func TestServe(t *testing.T) {
	s := startSite(t)
	out := filepath.Join(s.dir, "pseven-2023.09.25.tar.zst")
	if r := s.build(t, out); r.code != 0 {
		t.Fatalf("build: %v", r)
	}
	m := manifestOf(t, out)
	srv := startServe(t, out, "--key", s.pub, "--addr", "127.0.0.1:0", "--json")
	base := "http://" + srv.addr

	type image struct{ repo, tag, ref string }
	var images []image
	repos := map[string]bool{}
	for _, img := range m.ContainerImages() {
		tg, err := mirror.TargetFor(img.Ref, "pseven")
		if err != nil {
			t.Fatal(err)
		}
		images = append(images, image{tg.Repository, tg.Tag, srv.addr + "/" + tg.Repository + ":" + tg.Tag})
		repos[tg.Repository] = true
	}
	digestOf := map[string]digest.Digest{}
	for i, img := range m.ContainerImages() {
		digestOf[images[i].ref] = img.Digest
	}

	// The API itself.
	if resp, _ := httpGet(t, "GET", base+"/v2/"); resp.StatusCode != 200 || resp.Header.Get("Docker-Distribution-API-Version") != "registry/2.0" {
		t.Errorf("/v2/: %d %v", resp.StatusCode, resp.Header)
	}
	var catalog struct{ Repositories []string }
	var all []string
	next := "/v2/_catalog?n=3"
	for next != "" {
		resp, b := httpGet(t, "GET", base+next)
		json.Unmarshal(b, &catalog)
		all = append(all, catalog.Repositories...)
		next = ""
		if l := resp.Header.Get("Link"); l != "" {
			next = strings.TrimSuffix(strings.TrimPrefix(strings.Split(l, ";")[0], "<"), ">")
		}
	}
	if len(all) != len(repos) {
		t.Errorf("catalog (paginated by 3): %v, want the %d repositories %v", all, len(repos), repos)
	}
	img := images[0]
	want := digestOf[img.ref]
	resp, b := httpGet(t, "GET", base+"/v2/"+img.repo+"/tags/list")
	if !strings.Contains(string(b), `"`+img.tag+`"`) {
		t.Errorf("tags/list of %s: %s", img.repo, b)
	}
	resp, b = httpGet(t, "HEAD", base+"/v2/"+img.repo+"/manifests/"+img.tag)
	if resp.StatusCode != 200 || resp.Header.Get("Docker-Content-Digest") != want.String() || len(b) != 0 || resp.ContentLength <= 0 {
		t.Errorf("HEAD manifest: %d %v", resp.StatusCode, resp.Header)
	}
	resp, manifest := httpGet(t, "GET", base+"/v2/"+img.repo+"/manifests/"+want.String())
	if resp.StatusCode != 200 || digest.FromBytes(manifest) != want {
		t.Fatalf("GET manifest by digest: %d, %s", resp.StatusCode, digest.FromBytes(manifest))
	}
	var layer struct {
		Layers []struct {
			Digest digest.Digest
			Size   int64
		}
	}
	json.Unmarshal(manifest, &layer)
	if len(layer.Layers) == 0 {
		t.Fatalf("manifest %s has no layers (an index?): %s", want, manifest)
	}
	l := layer.Layers[0]
	_, whole := httpGet(t, "GET", base+"/v2/"+img.repo+"/blobs/"+l.Digest.String())
	if digest.FromBytes(whole) != l.Digest {
		t.Fatalf("blob %s: got %s", l.Digest, digest.FromBytes(whole))
	}
	resp, part := httpGet(t, "GET", base+"/v2/"+img.repo+"/blobs/"+l.Digest.String(), "Range", "bytes=10-99")
	if resp.StatusCode != 206 || string(part) != string(whole[10:100]) || resp.Header.Get("Content-Range") != fmt.Sprintf("bytes 10-99/%d", l.Size) {
		t.Errorf("Range: %d %q, %d bytes", resp.StatusCode, resp.Header.Get("Content-Range"), len(part))
	}
	if resp, _ := httpGet(t, "GET", base+"/v2/"+img.repo+"/blobs/sha256:"+strings.Repeat("0", 64)); resp.StatusCode != 404 {
		t.Errorf("unknown blob: %d", resp.StatusCode)
	}
	// A repository answers for its own content only.
	if other := images[len(images)-1]; other.repo != img.repo {
		if resp, _ := httpGet(t, "GET", base+"/v2/"+other.repo+"/manifests/"+want.String()); resp.StatusCode != 404 {
			t.Errorf("%s served %s's manifest: %d", other.repo, img.repo, resp.StatusCode)
		}
	}
	for _, method := range []string{"PUT", "POST", "PATCH", "DELETE"} {
		resp, b := httpGet(t, method, base+"/v2/"+img.repo+"/blobs/uploads/")
		if resp.StatusCode != 405 || !strings.Contains(string(b), `"code":"UNSUPPORTED"`) {
			t.Errorf("%s: %d %s", method, resp.StatusCode, b)
		}
	}
	resp, b = httpGet(t, "GET", base+"/v2/"+img.repo+"/referrers/"+want.String())
	if resp.StatusCode != 200 || !strings.Contains(string(b), `"manifests":[]`) {
		t.Errorf("referrers: %d %s", resp.StatusCode, b)
	}

	// Stock tools see the bundle's digests.
	crane, err := testenv.Tool("crane")
	if err != nil {
		t.Fatal(err)
	}
	oras, err := testenv.Tool("oras")
	if err != nil {
		t.Fatal(err)
	}
	tool := func(name string, args ...string) string {
		t.Helper()
		out, err := exec.Command(name, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("%s %v: %v\n%s", filepath.Base(name), args, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	for _, img := range images {
		if got := tool(crane, "digest", "--insecure", img.ref); got != digestOf[img.ref].String() {
			t.Errorf("crane digest %s = %s, bundle %s", img.ref, got, digestOf[img.ref])
		}
	}
	var inspect struct{ Digest string }
	json.Unmarshal([]byte(tool("skopeo", "inspect", "--tls-verify=false", "docker://"+img.ref)), &inspect)
	if inspect.Digest != want.String() {
		t.Errorf("skopeo inspect %s: %s, bundle %s", img.ref, inspect.Digest, want)
	}
	var desc struct{ Digest string }
	json.Unmarshal([]byte(tool(oras, "manifest", "fetch", "--plain-http", "--descriptor", img.ref)), &desc)
	if desc.Digest != want.String() {
		t.Errorf("oras manifest fetch %s: %s, bundle %s", img.ref, desc.Digest, want)
	}
	tarball := filepath.Join(s.dir, "pulled.tar")
	tool(crane, "pull", "--insecure", img.ref, tarball)
	if st, err := os.Stat(tarball); err != nil || st.Size() == 0 {
		t.Errorf("crane pull: %v", err)
	}
	// Copied on into a registry: every image lands with its digest.
	reg, err := testregistry.Start(context.Background(), testregistry.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { reg.Stop() })
	for _, img := range images {
		dst := reg.Host + "/mirror/" + img.repo + ":" + img.tag
		tool(crane, "copy", "--insecure", img.ref, dst)
		if got := tool(crane, "digest", "--insecure", dst); got != digestOf[img.ref].String() {
			t.Errorf("copied %s: digest %s, bundle %s", dst, got, digestOf[img.ref])
		}
	}
	tool("skopeo", "copy", "--src-tls-verify=false", "docker://"+img.ref, "oci:"+filepath.Join(s.dir, "skopeo-oci")+":x")

	// A pull-through cache of serve (the Harbor/Nexus proxy-cache pattern):
	// every image pulls through it with the bundle's digest.
	proxy, err := testregistry.Start(context.Background(), testregistry.Options{ProxyRemoteURL: base})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { proxy.Stop() })
	for _, img := range images {
		via := proxy.Host + "/" + img.repo + ":" + img.tag
		if got := tool(crane, "digest", "--insecure", via); got != digestOf[img.ref].String() {
			t.Errorf("through the proxy cache %s: digest %s, bundle %s", via, got, digestOf[img.ref])
		}
		tool(crane, "pull", "--insecure", via, filepath.Join(s.dir, "via-proxy.tar"))
	}

	// The access log: a JSON line per request.
	if !strings.Contains(srv.stdout.String(), `"method":"GET"`) {
		t.Errorf("no JSON access log:\n%.2000s", srv.stdout.String())
	}
	for _, line := range strings.Split(strings.TrimSpace(srv.stdout.String()), "\n")[:3] {
		var e mirror.AccessEntry
		if err := json.Unmarshal([]byte(line), &e); err != nil || e.Path == "" || e.Status == 0 {
			t.Errorf("access log line %q: %v", line, err)
		}
	}

	// A second serve on the same address: a clear error, exit 7.
	if r := p7(t, "", "serve", out, "--key", s.pub, "--addr", srv.addr); r.code != exitOutput || !strings.Contains(r.stderr, "serve --addr "+srv.addr) {
		t.Errorf("port taken: %v", r)
	}
	// Refused before serving: another key.
	other := filepath.Join(s.dir, "other")
	p7(t, "", "keygen", "--output-prefix", other)
	if r := p7(t, "", "serve", out, "--key", other+".pub", "--addr", "127.0.0.1:0"); r.code != exitVerify {
		t.Errorf("serve with another key: %v", r)
	}

	// SIGTERM: graceful, exit 0.
	srv.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-srv.done:
		if err != nil || !strings.Contains(srv.stderr.String(), "shutting down") {
			t.Errorf("after SIGTERM: %v\n%s", err, srv.stderr)
		}
	case <-time.After(time.Minute):
		t.Error("serve did not stop on SIGTERM")
	}
}

// With --htpasswd only its users are served; plain HTTP beyond loopback
// is said loudly.
func TestServeAuth(t *testing.T) {
	s := startSite(t)
	out := filepath.Join(s.dir, "pseven-2023.09.25.tar.zst")
	if r := s.build(t, out); r.code != 0 {
		t.Fatalf("build: %v", r)
	}
	hash, _ := bcrypt.GenerateFromPassword([]byte("reader-pw"), bcrypt.MinCost)
	htpasswd := filepath.Join(s.dir, "htpasswd")
	os.WriteFile(htpasswd, []byte("reader:"+string(hash)+"\n"), 0o600)
	srv := startServe(t, out, "--key", s.pub, "--addr", "0.0.0.0:0", "--htpasswd", htpasswd)
	if !strings.Contains(srv.stderr.String(), "WARNING: serving PLAIN HTTP") {
		t.Errorf("no warning for plain HTTP beyond loopback:\n%s", srv.stderr)
	}
	port := srv.addr[strings.LastIndex(srv.addr, ":"):]
	base := "http://127.0.0.1" + port
	if resp, _ := httpGet(t, "GET", base+"/v2/"); resp.StatusCode != 401 || !strings.Contains(resp.Header.Get("WWW-Authenticate"), "Basic") {
		t.Errorf("no credentials: %d %v", resp.StatusCode, resp.Header)
	}
	req, _ := http.NewRequest("GET", base+"/v2/_catalog", nil)
	req.SetBasicAuth("reader", "reader-pw")
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("with credentials: %v %v", resp, err)
	}
	resp.Body.Close()
	req.SetBasicAuth("reader", "wrong")
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 401 {
		t.Errorf("wrong password: %v %v", resp, err)
	}
	if strings.Contains(srv.stderr.String()+srv.stdout.String(), "reader-pw") {
		t.Error("the password reached the log")
	}
}

// A blob changed after signing is never served whole: refused when the
// damage shows before the first byte, else the response is cut before its
// last bytes (TestCopyVerifiedHoldsBack), so every complete response
// matches its digest.
func TestServeTamperedBlob(t *testing.T) {
	s := startSite(t)
	good := filepath.Join(s.dir, "good.tar.zst")
	if r := s.build(t, good); r.code != 0 {
		t.Fatalf("build: %v", r)
	}
	m := manifestOf(t, good)
	data := mustRead(t, good)
	tampered := filepath.Join(s.dir, "tampered.tar.zst")
	// Flip a byte in the second half (the layers; the table of contents
	// and the metadata are at the start), trying offsets until serve
	// starts (its start-up checks catch flips in what it reads then).
	var srv *served
	for _, frac := range []float64{0.5, 0.6, 0.7, 0.8, 0.55, 0.65} {
		b := append([]byte(nil), data...)
		b[int(float64(len(b))*frac)] ^= 0x55
		os.WriteFile(tampered, b, 0o644)
		var err error
		if srv, err = tryServe(t, tampered, "--key", s.pub, "--addr", "127.0.0.1:0"); err == nil {
			break
		}
	}
	if srv == nil {
		t.Fatal("serve refused every tampered copy at start")
	}
	failed := 0
	for _, img := range m.ContainerImages() {
		tg, _ := mirror.TargetFor(img.Ref, "pseven")
		for _, d := range img.Blobs {
			kind := "blobs"
			if b := blobOf(m, d); bundle.IsManifest(b.MediaType) || bundle.IsIndex(b.MediaType) {
				kind = "manifests"
			}
			resp, err := http.Get("http://" + srv.addr + "/v2/" + tg.Repository + "/" + kind + "/" + d.String())
			if err != nil {
				failed++
				continue
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				failed++
				continue
			}
			if resp.StatusCode != 200 {
				failed++ // refused before the first byte
			} else if digest.FromBytes(body) != d {
				t.Errorf("served %s whole with digest %s", d, digest.FromBytes(body))
			}
		}
	}
	if failed == 0 {
		t.Error("no response was cut: the flip was not served?")
	}
	if !strings.Contains(srv.stderr.String(), "ERROR: sha256:") || !strings.Contains(srv.stderr.String(), "bundle is corrupt") {
		t.Errorf("serve did not log the blob it could not serve:\n%s", srv.stderr)
	}
}

func blobOf(m *bundle.Manifest, d digest.Digest) bundle.Blob {
	for _, b := range m.Blobs {
		if b.Digest == d {
			return b
		}
	}
	return bundle.Blob{}
}

// A node pulls a pod's image straight from serve, with no registry in
// between: containerd (plain HTTP, per its hosts.toml) resolves and pulls
// the bundle's digest.
func TestServeToNode(t *testing.T) {
	s := startSite(t)
	out := filepath.Join(s.dir, "pseven-2023.09.25.tar.zst")
	if r := s.build(t, out); r.code != 0 {
		t.Fatalf("build: %v", r)
	}
	m := manifestOf(t, out)
	site := startTestSite(t)
	addr := site.NodeIP + ":5050"
	self, _ := os.Executable()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	srv, err := runServe(t, site.Command(ctx, self, "serve", out, "--key", s.pub, "--addr", addr))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(srv.stderr.String(), "WARNING: serving PLAIN HTTP") {
		t.Errorf("no plain HTTP warning for %s:\n%s", addr, srv.stderr)
	}
	hosts := filepath.Join(site.Dir, "containerd", "certs.d", addr, "hosts.toml")
	os.MkdirAll(filepath.Dir(hosts), 0o755)
	os.WriteFile(hosts, []byte(fmt.Sprintf("server = \"http://%s\"\n\n[host.\"http://%s\"]\n  capabilities = [\"pull\", \"resolve\"]\n", addr, addr)), 0o644)

	var app bundle.Image
	for _, img := range m.ContainerImages() {
		if strings.Contains(img.Ref, "/pseven-app:") {
			app = img
		}
	}
	tg, err := mirror.TargetFor(app.Ref, "pseven")
	if err != nil || app.Ref == "" {
		t.Fatalf("no pseven-app image in %s: %v", out, err)
	}
	image := addr + "/" + tg.Repository + ":" + tg.Tag
	pod := filepath.Join(s.dir, "pod.yaml")
	os.WriteFile(pod, []byte(fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: from-serve, namespace: default}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - {name: app, image: %s, imagePullPolicy: Always}
`, image)), 0o644)
	kubectl := func(args ...string) string {
		t.Helper()
		b, err := site.Kubectl(ctx, args...)
		if err != nil {
			t.Fatalf("kubectl %v: %v\n%s", args, err, b)
		}
		return string(b)
	}
	kubectl("apply", "-f", pod)
	if _, err := site.Kubectl(ctx, "wait", "--for=condition=Ready", "pod/from-serve", "--timeout=120s"); err != nil {
		b, _ := site.Kubectl(ctx, "describe", "pod", "from-serve")
		t.Fatalf("pod from serve not ready: %v\n%s\nserve:\n%s", err, b, srv.stdout)
	}
	if id := kubectl("get", "pod", "from-serve", "-o", "jsonpath={.status.containerStatuses[0].imageID}"); !strings.HasSuffix(id, "@"+app.Digest.String()) {
		t.Errorf("pod runs %s, bundle digest %s", id, app.Digest)
	}
	if !strings.Contains(srv.stdout.String(), "GET /v2/"+tg.Repository+"/manifests/") {
		t.Errorf("serve's access log has no manifest GET:\n%s", srv.stdout)
	}
}

// This month's differential bundle served beside last month's: every
// image of both pulls whole (the blobs the delta leaves out come from its
// base), and both months' tags are listed. Alone, the delta says what it
// lacks; export needs --base.
func TestServeDelta(t *testing.T) {
	s := startSite(t)
	v1, v2chart := monthPair(t, s)
	v2 := filepath.Join(s.dir, "pseven-2023.10.30.tar.zst")
	if r := p7(t, s.up.Password+"\n", append(s.buildArgs(v2), "--chart", v2chart, "--base", v1)...); r.code != 0 {
		t.Fatalf("build v2: %v", r)
	}
	m1, m2 := manifestOf(t, v1), manifestOf(t, v2)
	if m2.Base == nil {
		t.Fatal("v2 is not differential")
	}
	crane, err := testenv.Tool("crane")
	if err != nil {
		t.Fatal(err)
	}
	srv := startServe(t, v1, v2, "--key", s.pub, "--addr", "127.0.0.1:0")
	for _, m := range []*bundle.Manifest{m1, m2} {
		for _, img := range m.ContainerImages() {
			tg, _ := mirror.TargetFor(img.Ref, "pseven")
			ref := srv.addr + "/" + tg.Repository + ":" + tg.Tag
			if out, err := exec.Command(crane, "pull", "--insecure", "--format", "oci", ref, filepath.Join(s.dir, "pulled-"+tg.Tag)).CombinedOutput(); err != nil {
				t.Errorf("crane pull %s (served from v1 + v2): %v\n%s", ref, err, out)
			}
			if out, _ := exec.Command(crane, "digest", "--insecure", ref).Output(); strings.TrimSpace(string(out)) != img.Digest.String() {
				t.Errorf("%s: digest %s, bundle %s", ref, out, img.Digest)
			}
		}
	}
	alone := startServe(t, v2, "--key", s.pub, "--addr", "127.0.0.1:0")
	if !strings.Contains(alone.stderr.String(), "is differential over pseven-2023.09.25.tar.zst") {
		t.Errorf("serving a delta alone: no warning:\n%s", alone.stderr)
	}
	if r := p7(t, "", "export", v2, "--key", s.pub, "--oci-layout", filepath.Join(s.dir, "l2")); r.code != exitInput || !strings.Contains(r.stderr, "pass --base") {
		t.Errorf("export of a delta without --base: %v", r)
	}
	if r := p7(t, "", "export", v2, "--key", s.pub, "--base", v1, "--oci-layout", filepath.Join(s.dir, "l2")); r.code != 0 {
		t.Errorf("export of a delta with --base: %v", r)
	}
}
