package testsite

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/p7bundle/p7bundle/internal/testing/fixture"
	"github.com/p7bundle/p7bundle/internal/testing/testregistry"
)

// Some work has to happen inside the site's namespaces, where the registry is
// reachable. Rather than building a separate helper program, the site
// re-executes the current binary (any test binary or program that imports
// this package) with helperEnv set; init runs the helper before main.
const helperEnv = "P7BUNDLE_TESTSITE_HELPER"

func init() {
	mode := os.Getenv(helperEnv)
	if mode == "" {
		return
	}
	os.Unsetenv(helperEnv) // not for the helper's children
	var err error
	switch mode {
	case "push":
		err = helperPush()
	case "reap":
		err = helperReap(os.Args[1:])
	case "token":
		err = helperToken(os.Args[1:])
	default:
		err = fmt.Errorf("unknown mode %q", mode)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "testsite helper %s: %v\n", mode, err)
		os.Exit(1)
	}
	os.Exit(0)
}

// pushRequest is what the "push" helper reads on stdin.
type pushRequest struct {
	Registry, Username, Password, CAFile string
	Wait                                 time.Duration // for the registry to answer
	Fixture                              []string      // fixture "repo:tag"s
}

// helperPush pushes fixture images and writes the digests (ref => digest)
// as JSON to stdout.
func helperPush() error {
	var req pushRequest
	if err := json.NewDecoder(os.Stdin).Decode(&req); err != nil {
		return err
	}
	ctx := context.Background()
	pem, err := os.ReadFile(req.CAFile)
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return fmt.Errorf("no certificates in %s", req.CAFile)
	}
	tr := remote.DefaultTransport.(*http.Transport).Clone()
	tr.Proxy = nil
	tr.TLSClientConfig = &tls.Config{RootCAs: pool}
	if err := waitRegistry(ctx, &http.Client{Transport: tr, Timeout: time.Second}, req.Registry, req.Wait); err != nil {
		return err
	}
	digests := map[string]string{}
	if len(req.Fixture) > 0 {
		m, err := fixture.PushImages(ctx, fixture.Options{
			Registry: req.Registry, Username: req.Username, Password: req.Password, CAFile: req.CAFile,
		}, req.Fixture)
		if err != nil {
			return err
		}
		for k, v := range m {
			digests[k] = v
		}
	}
	return json.NewEncoder(os.Stdout).Encode(digests)
}

// waitRegistry polls /v2/ until the registry answers (401 without credentials).
// helperToken serves the registry's token service inside the site until
// killed. Arguments: ADDR USER PASSWORD-FILE CERT KEY SIGNER-DIR.
func helperToken(args []string) error {
	if len(args) != 6 {
		return fmt.Errorf("want ADDR USER PASSWORD-FILE CERT KEY SIGNER-DIR, got %q", args)
	}
	password, err := os.ReadFile(args[2])
	if err != nil {
		return err
	}
	if _, err := testregistry.StartTokenServer(testregistry.TokenOptions{
		Addr: args[0], Username: args[1], Password: string(password), CertFile: args[3], KeyFile: args[4], SignerDir: args[5],
	}); err != nil {
		return err
	}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	<-stop
	return nil
}

func waitRegistry(ctx context.Context, c *http.Client, host string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		resp, err := c.Get("https://" + host + "/v2/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusOK {
				return nil
			}
			err = errors.New(resp.Status)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("registry %s not ready after %s: %w", host, timeout, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// writePauseArchive writes a docker archive (`docker save` format) of a
// one-layer image holding the pause binary as /pause, tagged ref, for
// `ctr images import`.
func writePauseArchive(bin, ref, path string) error {
	b, err := os.ReadFile(bin)
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Name: "pause", Mode: 0o755, Size: int64(len(b)), Typeflag: tar.TypeReg}); err != nil {
		return err
	}
	tw.Write(b)
	if err := tw.Close(); err != nil {
		return err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(buf.Bytes())), nil
	})
	if err != nil {
		return err
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", runtime.GOARCH
	cf.Config.Entrypoint = []string{"/pause"}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		return err
	}
	tag, err := name.NewTag(ref)
	if err != nil {
		return err
	}
	return tarball.WriteToFile(path, tag, img)
}

// helperReap runs argv as a child subreaper: containerd daemonizes its shims,
// which would otherwise be reparented to PID 1 (and stay zombies forever on
// hosts whose PID 1 does not reap). Signals are forwarded to the child; when
// it exits, every remaining descendant is killed and reaped.
func helperReap(argv []string) error {
	if len(argv) == 0 {
		return errors.New("usage: reap <program> [args...]")
	}
	const prSetChildSubreaper = 36
	if _, _, errno := syscall.RawSyscall(syscall.SYS_PRCTL, prSetChildSubreaper, 1, 0); errno != 0 {
		return fmt.Errorf("prctl(PR_SET_CHILD_SUBREAPER): %w", errno)
	}
	path, err := exec.LookPath(argv[0])
	if err != nil {
		return err
	}
	child, err := os.StartProcess(path, argv, &os.ProcAttr{Files: []*os.File{os.Stdin, os.Stdout, os.Stderr}})
	if err != nil {
		return err
	}
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		for s := range sigs {
			child.Signal(s)
		}
	}()
	var status syscall.WaitStatus
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, 0, nil)
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if err != nil {
			return err
		}
		if pid == child.Pid {
			status = ws
			break
		}
	}
	// Kill what is left until nothing is: killed shims hand their own
	// children over to us.
	for {
		killChildren()
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
		if errors.Is(err, syscall.ECHILD) {
			break
		}
		if pid == 0 {
			time.Sleep(20 * time.Millisecond)
		}
	}
	if status.ExitStatus() != 0 && !status.Signaled() {
		return fmt.Errorf("%s: %v", argv[0], status.ExitStatus())
	}
	return nil
}

// killChildren SIGKILLs the processes whose parent is this one.
func killChildren() {
	self := strconv.Itoa(os.Getpid())
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		if i := bytes.LastIndexByte(b, ')'); i > 0 {
			if f := strings.Fields(string(b[i+1:])); len(f) > 1 && f[1] == self {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
}

//go:embed pause/main.go
var pauseSource []byte

// buildPause compiles the pause program as a static binary, cached under the
// user cache dir keyed by the source and the Go version.
func buildPause(ctx context.Context) (string, error) {
	return fixture.BuildStatic(ctx, "", "pause", pauseSource)
}
