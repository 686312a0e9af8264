// Package storagefront puts a real registry behind the redirects of object
// storage, as distribution or Harbor on S3/MinIO with redirects on: a
// reverse proxy answers GET and HEAD of a blob the registry holds with a
// 307 to a presigned-looking URL on another port, where a storage server
// serves the blob from the registry's filesystem storage and records what
// each request carried.
package storagefront

import (
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"sync"
	"sync/atomic"
	"time"
)

// Options configure Start.
type Options struct {
	// Target is the registry's URL; Transport reaches it (TLS settings).
	Target    string
	Transport http.RoundTripper
	// StorageDir is the registry's filesystem storage root directory.
	StorageDir string
	// SecondHop makes the storage redirect once more, to a third server:
	// a host the registry never named.
	SecondHop bool
}

// Request is what a storage server was sent.
type Request struct {
	Method, Path string
	Header       http.Header
}

// Front is a running front, its storage and the second hop's target.
type Front struct {
	// Host is the registry address to use (plain HTTP).
	Host string
	// Storage is where blob reads are redirected; Elsewhere is where the
	// storage redirects them with SecondHop.
	Storage, Elsewhere string
	// Redirects counts the blob reads answered with a redirect.
	Redirects atomic.Int64

	opts    Options
	rp      *httputil.ReverseProxy
	servers []*http.Server

	mu       sync.Mutex
	requests map[string][]Request // by server: Storage or Elsewhere
}

var blobRead = regexp.MustCompile(`^/v2/(.+)/blobs/sha256:([a-f0-9]{64})$`)

// Start listens on three free loopback ports.
func Start(opts Options) (*Front, error) {
	target, err := url.Parse(opts.Target)
	if err != nil {
		return nil, err
	}
	f := &Front{opts: opts, requests: map[string][]Request{}}
	f.rp = httputil.NewSingleHostReverseProxy(target)
	if opts.Transport != nil {
		f.rp.Transport = opts.Transport
	}
	f.rp.ErrorLog = log.New(io.Discard, "", 0) // a client hanging up is not news
	// Upload locations point at the registry; clients must come back here.
	f.rp.ModifyResponse = func(r *http.Response) error {
		if l, err := url.Parse(r.Header.Get("Location")); err == nil && l.Host != "" {
			l.Scheme, l.Host = "http", f.Host
			r.Header.Set("Location", l.String())
		}
		return nil
	}
	for _, h := range []struct {
		addr *string
		h    http.Handler
	}{{&f.Host, http.HandlerFunc(f.front)}, {&f.Storage, f.storage(&f.Storage)}, {&f.Elsewhere, f.storage(&f.Elsewhere)}} {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			f.Close()
			return nil, err
		}
		*h.addr = ln.Addr().String()
		srv := &http.Server{Handler: h.h, ReadHeaderTimeout: 10 * time.Second}
		f.servers = append(f.servers, srv)
		go srv.Serve(ln)
	}
	return f, nil
}

// front redirects reads of blobs the registry holds (after the registry
// has accepted the request's credentials) and proxies everything else.
func (f *Front) front(w http.ResponseWriter, r *http.Request) {
	m := blobRead.FindStringSubmatch(r.URL.Path)
	if m == nil || (r.Method != http.MethodGet && r.Method != http.MethodHead) {
		f.rp.ServeHTTP(w, r)
		return
	}
	head, err := http.NewRequestWithContext(r.Context(), http.MethodHead, f.opts.Target+r.URL.Path, nil)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	head.Header = r.Header.Clone()
	tr := f.opts.Transport
	if tr == nil {
		tr = http.DefaultTransport
	}
	resp, err := tr.RoundTrip(head)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		f.rp.ServeHTTP(w, r) // 401, 404: the registry's own answer
		return
	}
	f.Redirects.Add(1)
	w.Header().Set("Location", fmt.Sprintf("http://%s/blobs/%s?X-Amz-Expires=300&X-Amz-Signature=%x", f.Storage, m[2], time.Now().UnixNano()))
	w.WriteHeader(http.StatusTemporaryRedirect)
}

// storage serves blobs from the registry's storage directory, recording
// each request; the Storage server redirects again with SecondHop.
func (f *Front) storage(self *string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.requests[*self] = append(f.requests[*self], Request{Method: r.Method, Path: r.URL.Path, Header: r.Header.Clone()})
		f.mu.Unlock()
		if f.opts.SecondHop && *self == f.Storage {
			http.Redirect(w, r, "http://"+f.Elsewhere+r.URL.RequestURI(), http.StatusTemporaryRedirect)
			return
		}
		hex := filepath.Base(r.URL.Path)
		if r.URL.Query().Get("X-Amz-Signature") == "" || len(hex) != 64 {
			http.Error(w, "AccessDenied", http.StatusForbidden)
			return
		}
		file, err := os.Open(filepath.Join(f.opts.StorageDir, "docker/registry/v2/blobs/sha256", hex[:2], hex, "data"))
		if err != nil {
			http.Error(w, "NoSuchKey", http.StatusNotFound)
			return
		}
		defer file.Close()
		w.Header().Set("Content-Type", "application/octet-stream")
		http.ServeContent(w, r, "", time.Time{}, file)
	})
}

// Requests returns what the server at addr (Storage or Elsewhere) was sent.
func (f *Front) Requests(addr string) []Request {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]Request(nil), f.requests[addr]...)
}

// Close stops the three servers.
func (f *Front) Close() {
	for _, s := range f.servers {
		s.Close()
	}
}
