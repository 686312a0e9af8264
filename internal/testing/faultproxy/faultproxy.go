// Package faultproxy is a reverse proxy for tests that sits in front of a
// real registry and misbehaves the way networks do: 5xx and 429 answers
// and connections reset in the middle of a body, on a seeded share of
// requests.
package faultproxy

import (
	"bufio"
	"fmt"
	"io"
	"math/rand"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sync"
	"sync/atomic"
	"time"
)

// Options configure the proxy.
type Options struct {
	// Target is the upstream URL, e.g. http://127.0.0.1:5000.
	Target string
	// Rate is the share of requests that fail (0.1 = 10 %).
	Rate float64
	// Seed makes the fault sequence repeatable.
	Seed int64
	// Transport reaches the target (TLS settings); default http.DefaultTransport.
	Transport http.RoundTripper
	// Delay slows every request down, so a test can interrupt a transfer
	// (or a benchmark can add a WAN's round trip).
	Delay time.Duration
	// Listen is the address to listen on; default a free loopback port.
	Listen string
	// Answer, when it returns true, has answered the request itself: a
	// registry's own behaviour (Harbor's missing project, a 202 mount)
	// in front of a real one.
	Answer func(w http.ResponseWriter, r *http.Request) bool
	// Modify changes each response from the target before it is sent on
	// (a registry that leaves out a header).
	Modify func(*http.Response)
}

// Proxy is a running fault-injecting proxy on loopback.
type Proxy struct {
	// Host is "127.0.0.1:PORT" (or Listen's address), to use as a registry
	// address (plain HTTP).
	Host string

	Requests, Status5xx, Status429, Resets atomic.Int64
	// BytesIn counts request bodies (uploads), BytesOut response bodies.
	BytesIn, BytesOut atomic.Int64

	srv    *http.Server
	ln     net.Listener
	mu     sync.Mutex
	rng    *rand.Rand
	rate   float64
	delay  time.Duration
	answer func(http.ResponseWriter, *http.Request) bool
	rp     *httputil.ReverseProxy
}

// Start listens on opts.Listen, by default a free loopback port.
func Start(opts Options) (*Proxy, error) {
	u, err := url.Parse(opts.Target)
	if err != nil {
		return nil, err
	}
	listen := opts.Listen
	if listen == "" {
		listen = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, err
	}
	p := &Proxy{Host: ln.Addr().String(), ln: ln, rng: rand.New(rand.NewSource(opts.Seed)), rate: opts.Rate, delay: opts.Delay, answer: opts.Answer}
	p.rp = httputil.NewSingleHostReverseProxy(u)
	if opts.Transport != nil {
		p.rp.Transport = opts.Transport
	}
	// Upload locations point at the registry; clients must come back here.
	p.rp.ModifyResponse = func(r *http.Response) error {
		if loc := r.Header.Get("Location"); loc != "" {
			if l, err := url.Parse(loc); err == nil && l.Host != "" {
				l.Scheme, l.Host = "http", p.Host
				r.Header.Set("Location", l.String())
			}
		}
		if opts.Modify != nil {
			opts.Modify(r)
		}
		return nil
	}
	p.srv = &http.Server{Handler: p}
	go p.srv.Serve(ln)
	return p, nil
}

// fault picks what happens to one request: 0 passes it through, 1-3 is
// a 500/502/503, 4 a 429, 5 a reset.
func (p *Proxy) fault() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.rng.Float64() >= p.rate {
		return 0
	}
	return 1 + p.rng.Intn(5)
}

func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.Requests.Add(1)
	time.Sleep(p.delay)
	if r.Body != nil {
		r.Body = &countingBody{ReadCloser: r.Body, n: &p.BytesIn}
	}
	w = &countingWriter{ResponseWriter: w, n: &p.BytesOut}
	if p.answer != nil && p.answer(w, r) {
		return
	}
	switch f := p.fault(); f {
	case 1, 2, 3:
		p.Status5xx.Add(1)
		code := []int{http.StatusInternalServerError, http.StatusBadGateway, http.StatusServiceUnavailable}[f-1]
		io.Copy(io.Discard, io.LimitReader(r.Body, 1<<20))
		http.Error(w, "injected fault", code)
	case 4:
		p.Status429.Add(1)
		w.Header().Set("Retry-After", "1")
		http.Error(w, "injected rate limit", http.StatusTooManyRequests)
	case 5:
		p.Resets.Add(1)
		p.reset(w, r)
	default:
		p.rp.ServeHTTP(w, r)
	}
}

// reset forwards the request, sends the status and half the body, then
// drops the connection: a reset in the middle of a transfer.
func (p *Proxy) reset(w http.ResponseWriter, r *http.Request) {
	rec := &halfWriter{ResponseWriter: w}
	if r.Method != http.MethodGet {
		// For uploads: read part of the body, then hang up.
		io.CopyN(io.Discard, r.Body, 4096)
		hangUp(w)
		return
	}
	p.rp.ServeHTTP(rec, r)
	hangUp(w)
}

func hangUp(w http.ResponseWriter) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		panic(fmt.Sprintf("faultproxy: %T cannot hijack", w))
	}
	conn, buf, err := hj.Hijack()
	if err != nil {
		return
	}
	buf.Flush()
	if tc, ok := conn.(*net.TCPConn); ok {
		tc.SetLinger(0) // RST, not FIN
	}
	conn.Close()
}

type countingBody struct {
	io.ReadCloser
	n *atomic.Int64
}

func (c *countingBody) Read(b []byte) (int, error) {
	n, err := c.ReadCloser.Read(b)
	c.n.Add(int64(n))
	return n, err
}

type countingWriter struct {
	http.ResponseWriter
	n *atomic.Int64
}

func (c *countingWriter) Write(b []byte) (int, error) {
	n, err := c.ResponseWriter.Write(b)
	c.n.Add(int64(n))
	return n, err
}

func (c *countingWriter) Flush() {
	if f, ok := c.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (c *countingWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	return c.ResponseWriter.(http.Hijacker).Hijack()
}

// halfWriter passes headers and the first half of a declared body.
type halfWriter struct {
	http.ResponseWriter
	limit, written int64
	started        bool
}

func (h *halfWriter) WriteHeader(code int) {
	if !h.started {
		h.started = true
		var n int64
		fmt.Sscan(h.Header().Get("Content-Length"), &n)
		h.limit = n / 2
	}
	h.ResponseWriter.WriteHeader(code)
}

func (h *halfWriter) Write(b []byte) (int, error) {
	if !h.started {
		h.WriteHeader(http.StatusOK)
	}
	if h.written >= h.limit {
		return len(b), nil // swallowed: the connection is about to drop
	}
	n := int64(len(b))
	if h.written+n > h.limit {
		n = h.limit - h.written
	}
	h.written += n
	if _, err := h.ResponseWriter.Write(b[:n]); err != nil {
		return 0, err
	}
	if f, ok := h.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
	return len(b), nil
}

// Injected is the total number of faults injected.
func (p *Proxy) Injected() int64 { return p.Status5xx.Load() + p.Status429.Load() + p.Resets.Load() }

// Close stops the proxy.
func (p *Proxy) Close() error { return p.srv.Close() }
