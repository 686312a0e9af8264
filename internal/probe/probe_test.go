package probe

import (
	"bytes"
	"crypto/tls"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// serve answers every connection with handle.
func serve(t *testing.T, l net.Listener, handle func(net.Conn)) string {
	t.Helper()
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); handle(c) }()
		}
	}()
	return l.Addr().String()
}

func listen(t *testing.T) net.Listener {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func TestPostgres(t *testing.T) {
	pg := serve(t, listen(t), func(c net.Conn) {
		b := make([]byte, 8)
		if _, err := c.Read(b); err == nil && bytes.Equal(b[4:], []byte{0x04, 0xd2, 0x16, 0x2f}) {
			c.Write([]byte("N"))
		}
	})
	web := serve(t, listen(t), func(c net.Conn) { c.Write([]byte("HTTP/1.1 400 Bad Request\r\n\r\n")) })
	closed := listen(t)
	closedAddr := closed.Addr().String()
	closed.Close()
	for addr, want := range map[string]string{pg: Pass, web: Fail, closedAddr: Fail} {
		r := Postgres("postgres.host", addr)
		if r.Status != want || r.Key != "postgres.host" || !strings.Contains(r.Detail, addr) {
			t.Errorf("%s: %+v, want %s", addr, r, want)
		}
	}
}

func TestSMTP(t *testing.T) {
	smtp := serve(t, listen(t), func(c net.Conn) { c.Write([]byte("220 mail.example ESMTP\r\n")) })
	other := serve(t, listen(t), func(c net.Conn) { c.Write([]byte("SSH-2.0-OpenSSH\r\n")) })
	// SMTPS: the greeting after a TLS handshake.
	srv := httptest.NewUnstartedServer(nil)
	srv.StartTLS()
	cert := srv.TLS.Certificates
	srv.Close()
	tl, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: cert})
	if err != nil {
		t.Fatal(err)
	}
	smtps := serve(t, tl, func(c net.Conn) { c.Write([]byte("220 smtps ready\r\n")) })
	for _, c := range []struct {
		addr string
		tls  bool
		want string
	}{{smtp, false, Pass}, {other, false, Fail}, {smtps, true, Pass}, {smtp, true, Fail}} {
		if r := SMTP("smtp.host", c.addr, c.tls); r.Status != c.want {
			t.Errorf("%s tls=%v: %+v, want %s", c.addr, c.tls, r, c.want)
		}
	}
}

func TestShares(t *testing.T) {
	a, b := t.TempDir(), t.TempDir()
	results := Shares([]Share{
		{Key: "storage.nfs.dataPath", Mount: a},
		{Key: "storage.nfs.homePath", Mount: b},
		{Key: "storage.nfs.samePath", Mount: a},
		{Key: "storage.nfs.missingPath", Mount: filepath.Join(a, "absent")},
	})
	got := map[string]string{}
	for _, r := range results {
		got[r.Check+" "+r.Key] = r.Status
	}
	want := map[string]string{
		"nfs-write storage.nfs.dataPath": Pass, "nfs-flock storage.nfs.dataPath": Pass,
		"nfs-write storage.nfs.homePath": Pass, "nfs-flock storage.nfs.homePath": Pass,
		"nfs-layout storage.nfs.samePath":   Fail, // same directory as dataPath
		"nfs-write storage.nfs.missingPath": Fail,
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %q, want %s (all: %v)", k, got[k], v, got)
		}
	}
	// The test runs as root, not UID 11111: the owner check says so.
	if got["nfs-owner storage.nfs.dataPath"] != Warn {
		t.Errorf("owner = %q", got["nfs-owner storage.nfs.dataPath"])
	}
	for _, d := range []string{a, b} {
		if left, _ := filepath.Glob(filepath.Join(d, ".p7bundle-doctor-*")); len(left) > 0 {
			t.Errorf("left behind: %v", left)
		}
	}
}

func TestEmitParse(t *testing.T) {
	var buf bytes.Buffer
	buf.WriteString("panic: not a result\n")
	Emit(&buf, Result{Check: "postgres", Key: "postgres.host", Status: Pass, Detail: "ok"})
	buf.WriteString("{}\n")
	rs := Parse(&buf)
	if len(rs) != 1 || rs[0].Key != "postgres.host" {
		t.Errorf("parsed %+v", rs)
	}
}

func TestRootSquash(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root")
	}
	rs := RootSquash([]Share{{Key: "storage.a", Mount: t.TempDir()}, {Key: "storage.gone", Mount: "/nonexistent/p7"}})
	if rs[0].Status != Pass || rs[1].Status != Fail {
		t.Errorf("as root: %+v", rs)
	}
	for _, c := range []struct {
		euid, uid int
		err       error
		want      string
	}{
		{0, 0, nil, Pass},
		{0, 65534, nil, Fail}, // squashed to nobody
		{0, -1, &os.PathError{Op: "open", Path: "/s/a/x", Err: syscall.EACCES}, Fail},
		{11111, 11111, nil, Warn},
	} {
		if r := rootResult("storage.a", c.euid, c.uid, c.err); r.Status != c.want || r.Key != "storage.a" {
			t.Errorf("euid %d uid %d err %v: %+v, want %s", c.euid, c.uid, c.err, r, c.want)
		}
	}
	if r := rootResult("k", 0, 65534, nil); !strings.Contains(r.Detail, "owned by UID 65534") || !strings.Contains(r.Detail, "no_root_squash") {
		t.Errorf("detail: %s", r.Detail)
	}
}
