// Package mirror moves images between registries and the local blob cache:
// auth, TLS, endpoint mirrors, retries and parallel graph copies. It reads
// and writes bundles only through bundle's streaming reader and never
// imports Kubernetes or Helm.
package mirror

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"net"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"oras.land/oras-go/v2/errdef"
	"oras.land/oras-go/v2/registry"
	"oras.land/oras-go/v2/registry/remote"
	"oras.land/oras-go/v2/registry/remote/auth"
	"oras.land/oras-go/v2/registry/remote/credentials"
	"oras.land/oras-go/v2/registry/remote/errcode"
	"oras.land/oras-go/v2/registry/remote/retry"

	"github.com/p7bundle/p7bundle/internal/egress"
)

var (
	// ErrNotFound: the image (or a blob of it) is not in the registry.
	ErrNotFound = errors.New("not found")
	// ErrUnauthorized: the registry refused the credentials.
	ErrUnauthorized = errors.New("unauthorized")
	// ErrUnreachable: the registry could not be contacted.
	ErrUnreachable = errors.New("registry unreachable")
	// ErrPlatform: the image has no manifest for the requested platforms.
	ErrPlatform = errors.New("platform not available")
	// ErrCAFile: the CA file holds no certificate.
	ErrCAFile = errors.New("invalid CA file")
)

// RegistryOptions say how to reach registries. The zero value uses HTTPS,
// system roots and docker config credentials.
type RegistryOptions struct {
	// Mirrors maps a registry host to the endpoint actually dialed, keeping
	// references unchanged (registry.pseven.io => cache.corp:5000).
	Mirrors map[string]string
	// PlainHTTP talks HTTP instead of HTTPS.
	PlainHTTP bool
	// CAFile adds a PEM CA bundle to the system roots.
	CAFile string
	// Insecure skips TLS certificate verification.
	Insecure bool
	// Username and Password, when set, are used for every endpoint;
	// otherwise docker config credentials and helpers apply.
	Username, Password string
	// Retries counts retried requests (429, 5xx, resets) when non-nil.
	Retries *atomic.Int64
	// Egress, when set, passes or refuses every dial, and learns from the
	// registry's answers where it delegates (token service, blob storage).
	Egress *egress.Guard
}

// validHost says whether h is HOST[:PORT]: a name or address, a port in range.
func validHost(h string) bool {
	_, err := egress.ParseEndpoint(h)
	return err == nil
}

// ParseMirrors parses "HOST=ENDPOINT" pairs.
func ParseMirrors(pairs []string) (map[string]string, error) {
	m := map[string]string{}
	for _, p := range pairs {
		host, endpoint, ok := strings.Cut(p, "=")
		host, endpoint = strings.TrimSpace(host), strings.TrimSpace(endpoint)
		if !ok || !validHost(host) || !validHost(endpoint) {
			return nil, fmt.Errorf("--mirror %q: want HOST=ENDPOINT[:PORT]", p)
		}
		m[host] = endpoint
	}
	return m, nil
}

// Client opens repositories with one shared HTTP client, auth cache and policy.
type Client struct {
	opts   RegistryOptions
	client *auth.Client
}

// NewClient builds the HTTP stack: TLS, retries with backoff, auth.
func NewClient(opts RegistryOptions) (*Client, error) {
	tlsConf := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: opts.Insecure} //nolint:gosec // explicit --insecure
	if opts.CAFile != "" {
		pem, err := os.ReadFile(opts.CAFile)
		if err != nil {
			return nil, fmt.Errorf("reading --ca-file %s: %w", opts.CAFile, err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%w: --ca-file %s: no PEM certificates found", ErrCAFile, opts.CAFile)
		}
		tlsConf.RootCAs = pool
	}
	base := http.DefaultTransport.(*http.Transport).Clone()
	base.TLSClientConfig = tlsConf
	base.MaxIdleConnsPerHost = 32
	base.DialContext = (&net.Dialer{Timeout: 15 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	// A proxy from the environment would be a dial to somewhere else.
	base.Proxy = nil
	var next http.RoundTripper = base
	if opts.Egress != nil {
		base.DialContext = opts.Egress.DialContext
		next = opts.Egress.Transport(base)
	}
	rt := retry.NewTransport(next)
	rt.Policy = func() retry.Policy { return countingPolicy{retry.DefaultPolicy, opts.Retries} }

	var cred auth.CredentialFunc
	if opts.Username != "" || opts.Password != "" {
		c := auth.Credential{Username: opts.Username, Password: opts.Password}
		cred = func(context.Context, string) (auth.Credential, error) { return c, nil }
	} else {
		store, err := credentials.NewStoreFromDocker(credentials.StoreOptions{DetectDefaultNativeStore: true})
		if err != nil {
			// A broken docker config must not stop anonymous pulls.
			cred = auth.StaticCredential("", auth.EmptyCredential)
		} else {
			cred = credentials.Credential(store)
		}
	}
	return &Client{opts: opts, client: &auth.Client{
		Client:     &http.Client{Transport: rt},
		Cache:      auth.NewCache(),
		Credential: cred,
		Header:     http.Header{"User-Agent": {"p7bundle"}},
	}}, nil
}

type countingPolicy struct {
	retry.Policy
	n *atomic.Int64
}

func (p countingPolicy) Retry(attempt int, resp *http.Response, err error) (time.Duration, error) {
	d, perr := p.Policy.Retry(attempt, resp, err)
	if perr == nil && d >= 0 && p.n != nil {
		p.n.Add(1)
	}
	return d, perr
}

// Endpoint returns the host actually dialed for a registry host.
func (c *Client) Endpoint(host string) string {
	if e, ok := c.opts.Mirrors[host]; ok {
		return e
	}
	if host == "docker.io" {
		return "registry-1.docker.io"
	}
	return host
}

// Repository opens ref's repository at its (possibly mirrored) endpoint.
func (c *Client) Repository(ref registry.Reference) (*remote.Repository, error) {
	repo, err := remote.NewRepository(c.Endpoint(ref.Registry) + "/" + ref.Repository)
	if err != nil {
		return nil, err
	}
	repo.Client = c.client
	repo.PlainHTTP = c.opts.PlainHTTP
	return repo, nil
}

// Classify maps transport and registry errors onto the package sentinels,
// keeping the original error text.
func Classify(err error) error {
	if err == nil {
		return nil
	}
	var resp *errcode.ErrorResponse
	switch {
	case missingProject(err) != "":
		return fmt.Errorf("%w: %w: the project %q does not exist in the registry (Harbor, GitLab and Quay create none on push): create it, or pass a --registry-prefix under one that exists", ErrNotFound, err, missingProject(err))
	case errors.Is(err, errdef.ErrNotFound):
		return fmt.Errorf("%w: %w", ErrNotFound, err)
	case errors.As(err, &resp) && resp.StatusCode == http.StatusNotFound:
		return fmt.Errorf("%w: %w", ErrNotFound, err)
	case errors.As(err, &resp) && (resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden):
		return fmt.Errorf("%w: %w", ErrUnauthorized, err)
	}
	// Local disk trouble is not the registry's: syscall.Errno would pass
	// for a net.Error below.
	for _, local := range []error{syscall.ENOSPC, syscall.EROFS, syscall.EDQUOT, syscall.EACCES, syscall.EPERM} {
		if errors.Is(err, local) {
			return err
		}
	}
	var opErr *net.OpError
	var dnsErr *net.DNSError
	if errors.Is(err, syscall.ECONNREFUSED) || errors.As(err, &dnsErr) || errors.As(err, &opErr) {
		return fmt.Errorf("%w: %w", ErrUnreachable, err)
	}
	var certErr *tls.CertificateVerificationError
	if errors.As(err, &certErr) {
		return fmt.Errorf("%w: %w (use --ca-file)", ErrUnreachable, err)
	}
	// oras-go will not send credentials to a token service at a loopback or
	// link-local address the registry is not reached by (GHSA-xf85-363p-868w).
	if strings.Contains(err.Error(), "bearer realm") {
		return fmt.Errorf("%w: %w", ErrUnauthorized, err)
	}
	// net/http's own words, with no type behind them.
	if strings.Contains(err.Error(), "server gave HTTP response to HTTPS client") {
		return fmt.Errorf("%w: %w (the registry speaks plain HTTP: use --plain-http)", ErrUnreachable, err)
	}
	return err
}

// missingProject names the project (the repository's first path element)
// when a registry refused a write with NAME_UNKNOWN: Harbor's answer to a
// push into a project that does not exist.
func missingProject(err error) string {
	var resp *errcode.ErrorResponse
	if !errors.As(err, &resp) || resp.Method == http.MethodGet || resp.Method == http.MethodHead || resp.URL == nil {
		return ""
	}
	for _, e := range resp.Errors {
		if e.Code == errcode.ErrorCodeNameUnknown {
			repo := strings.TrimPrefix(resp.URL.Path, "/v2/")
			project, _, _ := strings.Cut(repo, "/")
			return project
		}
	}
	return ""
}

// Ping checks that a registry answers and accepts the credentials.
func (c *Client) Ping(ctx context.Context, host string) error {
	reg, err := remote.NewRegistry(c.Endpoint(host))
	if err != nil {
		return err
	}
	reg.Client = c.client
	reg.PlainHTTP = c.opts.PlainHTTP
	return Classify(reg.Ping(ctx))
}

// Credential is what the client sends to host: the given username and
// password, or what docker config (and its helpers) hold for it.
func (c *Client) Credential(ctx context.Context, host string) (username, password string, err error) {
	cred, err := c.client.Credential(ctx, host)
	if err != nil {
		return "", "", fmt.Errorf("%w: credentials for %s: %v", ErrUnauthorized, host, err)
	}
	if cred.RefreshToken != "" && cred.Password == "" {
		// A token is not a username/password pair Kubernetes can pull with.
		return "", "", fmt.Errorf("%w: docker config holds an identity token for %s, not a password: pass --registry-username", ErrUnauthorized, host)
	}
	return cred.Username, cred.Password, nil
}

// resolve is repo.Resolve for registries that leave Docker-Content-Digest
// out of HEAD answers (oras refuses those for a tag): it falls back to a
// GET, whose body oras hashes.
func resolve(ctx context.Context, repo *remote.Repository, ref string) (ocispec.Descriptor, error) {
	desc, err := repo.Resolve(ctx, ref)
	if err == nil || !strings.Contains(err.Error(), `missing required header "Docker-Content-Digest"`) {
		return desc, err
	}
	desc, rc, err := repo.FetchReference(ctx, ref)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	rc.Close()
	return desc, nil
}
