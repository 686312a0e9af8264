package main

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const innerNetNS = "P7BUNDLE_TEST_IN_EMPTY_NETNS"

// TestBuildWithZeroEgress runs a whole build and verify inside a network
// namespace holding only loopback (with the upstream registry in it): a
// hidden call to the internet would fail the build.
func TestBuildWithZeroEgress(t *testing.T) {
	if os.Getenv(innerNetNS) == "1" {
		buildInEmptyNetNS(t)
		return
	}
	if testing.Short() {
		t.Skip("needs a network namespace")
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("unshare", "--net", "--", self, "-test.run", "^TestBuildWithZeroEgress$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), innerNetNS+"=1")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "zero-egress build verified") {
		t.Fatalf("build in an empty network namespace: %v\n%s", err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if strings.Contains(line, "egress_test.go") {
			t.Log(strings.TrimSpace(line))
		}
	}
}

func buildInEmptyNetNS(t *testing.T) {
	if out, err := exec.Command("ip", "link", "set", "lo", "up").CombinedOutput(); err != nil {
		t.Fatalf("ip link set lo up: %v %s", err, out)
	}
	// Documentation addresses (TEST-NET-1, 2001:db8::/32): nothing answers there anyway.
	for _, addr := range []string{"192.0.2.1:443", "[2001:db8::1]:443"} {
		start := time.Now()
		if c, err := net.DialTimeout("tcp", addr, 2*time.Second); err == nil {
			c.Close()
			t.Fatalf("%s reachable: the namespace is not empty", addr)
		} else {
			t.Logf("dial %s: %v after %v", addr, err, time.Since(start).Round(time.Microsecond))
		}
	}
	s := startSite(t)
	out := filepath.Join(s.dir, "b.tar.zst")
	if r := s.build(t, out); r.code != 0 {
		t.Fatalf("build: %v", r)
	}
	if r := p7(t, "", "verify", out, "--key", s.pub); r.code != 0 {
		t.Fatalf("verify: %v", r)
	}
	t.Log("zero-egress build verified")
}
