// Package testregistry runs a real docker-registry (distribution v2) process on
// a loopback port, optionally with htpasswd auth and TLS. It is used by tests
// and demo harnesses, so it does not depend on package testing.
package testregistry

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// DefaultBinary is where the Debian package docker-registry installs the binary.
const DefaultBinary = "/usr/bin/docker-registry"

// BinaryEnv, when set, names the registry binary Start runs by default:
// make test runs the push suite again on distribution v3 with it.
const BinaryEnv = "P7BUNDLE_TEST_REGISTRY_BINARY"

// ReferrersAPIEnv=1 says the registry BinaryEnv names serves the OCI 1.1
// referrers API (make test's go-containerregistry run): tests that take the
// tag-schema path where it is missing then fail instead.
const ReferrersAPIEnv = "P7BUNDLE_TEST_REGISTRY_REFERRERS_API"

// Options configures Start.
type Options struct {
	Username, Password string // non-empty => htpasswd auth
	TLS                bool   // serve HTTPS with a cert signed by a CA generated here
	Dir                string // working dir; if empty a temp dir is created and removed by Stop
	Binary             string // default $P7BUNDLE_TEST_REGISTRY_BINARY, else DefaultBinary
	// Addr is the listen address; default a free port on 127.0.0.1.
	Addr string
	// Token puts Username and Password behind a token service on a port of
	// its own (Registry.Token) instead of htpasswd.
	Token bool
	// TokenTTL is how long its tokens are valid; default 5 minutes (see
	// TokenOptions.TTL for negative values).
	TokenTTL time.Duration
	// TokenOneRepository: see TokenOptions.OneRepository.
	TokenOneRepository bool
	// TokenRealmHost: see TokenOptions.RealmHost.
	TokenRealmHost string
	// ProxyRemoteURL makes the registry a pull-through cache of that
	// upstream (distribution's proxy.remoteurl), as Harbor's and Nexus's
	// proxy-cache projects are.
	ProxyRemoteURL string
}

// Registry is a running docker-registry process.
type Registry struct {
	Host               string // "127.0.0.1:PORT"
	CAFile             string // PEM of the CA when TLS (empty otherwise)
	Username, Password string
	Dir                string
	LogFile            string // process stdout/stderr
	// Token is the token service when Options.Token was set.
	Token *TokenServer

	cmd     *exec.Cmd
	done    chan struct{} // closed when the process has exited
	tempDir bool
	client  *http.Client
	scheme  string
}

// Start launches docker-registry and waits until it answers GET /v2/.
func Start(ctx context.Context, opts Options) (*Registry, error) {
	bin := opts.Binary
	if bin == "" {
		bin = os.Getenv(BinaryEnv)
	}
	if bin == "" {
		bin = DefaultBinary
	}
	if _, err := os.Stat(bin); err != nil {
		return nil, fmt.Errorf("docker-registry not found at %s: run \"make test-deps\"", bin)
	}
	if (opts.Username == "") != (opts.Password == "") {
		return nil, errors.New("testregistry: Username and Password must be set together")
	}
	r := &Registry{Username: opts.Username, Password: opts.Password, Dir: opts.Dir, scheme: "http"}
	if r.Dir == "" {
		d, err := os.MkdirTemp("", "testregistry-")
		if err != nil {
			return nil, err
		}
		r.Dir, r.tempDir = d, true
	} else if err := os.MkdirAll(r.Dir, 0o755); err != nil {
		return nil, err
	}
	fail := func(err error) (*Registry, error) {
		r.Token.Close()
		if r.tempDir {
			os.RemoveAll(r.Dir)
		}
		return nil, err
	}

	var certFile, keyFile string
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.Proxy = nil // never route loopback through a proxy from the environment
	if opts.TLS {
		var err error
		r.CAFile, certFile, keyFile, err = writeCerts(filepath.Join(r.Dir, "certs"))
		if err != nil {
			return fail(fmt.Errorf("testregistry: generate certs: %w", err))
		}
		pool, err := certPool(r.CAFile)
		if err != nil {
			return fail(err)
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool}
		r.scheme = "https"
	}
	r.client = &http.Client{Transport: tr, Timeout: 30 * time.Second}

	var htpasswd, authConfig string
	if opts.Token {
		if opts.Username == "" {
			return fail(errors.New("testregistry: Token needs Username and Password"))
		}
		bundle, err := WriteTokenSigner(r.Dir)
		if err != nil {
			return fail(fmt.Errorf("testregistry: token signer: %w", err))
		}
		if r.Token, err = StartTokenServer(TokenOptions{
			Username: opts.Username, Password: opts.Password, CertFile: certFile, KeyFile: keyFile, SignerDir: r.Dir, TTL: opts.TokenTTL, OneRepository: opts.TokenOneRepository, RealmHost: opts.TokenRealmHost,
		}); err != nil {
			return fail(fmt.Errorf("testregistry: token server: %w", err))
		}
		authConfig = TokenConfig(r.Token.Realm, bundle)
	} else if opts.Username != "" {
		// MinCost: the registry re-checks bcrypt on every request, and these are throwaway credentials.
		hash, err := bcrypt.GenerateFromPassword([]byte(opts.Password), bcrypt.MinCost)
		if err != nil {
			return fail(err)
		}
		htpasswd = filepath.Join(r.Dir, "htpasswd")
		if err := os.WriteFile(htpasswd, []byte(opts.Username+":"+string(hash)+"\n"), 0o600); err != nil {
			return fail(err)
		}
	}

	// Picking a free port and handing it to another process is racy; retry on failure.
	var lastErr error
	for attempt := 0; attempt < 4; attempt++ {
		if opts.Addr != "" {
			r.Host = opts.Addr
		} else if port, err := FreePort(); err != nil {
			return fail(err)
		} else {
			r.Host = fmt.Sprintf("127.0.0.1:%d", port)
		}
		cfg := filepath.Join(r.Dir, "config.yml")
		proxy := ""
		if opts.ProxyRemoteURL != "" {
			proxy = fmt.Sprintf("proxy:\n  remoteurl: %q\n", opts.ProxyRemoteURL)
		}
		if err := os.WriteFile(cfg, []byte(Config(r.Dir, r.Host, htpasswd, certFile, keyFile)+authConfig+proxy), 0o600); err != nil {
			return fail(err)
		}
		if lastErr = r.launch(ctx, bin, cfg); lastErr == nil {
			return r, nil
		}
		if ctx.Err() != nil {
			break
		}
	}
	return fail(lastErr)
}

// Config renders a docker-registry configuration: filesystem storage under
// dir/storage, listening on addr, with TLS when cert is set and htpasswd
// auth when htpasswd is set. The test site writes its registry's with it.
func Config(dir, addr, htpasswd, cert, key string) string {
	var b strings.Builder
	fmt.Fprintf(&b, `version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: %q
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: %q
  secret: p7bundle-testregistry-secret
`, filepath.Join(dir, "storage"), addr)
	if cert != "" {
		fmt.Fprintf(&b, "  tls:\n    certificate: %q\n    key: %q\n", cert, key)
	}
	if htpasswd != "" {
		fmt.Fprintf(&b, "auth:\n  htpasswd:\n    realm: p7bundle-test\n    path: %q\n", htpasswd)
	}
	return b.String()
}

// launch starts the process once and waits for readiness; on failure the
// process is killed and the error carries the log tail.
func (r *Registry) launch(ctx context.Context, bin, cfg string) error {
	r.LogFile = filepath.Join(r.Dir, "registry.log")
	logf, err := os.OpenFile(r.LogFile, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close() // the child has its own copy of the fd
	// Not exec.CommandContext: the process must outlive the ctx passed to Start.
	cmd := exec.Command(bin, "serve", cfg)
	cmd.Dir = r.Dir
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("testregistry: start %s: %w", bin, err)
	}
	r.cmd, r.done = cmd, make(chan struct{})
	go func() { cmd.Wait(); close(r.done) }()

	if err := r.waitReady(ctx, 15*time.Second); err != nil {
		r.kill()
		return fmt.Errorf("testregistry: %w\n--- %s (tail) ---\n%s", err, r.LogFile, Tail(r.LogFile, 2048))
	}
	return nil
}

func (r *Registry) waitReady(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	want := http.StatusOK
	if r.Username != "" {
		want = http.StatusUnauthorized
	}
	var last string
	for {
		select {
		case <-r.done:
			return fmt.Errorf("docker-registry exited early (%v)", r.cmd.ProcessState)
		case <-ctx.Done():
			return ctx.Err()
		default:
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, r.URL()+"/v2/", nil)
		c := *r.client
		c.Timeout = time.Second
		resp, err := c.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == want {
				return nil
			}
			last = resp.Status
		} else {
			last = err.Error()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("docker-registry at %s not ready after %s: %s", r.Host, timeout, last)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// kill sends SIGTERM to the process group, escalating to SIGKILL after 3s,
// and waits for the process to exit.
func (r *Registry) kill() {
	if r.cmd == nil || r.cmd.Process == nil {
		return
	}
	select {
	case <-r.done:
		return // already reaped; the pid may belong to someone else by now
	default:
	}
	pid := r.cmd.Process.Pid
	syscall.Kill(-pid, syscall.SIGTERM)
	select {
	case <-r.done:
	case <-time.After(3 * time.Second):
		syscall.Kill(-pid, syscall.SIGKILL)
		<-r.done
	}
}

// Stop terminates the registry and removes Dir if Start created it.
func (r *Registry) Stop() error {
	if r == nil {
		return nil
	}
	r.kill()
	r.Token.Close()
	if r.client != nil {
		r.client.CloseIdleConnections()
	}
	if r.tempDir {
		r.tempDir = false
		return os.RemoveAll(r.Dir)
	}
	return nil
}

// PID returns the process id of the registry (0 if not running).
func (r *Registry) PID() int {
	if r.cmd == nil || r.cmd.Process == nil {
		return 0
	}
	return r.cmd.Process.Pid
}

// URL is the base URL, e.g. "https://127.0.0.1:5000".
func (r *Registry) URL() string { return r.scheme + "://" + r.Host }

// PlainHTTP reports whether the registry serves plain HTTP.
func (r *Registry) PlainHTTP() bool { return r.scheme == "http" }

// HTTPClient returns a client that trusts the registry CA (no credentials attached).
func (r *Registry) HTTPClient() *http.Client { return r.client }

// Catalog lists repositories via GET /v2/_catalog, following Link pagination
// (distribution rejects n > 1000 with PAGINATION_NUMBER_INVALID).
func (r *Registry) Catalog(ctx context.Context) ([]string, error) {
	var all []string
	for path := "/v2/_catalog?n=1000"; path != ""; {
		var out struct {
			Repositories []string `json:"repositories"`
		}
		next, err := r.getJSON(ctx, path, "registry:catalog:*", &out)
		if err != nil {
			return nil, err
		}
		all, path = append(all, out.Repositories...), next
	}
	return all, nil
}

// Tags lists the tags of repo via GET /v2/<repo>/tags/list.
func (r *Registry) Tags(ctx context.Context, repo string) ([]string, error) {
	var all []string
	for path := "/v2/" + repo + "/tags/list"; path != ""; {
		var out struct {
			Tags []string `json:"tags"`
		}
		next, err := r.getJSON(ctx, path, "repository:"+repo+":pull", &out)
		if err != nil {
			return nil, err
		}
		all, path = append(all, out.Tags...), next
	}
	return all, nil
}

var errNotFound = errors.New("not found")

// AllTags lists every REPO:TAG in the registry, sorted. A repository the
// catalog lists that holds blobs only (an upload stopped before any
// manifest) has no tags.
func (r *Registry) AllTags(ctx context.Context) ([]string, error) {
	repos, err := r.Catalog(ctx)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, repo := range repos {
		tags, err := r.Tags(ctx, repo)
		if errors.Is(err, errNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		for _, tag := range tags {
			out = append(out, repo+":"+tag)
		}
	}
	sort.Strings(out)
	return out, nil
}

// ErrNoReferrersAPI: the registry does not serve the OCI 1.1 referrers API
// (distribution answers 404 there).
var ErrNoReferrersAPI = errors.New("no referrers API")

// Referrers lists the artifact types of the manifests that name repo@digest
// as their subject, through the OCI 1.1 referrers API.
func (r *Registry) Referrers(ctx context.Context, repo, digest string) ([]string, error) {
	var index struct {
		Manifests []struct {
			ArtifactType string `json:"artifactType"`
		} `json:"manifests"`
	}
	if _, err := r.getJSON(ctx, "/v2/"+repo+"/referrers/"+digest, "repository:"+repo+":pull", &index); err != nil {
		if errors.Is(err, errNotFound) {
			return nil, fmt.Errorf("%w: %v", ErrNoReferrersAPI, err)
		}
		return nil, err
	}
	var types []string
	for _, m := range index.Manifests {
		types = append(types, m.ArtifactType)
	}
	return types, nil
}

// getJSON decodes the response of GET path into v and returns the next page
// path from the Link header ("" if none). scope is what a token must grant.
func (r *Registry) getJSON(ctx context.Context, path, scope string, v any) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.URL()+path, nil)
	if err != nil {
		return "", err
	}
	switch {
	case r.Token != nil:
		token, err := r.Token.Mint(r.Username, []string{scope})
		if err != nil {
			return "", err
		}
		req.Header.Set("Authorization", "Bearer "+token)
	case r.Username != "":
		req.SetBasicAuth(r.Username, r.Password)
	}
	resp, err := r.client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		err := fmt.Errorf("GET %s: %s: %s", req.URL.Path, resp.Status, strings.TrimSpace(string(b)))
		if resp.StatusCode == http.StatusNotFound {
			err = fmt.Errorf("%w: %v", errNotFound, err)
		}
		return "", err
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		return "", fmt.Errorf("GET %s: %w", req.URL.Path, err)
	}
	// Link: </v2/_catalog?last=x&n=1000>; rel="next"
	link := resp.Header.Get("Link")
	if i, j := strings.Index(link, "<"), strings.Index(link, ">"); i >= 0 && j > i && strings.Contains(link, `rel="next"`) {
		return link[i+1 : j], nil
	}
	return "", nil
}

// FreePort returns a loopback port free at the time of the call.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Tail is the last n bytes of a log file (or why it cannot be read).
func Tail(path string, n int64) string {
	f, err := os.Open(path)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.Size() > n {
		f.Seek(st.Size()-n, io.SeekStart)
	}
	b, _ := io.ReadAll(f)
	return string(b)
}

func certPool(caFile string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("testregistry: no certificates in %s", caFile)
	}
	return pool, nil
}

// writeCerts generates a CA and a server cert for 127.0.0.1/localhost in dir.
func writeCerts(dir string) (caFile, certFile, keyFile string, err error) {
	if err = os.MkdirAll(dir, 0o755); err != nil {
		return
	}
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "p7bundle testregistry CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(7 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		return
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "127.0.0.1"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(7 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:     []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		return
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return
	}
	caFile, certFile, keyFile = filepath.Join(dir, "ca.crt"), filepath.Join(dir, "server.crt"), filepath.Join(dir, "server.key")
	if err = writePEM(caFile, "CERTIFICATE", caDER, 0o644); err != nil {
		return
	}
	if err = writePEM(certFile, "CERTIFICATE", der, 0o644); err != nil {
		return
	}
	err = writePEM(keyFile, "EC PRIVATE KEY", keyDER, 0o600)
	return
}

func writePEM(path, typ string, der []byte, mode os.FileMode) error {
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), mode)
}
