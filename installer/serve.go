package installer

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/p7bundle/p7bundle/bundle"
	"github.com/p7bundle/p7bundle/mirror"
)

// DefaultServeAddr keeps serve on loopback unless told otherwise.
const DefaultServeAddr = "127.0.0.1:5000"

var (
	// ErrListen: serve cannot listen on its address (taken, not local).
	ErrListen = errors.New("cannot listen")
	// ErrInput: a file serve was given is missing or not what it should be.
	ErrInput = errors.New("invalid input")
)

// Serve is `p7bundle serve`: a read-only registry over one or more bundles
// (last month's full bundle and this month's delta, say), straight from
// the files, for tools that speak the registry API and for registries
// that replicate or proxy-cache from an upstream.
type Serve struct {
	Bundles []string
	// Signature: every bundle's table of contents is checked before any
	// request is answered.
	Signature Signature
	// Addr is HOST:PORT; default DefaultServeAddr.
	Addr string
	// Prefix is the repository path the images appear under, as push
	// would name them at a site; DefaultPrefix when empty, "/" for none.
	Prefix string
	// TLSCert and TLSKey serve HTTPS.
	TLSCert, TLSKey string
	// Htpasswd requires Basic auth (bcrypt entries, as docker-registry).
	Htpasswd string
	// AccessJSON writes the access log as JSON lines.
	AccessJSON bool
	// Log gets the start-up lines and errors; AccessLog one line per
	// request (default Log).
	Log, AccessLog io.Writer
	// Ready, when set, is called with the address listened on.
	Ready func(addr string)
}

// Run serves until ctx is done, then shuts down gracefully.
func (o *Serve) Run(ctx context.Context) error {
	s := *o
	if s.Log == nil {
		s.Log = io.Discard
	}
	if s.AccessLog == nil {
		s.AccessLog = s.Log
	}
	if s.Addr == "" {
		s.Addr = DefaultServeAddr
	}
	prefix := sitePrefix(s.Prefix)
	if len(s.Bundles) == 0 {
		return fmt.Errorf("%w: serve: no bundle", ErrOptions)
	}
	if (s.TLSCert == "") != (s.TLSKey == "") {
		return fmt.Errorf("%w: serve: --tls-cert and --tls-key go together", ErrOptions)
	}
	var authorize func(string, string) bool
	if s.Htpasswd != "" {
		users, err := readHtpasswd(s.Htpasswd)
		if err != nil {
			return err
		}
		authorize = func(u, p string) bool {
			h, ok := users[u]
			return ok && bcrypt.CompareHashAndPassword(h, []byte(p)) == nil
		}
	}
	var tlsConfig *tls.Config
	if s.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(s.TLSCert, s.TLSKey)
		if err != nil {
			return fmt.Errorf("%w: serve: --tls-cert %s / --tls-key %s: %v", ErrInput, s.TLSCert, s.TLSKey, err)
		}
		tlsConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}

	var archives []*bundle.Archive
	defer func() {
		for _, a := range archives {
			a.Close()
		}
	}()
	for _, path := range s.Bundles {
		a, err := s.Signature.open(ctx, path, s.Log)
		if err != nil {
			return err
		}
		archives = append(archives, a)
	}
	for _, a := range archives {
		if b := a.Manifest().Base; b != nil && !servesBase(archives, b.ManifestDigest) {
			n, _ := a.Manifest().OmittedBytes()
			fmt.Fprintf(s.Log, "WARNING: %s is differential over %s: the %d blobs it leaves out are served only when that bundle is served too\n", a.Path(), b.Name, n)
		}
	}
	srv, err := mirror.NewServer(archives, prefix)
	if err != nil {
		return err
	}
	srv.Authorize = authorize
	var logMu sync.Mutex
	srv.Errorf = func(format string, args ...any) {
		logMu.Lock()
		defer logMu.Unlock()
		fmt.Fprintf(s.Log, "ERROR: "+format+"\n", args...)
	}
	srv.Access = func(e mirror.AccessEntry) {
		logMu.Lock()
		defer logMu.Unlock()
		if s.AccessJSON {
			json.NewEncoder(s.AccessLog).Encode(e)
			return
		}
		fmt.Fprintf(s.AccessLog, "%s %s %s %s %d %d %.3fs\n", e.Time.Format(time.RFC3339), e.Remote, e.Method, e.Path, e.Status, e.Bytes, e.Duration)
	}

	ln, err := net.Listen("tcp", s.Addr)
	if err != nil {
		return fmt.Errorf("%w: serve --addr %s: %v", ErrListen, s.Addr, err)
	}
	scheme := "http"
	if tlsConfig != nil {
		ln, scheme = tls.NewListener(ln, tlsConfig), "https"
	} else if !loopback(ln.Addr()) {
		fmt.Fprintf(s.Log, "WARNING: serving PLAIN HTTP on %s, beyond this host: anyone on the network can read the images%s; pass --tls-cert/--tls-key\n",
			ln.Addr(), map[bool]string{true: " (and the Basic auth password)", false: ""}[authorize != nil])
	}
	repos := srv.Repositories()
	fmt.Fprintf(s.Log, "serving %d repositories from %s at %s://%s/v2/ (read-only)\n", len(repos), strings.Join(s.Bundles, ", "), scheme, ln.Addr())
	if s.Ready != nil {
		s.Ready(ln.Addr().String())
	}
	hs := &http.Server{Handler: srv, ReadHeaderTimeout: 30 * time.Second, ErrorLog: nil}
	done := make(chan error, 1)
	go func() { done <- hs.Serve(ln) }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
	}
	fmt.Fprintf(s.Log, "shutting down: finishing the responses under way\n")
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil {
		hs.Close()
	}
	<-done
	return nil
}

func loopback(a net.Addr) bool {
	t, ok := a.(*net.TCPAddr)
	return ok && t.IP.IsLoopback()
}

// readHtpasswd reads user:bcrypt-hash lines; other hash kinds are refused,
// as docker-registry refuses them.
func readHtpasswd(path string) (map[string][]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%w: --htpasswd: %w", ErrInput, err)
	}
	defer f.Close()
	users := map[string][]byte{}
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		u, h, ok := strings.Cut(line, ":")
		if !ok || !strings.HasPrefix(h, "$2") {
			return nil, fmt.Errorf("%w: --htpasswd %s line %d: not user:bcrypt-hash", ErrInput, path, n)
		}
		users[u] = []byte(h)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%w: --htpasswd %s: %v", ErrInput, path, err)
	}
	if len(users) == 0 {
		return nil, fmt.Errorf("%w: --htpasswd %s holds no user", ErrInput, path)
	}
	return users, nil
}

// servesBase says whether the bundle with manifest digest md is served.
func servesBase(archives []*bundle.Archive, md string) bool {
	for _, a := range archives {
		if d, err := a.Manifest().Digest(); err == nil && d == md {
			return true
		}
	}
	return false
}
