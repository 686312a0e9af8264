// Package egress keeps the site commands' network clients to the endpoints
// they were given: any other dial fails at once, naming the endpoint, so a
// stray lookup shows up in tests instead of as a timeout at an air-gapped
// site. The one exception is what the site registry itself delegates to,
// as the Distribution spec lets it: the token service its Bearer challenge
// names and the storage a blob read is redirected to.
package egress

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
)

// ErrDenied marks a dial the guard refused.
var ErrDenied = errors.New("egress guard")

// Options say what a Guard allows. The zero value allows nothing.
type Options struct {
	// Registry is the site registry's HOST:PORT. It is allowed, and its
	// own answers are the only ones that may name further endpoints.
	Registry string
	// Allow lists further HOST[:PORT] endpoints (":443" when bare): the
	// Kubernetes API server, and what the admin vouches for.
	Allow []string
	// Strict refuses what Registry delegates to, naming the endpoint.
	Strict bool
	// Log gets one line for each delegation followed.
	Log io.Writer
}

// Guard allows dials to its endpoints and to the site registry's
// delegations, and refuses everything else. It is safe for concurrent use.
type Guard struct {
	registry string
	strict   bool
	log      io.Writer
	dialer   net.Dialer

	mu      sync.Mutex
	allowed map[string]bool
	names   []string
	refused map[string]string // endpoint => who named it, for the error
}

// New returns a guard allowing o.Registry and o.Allow.
func New(o Options) *Guard {
	g := &Guard{
		strict: o.Strict, log: o.Log, allowed: map[string]bool{}, refused: map[string]string{},
		dialer: net.Dialer{Timeout: 15 * time.Second, KeepAlive: 30 * time.Second},
	}
	if g.log == nil {
		g.log = io.Discard
	}
	if o.Registry != "" {
		g.registry = normalize(o.Registry)
		g.allow(g.registry)
	}
	for _, e := range o.Allow {
		if e != "" {
			g.allow(normalize(e))
		}
	}
	return g
}

// ParseEndpoint checks a HOST[:PORT] given on the command line and returns
// the HOST:PORT a dial names (":443" when bare).
func ParseEndpoint(s string) (string, error) {
	e := normalize(s)
	host, port, err := net.SplitHostPort(e)
	n, perr := strconv.Atoi(port)
	if err != nil || host == "" || strings.ContainsAny(host, "/@?#=%, ") || perr != nil || n < 1 || n > 65535 ||
		(strings.Contains(host, ":") && net.ParseIP(host) == nil) {
		return "", fmt.Errorf("endpoint %q: want HOST[:PORT]", s)
	}
	return e, nil
}

func normalize(e string) string {
	if _, _, err := net.SplitHostPort(e); err != nil {
		e = net.JoinHostPort(strings.Trim(e, "[]"), "443")
	}
	return strings.ToLower(e)
}

// Endpoint is the host:port a registry client dials for host: its own
// port, else 80 over plain HTTP and 443 over TLS.
func Endpoint(host string, plainHTTP bool) string {
	if _, _, err := net.SplitHostPort(host); err == nil || host == "" {
		return host
	}
	port := "443"
	if plainHTTP {
		port = "80"
	}
	return net.JoinHostPort(strings.Trim(host, "[]"), port)
}

// endpointOf is the host:port a request to u dials.
func endpointOf(u *url.URL) string {
	port := u.Port()
	if port == "" {
		port = "443"
		if strings.EqualFold(u.Scheme, "http") {
			port = "80"
		}
	}
	return strings.ToLower(net.JoinHostPort(u.Hostname(), port))
}

func (g *Guard) allow(e string) {
	if !g.allowed[e] {
		g.allowed[e] = true
		g.names = append(g.names, e)
	}
}

// Allows says whether a dial to addr would pass.
func (g *Guard) Allows(addr string) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.allowed[strings.ToLower(addr)]
}

// DialContext dials addr if it is allowed and fails immediately otherwise.
func (g *Guard) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	if err := g.check(addr); err != nil {
		return nil, err
	}
	return g.dialer.DialContext(ctx, network, addr)
}

func (g *Guard) check(addr string) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	key := strings.ToLower(addr)
	if g.allowed[key] {
		return nil
	}
	if why, ok := g.refused[key]; ok {
		return fmt.Errorf("%w: refusing to dial %s, %s", ErrDenied, addr, why)
	}
	return fmt.Errorf("%w: refusing to dial %s (allowed: %s)", ErrDenied, addr, strings.Join(g.names, ", "))
}

// Transport wraps a registry client's transport (below its redirect and
// auth handling, so it sees every hop) to learn the site registry's
// delegations from its answers.
func (g *Guard) Transport(next http.RoundTripper) http.RoundTripper {
	return &observer{g: g, next: next}
}

type observer struct {
	g    *Guard
	next http.RoundTripper
}

func (o *observer) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := o.next.RoundTrip(req)
	if err == nil {
		o.g.observe(req, resp)
	}
	return resp, err
}

// blobPath is a blob read of the Distribution API (not an upload).
var blobPath = regexp.MustCompile(`^/v2/.+/blobs/[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$`)

func (g *Guard) observe(req *http.Request, resp *http.Response) {
	from := endpointOf(req.URL)
	switch resp.StatusCode {
	case http.StatusUnauthorized:
		for _, c := range resp.Header.Values("Www-Authenticate") {
			if u := bearerRealm(c); u != nil {
				g.named(from, endpointOf(u), "token service", "")
			}
		}
	case http.StatusMovedPermanently, http.StatusFound, http.StatusSeeOther, http.StatusTemporaryRedirect, http.StatusPermanentRedirect:
		loc, err := resp.Location()
		if err != nil {
			return
		}
		var notBlob string
		if (req.Method != http.MethodGet && req.Method != http.MethodHead) || !blobPath.MatchString(req.URL.Path) {
			notBlob = req.Method + " " + req.URL.Path
		}
		g.named(from, endpointOf(loc), "blob storage", notBlob)
	}
}

// named handles endpoint to, named by an answer from from as what. A
// non-empty notBlob is a redirect of something other than a blob read.
func (g *Guard) named(from, to, what, notBlob string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.allowed[to] {
		return
	}
	switch {
	case from != g.registry:
		g.refused[to] = fmt.Sprintf("the %s named by %s, which is not the site registry %s", what, from, g.registry)
	case notBlob != "":
		g.refused[to] = fmt.Sprintf("where %s redirected %s (only blob reads may go elsewhere)", from, notBlob)
	case g.strict:
		g.refused[to] = fmt.Sprintf("the %s named by %s (--strict-egress; to allow it, add --allow-endpoint %s)", what, from, to)
	default:
		g.allow(to)
		delete(g.refused, to)
		fmt.Fprintf(g.log, "egress: %s %s, named by %s\n", what, to, from)
	}
}

// bearerRealm returns the realm of a Bearer challenge (RFC 6750 §3), or nil.
func bearerRealm(challenge string) *url.URL {
	scheme, params, _ := strings.Cut(strings.TrimSpace(challenge), " ")
	if !strings.EqualFold(scheme, "bearer") {
		return nil
	}
	for params != "" {
		var key, value string
		key, params, _ = strings.Cut(strings.TrimLeft(params, " ,"), "=")
		params = strings.TrimLeft(params, " ")
		if strings.HasPrefix(params, `"`) {
			var b strings.Builder
			i := 1
			for ; i < len(params) && params[i] != '"'; i++ {
				if params[i] == '\\' && i+1 < len(params) {
					i++
				}
				b.WriteByte(params[i])
			}
			value, params = b.String(), params[min(i+1, len(params)):]
		} else {
			value, params, _ = strings.Cut(params, ",")
		}
		if strings.EqualFold(strings.TrimSpace(key), "realm") {
			u, err := url.Parse(strings.TrimSpace(value))
			if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
				return nil
			}
			return u
		}
	}
	return nil
}
