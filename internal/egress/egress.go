// Package egress keeps install's network clients to the hosts they were
// given: any other dial fails at once, naming the host, so a stray lookup
// shows up in tests instead of as a timeout at an air-gapped site.
package egress

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"
)

// ErrDenied marks a dial the guard refused.
var ErrDenied = errors.New("egress guard")

// Guard allows dials to an explicit list of host:port endpoints.
type Guard struct {
	allowed map[string]bool
	names   []string
	dialer  net.Dialer
}

// New allows each "host:port" (or "host", meaning :443) in endpoints.
func New(endpoints ...string) *Guard {
	g := &Guard{allowed: map[string]bool{}, dialer: net.Dialer{Timeout: 15 * time.Second, KeepAlive: 30 * time.Second}}
	for _, e := range endpoints {
		if e == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(e); err != nil {
			e = net.JoinHostPort(strings.Trim(e, "[]"), "443")
		}
		g.allowed[strings.ToLower(e)] = true
		g.names = append(g.names, e)
	}
	return g
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

// Allows says whether a dial to addr would pass.
func (g *Guard) Allows(addr string) bool { return g.allowed[strings.ToLower(addr)] }

// DialContext dials addr if it is allowed and fails immediately otherwise.
func (g *Guard) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	if !g.Allows(addr) {
		return nil, fmt.Errorf("%w: refusing to dial %s (allowed: %s)", ErrDenied, addr, strings.Join(g.names, ", "))
	}
	return g.dialer.DialContext(ctx, network, addr)
}
