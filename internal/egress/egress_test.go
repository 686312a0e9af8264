package egress

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
)

func TestGuardRefusesOtherHosts(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	g := New(ln.Addr().String(), "registry.site")
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
	if _, err := g.DialContext(context.Background(), "tcp", "registry.site:443"); errors.Is(err, ErrDenied) {
		t.Errorf("registry.site:443 should be allowed: %v", err)
	}
}
