// Package testvault runs a real HashiCorp Vault dev server on a loopback port
// with the transit engine mounted at transit/, the path sigstore's
// hashivault:// KMS provider uses by default. Point that provider at it with
// VAULT_ADDR=Addr() and VAULT_TOKEN set. It does not depend on package testing.
package testvault

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/p7bundle/p7bundle/internal/testing/testenv"
	"github.com/p7bundle/p7bundle/internal/testing/testregistry"
)

// Vault is a running `vault server -dev` process. Its storage is in memory:
// keys, policies and tokens are gone once it is closed.
type Vault struct {
	addr, token string
	logFile     string
	cmd         *exec.Cmd
	done        chan struct{} // closed when the process has exited
	client      *http.Client
}

// Error is a Vault API answer other than 2xx.
type Error struct {
	Method, Path string
	StatusCode   int
	Errors       []string
}

func (e *Error) Error() string {
	return fmt.Sprintf("vault %s %s: %d %s", e.Method, e.Path, e.StatusCode, strings.Join(e.Errors, "; "))
}

// Start runs the dev server with its log, HOME and TMPDIR in dir, waits
// until it is unsealed and active, and mounts transit. Close it when done.
func Start(ctx context.Context, dir string) (*Vault, error) {
	bin, err := testenv.Tool("vault")
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	tok := make([]byte, 16)
	rand.Read(tok)
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.Proxy = nil // never route loopback through a proxy from the environment
	v := &Vault{
		token:   "root-" + hex.EncodeToString(tok),
		logFile: filepath.Join(dir, "vault.log"),
		client:  &http.Client{Transport: tr, Timeout: 30 * time.Second},
	}
	// Picking a free port and handing it to another process is racy; retry.
	for attempt := 0; ; attempt++ {
		port, err := testregistry.FreePort()
		if err != nil {
			return nil, err
		}
		v.addr = fmt.Sprintf("http://127.0.0.1:%d", port)
		err = v.launch(ctx, bin, dir, port)
		if err == nil {
			break
		}
		if attempt == 3 || ctx.Err() != nil {
			return nil, err
		}
	}
	if err := v.Do(ctx, v.token, http.MethodPost, "sys/mounts/transit", map[string]any{"type": "transit"}, nil); err != nil {
		v.Close()
		return nil, err
	}
	return v, nil
}

// launch starts the process once and waits for readiness; on failure the
// process is killed and the error carries the log tail.
func (v *Vault) launch(ctx context.Context, bin, dir string, port int) error {
	logf, err := os.OpenFile(v.logFile, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close() // the child has its own copy of the fd
	// Not exec.CommandContext: the process must outlive the ctx passed to Start.
	cmd := exec.Command(bin, "server", "-dev",
		fmt.Sprintf("-dev-listen-address=127.0.0.1:%d", port),
		"-dev-root-token-id="+v.token,
		"-dev-no-store-token", // else it writes $HOME/.vault-token
	)
	cmd.Dir = dir
	// HOME: the built-in snowflake plugin creates $HOME/.cache/snowflake at startup.
	cmd.Env = append(environ(), "HOME="+dir, "TMPDIR="+dir)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("testvault: start %s: %w", bin, err)
	}
	v.cmd, v.done = cmd, make(chan struct{})
	go func() { cmd.Wait(); close(v.done) }()

	if err := v.waitReady(ctx, 30*time.Second); err != nil {
		v.Close()
		return fmt.Errorf("testvault: %w\n--- %s (tail) ---\n%s", err, v.logFile, testregistry.Tail(v.logFile, 4096))
	}
	return nil
}

// environ is the parent's environment without VAULT_*, which would
// configure the dev server (VAULT_DEV_ROOT_TOKEN_ID, VAULT_CLUSTER_ADDR, ...).
func environ() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "VAULT_") {
			env = append(env, kv)
		}
	}
	return env
}

// waitReady polls sys/health, which answers 200 once the server is
// initialized, unsealed and active.
func (v *Vault) waitReady(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	c := *v.client
	c.Timeout = time.Second
	var last string
	for {
		select {
		case <-v.done:
			return fmt.Errorf("vault exited early (%v)", v.cmd.ProcessState)
		case <-ctx.Done():
			return ctx.Err()
		default:
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, v.addr+"/v1/sys/health", nil)
		resp, err := c.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = resp.Status
		} else {
			last = err.Error()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("vault at %s not ready after %s: %s", v.addr, timeout, last)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Addr is the API address, http://127.0.0.1:PORT (VAULT_ADDR).
func (v *Vault) Addr() string { return v.addr }

// RootToken is the dev server's root token.
func (v *Vault) RootToken() string { return v.token }

// Close sends SIGTERM to the process group, escalating to SIGKILL after 5s,
// and waits for the process to exit.
func (v *Vault) Close() error {
	if v == nil || v.cmd == nil {
		return nil
	}
	v.client.CloseIdleConnections()
	select {
	case <-v.done:
		return nil // already reaped; the pid may belong to someone else by now
	default:
	}
	pid := v.cmd.Process.Pid
	syscall.Kill(-pid, syscall.SIGTERM)
	select {
	case <-v.done:
	case <-time.After(5 * time.Second):
		syscall.Kill(-pid, syscall.SIGKILL)
		<-v.done
	}
	return nil
}

// CreateKey creates the transit key name of keyType ("ecdsa-p256",
// "ed25519", "rsa-2048", ...); hashivault://name then refers to it.
func (v *Vault) CreateKey(ctx context.Context, name, keyType string) error {
	return v.Do(ctx, v.token, http.MethodPost, "transit/keys/"+name, map[string]any{"type": keyType}, nil)
}

// WritePolicy creates or replaces the ACL policy name.
func (v *Vault) WritePolicy(ctx context.Context, name, hcl string) error {
	return v.Do(ctx, v.token, http.MethodPut, "sys/policies/acl/"+name, map[string]any{"policy": hcl}, nil)
}

// CreateToken creates a child of the root token with the given policies
// (plus "default").
func (v *Vault) CreateToken(ctx context.Context, policies ...string) (string, error) {
	var out struct {
		Auth struct {
			ClientToken string `json:"client_token"`
		} `json:"auth"`
	}
	if err := v.Do(ctx, v.token, http.MethodPost, "auth/token/create", map[string]any{"policies": policies}, &out); err != nil {
		return "", err
	}
	return out.Auth.ClientToken, nil
}

// RevokeToken revokes token and its children.
func (v *Vault) RevokeToken(ctx context.Context, token string) error {
	return v.Do(ctx, v.token, http.MethodPost, "auth/token/revoke", map[string]any{"token": token}, nil)
}

// Do sends method /v1/path with token and the JSON of in (if not nil) and
// decodes the answer into out (if not nil). An answer other than 2xx is an
// *Error.
func (v *Vault) Do(ctx context.Context, token, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, v.addr+"/v1/"+path, body)
	if err != nil {
		return err
	}
	req.Header.Set("X-Vault-Token", token)
	resp, err := v.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		e := &Error{Method: method, Path: path, StatusCode: resp.StatusCode}
		var msg struct{ Errors []string }
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		if json.Unmarshal(b, &msg) == nil {
			e.Errors = msg.Errors
		} else {
			e.Errors = []string{strings.TrimSpace(string(b))}
		}
		return e
	}
	if out == nil || resp.StatusCode == http.StatusNoContent {
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("vault %s %s: %w", method, path, err)
	}
	return nil
}
