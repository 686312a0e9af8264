package mirror

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/registry/remote/errcode"
)

func TestParseMirrors(t *testing.T) {
	got, err := ParseMirrors([]string{"registry.pseven.io=127.0.0.1:5000", " docker.io = cache.corp "})
	if err != nil || got["registry.pseven.io"] != "127.0.0.1:5000" || got["docker.io"] != "cache.corp" {
		t.Fatalf("ParseMirrors = %v, %v", got, err)
	}
	for _, bad := range []string{"noequals", "=x", "a=", "a=b/c", "a=::::", "a=cache.corp:0", "a=https://cache.corp", "a b=c"} {
		if _, err := ParseMirrors([]string{bad}); err == nil {
			t.Errorf("ParseMirrors(%q) accepted", bad)
		}
	}
}

func TestParsePlatform(t *testing.T) {
	for in, want := range map[string]string{"linux/amd64": "linux/amd64", "linux/arm/v7": "linux/arm/v7"} {
		p, err := ParsePlatform(in)
		if err != nil || PlatformString(p) != want {
			t.Errorf("ParsePlatform(%q) = %v, %v", in, p, err)
		}
	}
	for _, bad := range []string{"linux", "/amd64", "a/b/c/d", ""} {
		if _, err := ParsePlatform(bad); err == nil {
			t.Errorf("ParsePlatform(%q) accepted", bad)
		}
	}
}

func TestSplitRef(t *testing.T) {
	cases := map[string]string{
		"registry.pseven.io/pseven-app:1.0":                            "1.0",
		"127.0.0.1:5000/a/b:tag":                                       "tag",
		"registry.pseven.io/app:1.0@sha256:" + fmt.Sprintf("%064d", 0): "sha256:" + fmt.Sprintf("%064d", 0),
	}
	for in, want := range cases {
		_, got, err := splitRef(in)
		if err != nil || got != want {
			t.Errorf("splitRef(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, _, err := splitRef("registry.pseven.io/app"); err == nil {
		t.Error("reference without tag accepted")
	}
}

func TestTransientAndClassify(t *testing.T) {
	for err, want := range map[error]bool{
		fmt.Errorf("copy: %w", syscall.ECONNRESET): true,
		io.ErrUnexpectedEOF:                        true,
		&net.OpError{Op: "read", Net: "tcp", Err: errors.New("use of closed connection")}: true,
		&url.Error{Op: "Get", URL: "https://r/v2/", Err: timeoutError{}}:                  true,
		&net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}:                   false,
		errors.New("manifest unknown"):                                                    false,
		errors.New("read: connection reset by peer"):                                      false, // text, not type
	} {
		if transient(err) != want {
			t.Errorf("transient(%v) = %v, want %v", err, !want, want)
		}
	}
	if err := Classify(fmt.Errorf("dial: %w", syscall.ECONNREFUSED)); !errors.Is(err, ErrUnreachable) {
		t.Errorf("Classify(ECONNREFUSED) = %v", err)
	}
}

type timeoutError struct{}

func (timeoutError) Error() string   { return "i/o timeout" }
func (timeoutError) Timeout() bool   { return true }
func (timeoutError) Temporary() bool { return true }

func TestPlatforms(t *testing.T) {
	for _, s := range []string{"linux/amd64", "linux/arm64/v8", "windows/amd64"} {
		p, err := ParsePlatform(s)
		if err != nil || PlatformString(p) != s {
			t.Errorf("ParsePlatform(%q) = %+v, %v (renders %q)", s, p, err, PlatformString(p))
		}
	}
	for _, bad := range []string{"", "linux", "/amd64", "linux/", "a/b/c/d"} {
		if p, err := ParsePlatform(bad); err == nil {
			t.Errorf("ParsePlatform(%q) = %+v, want an error", bad, p)
		}
	}
	arm64v8, _ := ParsePlatform("linux/arm64/v8")
	arm64, _ := ParsePlatform("linux/arm64")
	armv6, _ := ParsePlatform("linux/arm/v6")
	armv7, _ := ParsePlatform("linux/arm/v7")
	if !matchPlatform(arm64v8, []ocispec.Platform{arm64}) {
		t.Error("linux/arm64 does not take linux/arm64/v8")
	}
	if matchPlatform(armv6, []ocispec.Platform{armv7}) || matchPlatform(arm64, []ocispec.Platform{armv7}) {
		t.Error("a platform matched another variant or architecture")
	}
}

func TestUploadRetriesWhatTheTransportCannot(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{&errcode.ErrorResponse{StatusCode: http.StatusServiceUnavailable}, true},
		{fmt.Errorf("uploading: %w", &errcode.ErrorResponse{StatusCode: http.StatusTooManyRequests}), true},
		{&errcode.ErrorResponse{StatusCode: http.StatusUnauthorized}, false},
		// A bearer token that expired under a streamed upload: a new read
		// gets a fresh one. Wrong credentials fail at the token service.
		{fmt.Errorf("uploading: %w", &errcode.ErrorResponse{Method: http.MethodPut, StatusCode: http.StatusUnauthorized}), true},
		{&errcode.ErrorResponse{Method: http.MethodPatch, StatusCode: http.StatusUnauthorized}, true},
		{fmt.Errorf(`HEAD "https://reg/v2/x/manifests/1": %w`, &errcode.ErrorResponse{Method: http.MethodGet, StatusCode: http.StatusUnauthorized}), false},
		{&errcode.ErrorResponse{StatusCode: http.StatusBadRequest}, false},
		{io.ErrUnexpectedEOF, true},
		{errors.New("bundle is corrupt"), false},
		// Classify names the sentinel but keeps the cause: a reset mid-upload
		// is still worth another try (it was not, and a flaky push failed).
		{Classify(&net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", syscall.ECONNRESET)}), true},
		{Classify(&net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}), false},
	} {
		if got := uploadTransient(tc.err); got != tc.want {
			t.Errorf("uploadTransient(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

func TestCAFileWithoutCertificates(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "ca.pem")
	os.WriteFile(bad, []byte("not a certificate\n"), 0o644)
	if _, err := NewClient(RegistryOptions{CAFile: bad}); !errors.Is(err, ErrCAFile) || !strings.Contains(err.Error(), bad) {
		t.Errorf("NewClient with %s: %v", bad, err)
	}
}

// HTTPS to a registry that speaks plain HTTP says what to do.
func TestPlainHTTPRegistryHint(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer srv.Close()
	c, err := NewClient(RegistryOptions{})
	if err != nil {
		t.Fatal(err)
	}
	err = Classify(c.Ping(context.Background(), strings.TrimPrefix(srv.URL, "http://")))
	if !errors.Is(err, ErrUnreachable) || !strings.Contains(err.Error(), "use --plain-http") {
		t.Fatalf("Ping over HTTPS of a plain-HTTP registry: %v", err)
	}
}
