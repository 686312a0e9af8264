package egress

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

func TestGuardRefusesOtherHosts(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	g := New(Options{Registry: ln.Addr().String(), Allow: []string{"registry.site"}})
	c, err := g.DialContext(context.Background(), "tcp", ln.Addr().String())
	if err != nil {
		t.Fatalf("allowed dial: %v", err)
	}
	c.Close()
	for _, addr := range []string{"registry.pseven.io:443", "192.0.2.1:53", "127.0.0.1:1", "registry.site:5000"} {
		_, err := g.DialContext(context.Background(), "tcp", addr)
		if !errors.Is(err, ErrDenied) || !strings.Contains(err.Error(), addr) {
			t.Errorf("dial %s = %v, want a denial naming it", addr, err)
		}
	}
	if !g.Allows("REGISTRY.site:443") {
		t.Error("registry.site:443 should be allowed")
	}
}

func TestParseEndpoint(t *testing.T) {
	for in, want := range map[string]string{
		"gitlab.corp": "gitlab.corp:443", "MinIO.corp:9000": "minio.corp:9000", "10.0.0.5:9000": "10.0.0.5:9000",
		"[fd00::1]:9000": "[fd00::1]:9000", "fd00::1": "[fd00::1]:443",
	} {
		if got, err := ParseEndpoint(in); err != nil || got != want {
			t.Errorf("ParseEndpoint(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"", ":9000", "https://gitlab.corp", "gitlab.corp/jwt", "host:0", "host:99999", "host:http2", "a:b:c", "user@host:1", "h,i:1"} {
		if got, err := ParseEndpoint(in); err == nil || !strings.Contains(err.Error(), "HOST[:PORT]") {
			t.Errorf("ParseEndpoint(%q) = %q, %v; want an error", in, got, err)
		}
	}
}

func TestBearerRealm(t *testing.T) {
	for challenge, want := range map[string]string{
		`Bearer realm="https://gitlab.corp/jwt/auth",service="container_registry",scope="repository:a/b:pull"`: "https://gitlab.corp/jwt/auth",
		`bearer service="x", realm="http://127.0.0.1:46801/token"`:                                             "http://127.0.0.1:46801/token",
		`Bearer realm=https://auth.corp/token,service=registry`:                                                "https://auth.corp/token",
		`Bearer scope="a\"b,c",realm="https://auth.corp/t"`:                                                    "https://auth.corp/t",
		`Basic realm="https://auth.corp/token"`:                                                                "",
		`Bearer realm="/token"`:                                                                                "",
		`Bearer realm="ftp://auth.corp/token"`:                                                                 "",
		`Bearer service="x"`:                                                                                   "",
		`Bearer realm="https://auth.corp`:                                                                      "https://auth.corp",
		`Bearer ,,,`:                                                                                           "",
	} {
		got := ""
		if u := bearerRealm(challenge); u != nil {
			got = u.String()
		}
		if got != want {
			t.Errorf("bearerRealm(%s) = %q, want %q", challenge, got, want)
		}
	}
}

// site is a fake site registry with a token service and blob storage on
// ports of their own, and a host nobody named.
type site struct {
	registry, token, storage, other *httptest.Server
	log                             bytes.Buffer
	client                          *http.Client
	guard                           *Guard
}

func endpoint(s *httptest.Server) string { return strings.TrimPrefix(s.URL, "http://") }

func newSite(t *testing.T, strict bool, allow ...string) *site {
	s := &site{}
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	s.other = httptest.NewServer(ok)
	s.token = httptest.NewServer(ok)
	s.storage = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/again": // a second hop to a host the registry did not name
			http.Redirect(w, r, s.other.URL+"/blob", http.StatusTemporaryRedirect)
		case "/challenge": // a realm named by storage, not the registry
			w.Header().Set("WWW-Authenticate", `Bearer realm="`+s.other.URL+`/token"`)
			w.WriteHeader(http.StatusUnauthorized)
		default:
			io.WriteString(w, "blob")
		}
	}))
	s.registry = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/v2/":
			w.Header().Set("WWW-Authenticate", `Bearer realm="`+s.token.URL+`/token",service="site"`)
			w.WriteHeader(http.StatusUnauthorized)
		case strings.HasSuffix(r.URL.Path, "/blobs/sha256:aa"):
			http.Redirect(w, r, s.storage.URL+"/data?X-Amz-Signature=1", http.StatusTemporaryRedirect)
		case strings.HasSuffix(r.URL.Path, "/blobs/sha256:bb"):
			http.Redirect(w, r, s.storage.URL+"/again", http.StatusTemporaryRedirect)
		case strings.HasSuffix(r.URL.Path, "/blobs/sha256:cc"):
			http.Redirect(w, r, s.storage.URL+"/challenge", http.StatusTemporaryRedirect)
		case strings.Contains(r.URL.Path, "/manifests/"):
			http.Redirect(w, r, s.other.URL+"/manifest", http.StatusFound)
		default:
			http.NotFound(w, r)
		}
	}))
	for _, srv := range []*httptest.Server{s.registry, s.token, s.storage, s.other} {
		t.Cleanup(srv.Close)
	}
	for i, a := range allow {
		if a == "token" {
			allow[i] = endpoint(s.token)
		}
	}
	s.guard = New(Options{Registry: endpoint(s.registry), Allow: allow, Strict: strict, Log: &s.log})
	s.client = &http.Client{Transport: s.guard.Transport(&http.Transport{DialContext: s.guard.DialContext})}
	return s
}

func (s *site) get(t *testing.T, method, u string) (*http.Response, error) {
	t.Helper()
	req, err := http.NewRequest(method, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := s.client.Do(req)
	if err == nil {
		resp.Body.Close()
	}
	return resp, err
}

func TestDelegationsTheRegistryNames(t *testing.T) {
	s := newSite(t, false)
	if s.guard.Allows(endpoint(s.token)) || s.guard.Allows(endpoint(s.storage)) {
		t.Fatal("delegations allowed before the registry named them")
	}
	if _, err := s.get(t, http.MethodGet, s.token.URL+"/token"); !errors.Is(err, ErrDenied) {
		t.Fatalf("token service before the challenge: %v", err)
	}
	if resp, err := s.get(t, http.MethodGet, s.registry.URL+"/v2/"); err != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("GET /v2/: %v %v", resp, err)
	}
	if resp, err := s.get(t, http.MethodGet, s.token.URL+"/token"); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("token service after the registry named it: %v %v", resp, err)
	}
	for _, m := range []string{http.MethodHead, http.MethodGet} {
		if resp, err := s.get(t, m, s.registry.URL+"/v2/pseven/app/blobs/sha256:aa"); err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("%s of a redirected blob: %v %v", m, resp, err)
		}
	}
	want := "egress: token service " + endpoint(s.token) + ", named by " + endpoint(s.registry) + "\n" +
		"egress: blob storage " + endpoint(s.storage) + ", named by " + endpoint(s.registry) + "\n"
	if s.log.String() != want {
		t.Errorf("log:\n%s\nwant (each once):\n%s", s.log.String(), want)
	}

	// Nothing else: a second hop, a realm storage names, a redirect of
	// anything but a blob read.
	_, err := s.get(t, http.MethodGet, s.registry.URL+"/v2/pseven/app/blobs/sha256:bb")
	if !errors.Is(err, ErrDenied) || !strings.Contains(err.Error(), "refusing to dial "+endpoint(s.other)) ||
		!strings.Contains(err.Error(), "named by "+endpoint(s.storage)+", which is not the site registry") {
		t.Errorf("second hop: %v", err)
	}
	if resp, err := s.get(t, http.MethodGet, s.registry.URL+"/v2/pseven/app/blobs/sha256:cc"); err != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("challenge from storage: %v %v", resp, err)
	}
	if s.guard.Allows(endpoint(s.other)) {
		t.Error("a realm storage named was allowed")
	}
	_, err = s.get(t, http.MethodGet, s.registry.URL+"/v2/pseven/app/manifests/1.0")
	if !errors.Is(err, ErrDenied) || !strings.Contains(err.Error(), "only blob reads") {
		t.Errorf("redirected manifest: %v", err)
	}
	if strings.Count(s.log.String(), "\n") != 2 {
		t.Errorf("log grew: %s", s.log.String())
	}
}

func TestStrictEgress(t *testing.T) {
	s := newSite(t, true)
	s.get(t, http.MethodGet, s.registry.URL+"/v2/")
	_, err := s.get(t, http.MethodGet, s.token.URL+"/token")
	want := "egress guard: refusing to dial " + endpoint(s.token) + ", the token service named by " + endpoint(s.registry) +
		" (--strict-egress; to allow it, add --allow-endpoint " + endpoint(s.token) + ")"
	if err == nil || !strings.HasSuffix(err.Error(), want) {
		t.Errorf("strict token service: %v\nwant it to end with: %s", err, want)
	}
	_, err = s.get(t, http.MethodHead, s.registry.URL+"/v2/pseven/app/blobs/sha256:aa")
	if !errors.Is(err, ErrDenied) || !strings.Contains(err.Error(), "--allow-endpoint "+endpoint(s.storage)+")") {
		t.Errorf("strict blob storage: %v", err)
	}
	if s.log.Len() != 0 {
		t.Errorf("strict mode logged a delegation: %s", s.log.String())
	}

	// What the admin vouches for passes, without a delegation line.
	s = newSite(t, true, "token")
	s.get(t, http.MethodGet, s.registry.URL+"/v2/")
	if resp, err := s.get(t, http.MethodGet, s.token.URL+"/token"); err != nil || resp.StatusCode != http.StatusOK {
		t.Errorf("--allow-endpoint token service: %v %v", resp, err)
	}
	if s.log.Len() != 0 {
		t.Errorf("an allowed endpoint logged as a delegation: %s", s.log.String())
	}
}

func TestRegistryOnDefaultPort(t *testing.T) {
	g := New(Options{Registry: "registry.corp:443"})
	u, _ := url.Parse("https://registry.corp/v2/a/blobs/sha256:aa")
	resp := &http.Response{StatusCode: http.StatusTemporaryRedirect, Header: http.Header{"Location": {"https://minio.corp/bucket/x?sig=1"}}, Request: &http.Request{URL: u}}
	g.observe(&http.Request{Method: http.MethodGet, URL: u}, resp)
	if !g.Allows("minio.corp:443") {
		t.Error("storage on the default port of a registry on the default port was not allowed")
	}
}
