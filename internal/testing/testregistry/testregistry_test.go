package testregistry

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func start(t *testing.T, opts Options) *Registry {
	t.Helper()
	if _, err := os.Stat(DefaultBinary); err != nil && opts.Binary == "" {
		t.Skipf("%s missing: run \"make test-deps\"", DefaultBinary)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r, err := Start(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Stop() })
	return r
}

func status(t *testing.T, r *Registry, auth bool) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, r.URL()+"/v2/", nil)
	if auth {
		req.SetBasicAuth(r.Username, r.Password)
	}
	resp, err := r.HTTPClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func TestAuthTLS(t *testing.T) {
	r := start(t, Options{Username: "alice", Password: "s3cret", TLS: true})
	if !strings.HasPrefix(r.URL(), "https://127.0.0.1:") || r.CAFile == "" {
		t.Fatalf("URL %s CAFile %q", r.URL(), r.CAFile)
	}
	if got := status(t, r, false); got != http.StatusUnauthorized {
		t.Errorf("unauthenticated /v2/ = %d, want 401", got)
	}
	if got := status(t, r, true); got != http.StatusOK {
		t.Errorf("authenticated /v2/ = %d, want 200", got)
	}
	// The default client (system roots only) must reject the generated cert.
	if _, err := http.Get(r.URL() + "/v2/"); err == nil {
		t.Error("expected TLS verification failure without the CA")
	}
	cat, err := r.Catalog(context.Background())
	if err != nil || len(cat) != 0 {
		t.Errorf("Catalog = %v, %v", cat, err)
	}
	if _, err := r.Tags(context.Background(), "nope"); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("Tags(nope) err = %v, want 404", err)
	}

	pid, dir, host := r.PID(), r.Dir, r.Host
	if err := r.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("pid %d still exists after Stop (kill 0: %v)", pid, err)
	}
	l, err := net.Listen("tcp", host)
	if err != nil {
		t.Errorf("port not free after Stop: %v", err)
	} else {
		l.Close()
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("temp dir %s not removed: %v", dir, err)
	}
	if err := r.Stop(); err != nil {
		t.Errorf("second Stop: %v", err)
	}
}

func TestPlainNoAuthOwnDir(t *testing.T) {
	dir := t.TempDir()
	r := start(t, Options{Dir: dir})
	if !r.PlainHTTP() || r.CAFile != "" {
		t.Fatalf("want plain HTTP, got %s CA %q", r.URL(), r.CAFile)
	}
	if got := status(t, r, false); got != http.StatusOK {
		t.Errorf("/v2/ = %d, want 200", got)
	}
	r.Stop()
	if _, err := os.Stat(filepath.Join(dir, "config.yml")); err != nil {
		t.Errorf("caller-owned Dir must be kept: %v", err)
	}
}

func TestMissingBinary(t *testing.T) {
	_, err := Start(context.Background(), Options{Binary: "/nonexistent/docker-registry"})
	if err == nil || !strings.Contains(err.Error(), `run "make test-deps"`) {
		t.Fatalf("err = %v", err)
	}
}

func TestStartFailureShowsLog(t *testing.T) {
	// A binary that exits at once: Start must fail quickly with the log tail.
	bin := filepath.Join(t.TempDir(), "fake-registry")
	os.WriteFile(bin, []byte("#!/bin/sh\necho boom-from-fake >&2\nexit 3\n"), 0o755)
	_, err := Start(context.Background(), Options{Binary: bin})
	if err == nil || !strings.Contains(err.Error(), "boom-from-fake") {
		t.Fatalf("err = %v", err)
	}
}

// Token mode: the registry challenges with the token service's realm on
// another port, refuses Basic credentials, and accepts the tokens it issues.
func TestTokenAuth(t *testing.T) {
	r := start(t, Options{Username: "robot$site", Password: "t0ken-s3cret", TLS: true, Token: true})
	if r.Token == nil || r.Token.Host == r.Host || !strings.HasPrefix(r.Token.Realm, "https://127.0.0.1:") {
		t.Fatalf("token server %+v beside %s", r.Token, r.Host)
	}
	req, _ := http.NewRequest(http.MethodGet, r.URL()+"/v2/", nil)
	resp, err := r.HTTPClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if c := resp.Header.Get("WWW-Authenticate"); resp.StatusCode != http.StatusUnauthorized || !strings.Contains(c, `realm="`+r.Token.Realm+`"`) {
		t.Fatalf("/v2/ = %d, challenge %q", resp.StatusCode, c)
	}
	if got := status(t, r, true); got != http.StatusUnauthorized {
		t.Errorf("Basic credentials at the registry = %d, want 401", got)
	}
	// Through the token service over HTTP, as a client would.
	req, _ = http.NewRequest(http.MethodGet, r.Token.Realm+"?service="+r.Token.Service+"&scope=registry:catalog:*", nil)
	req.SetBasicAuth(r.Username, r.Password)
	resp, err = r.HTTPClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var tok struct{ Token string }
	json.NewDecoder(resp.Body).Decode(&tok)
	resp.Body.Close()
	req, _ = http.NewRequest(http.MethodGet, r.URL()+"/v2/_catalog", nil)
	req.Header.Set("Authorization", "Bearer "+tok.Token)
	if resp, err = r.HTTPClient().Do(req); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("catalog with a token: %v %v\n%s", resp, err, Tail(r.LogFile, 2048))
	}
	resp.Body.Close()
	if _, err := r.Catalog(context.Background()); err != nil {
		t.Fatal(err)
	}
	req, _ = http.NewRequest(http.MethodGet, r.Token.Realm+"?service="+r.Token.Service, nil)
	req.SetBasicAuth(r.Username, "wrong")
	if resp, err = r.HTTPClient().Do(req); err != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("wrong password at the token service: %v %v", resp, err)
	}
	resp.Body.Close()
	if n := len(r.Token.Requests()); n != 2 {
		t.Errorf("token service saw %d requests, want 2", n)
	}
}
