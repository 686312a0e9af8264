package main

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/p7bundle/p7bundle/bundle"
	"github.com/p7bundle/p7bundle/internal/testing/testvault"
)

// A key that never touches disk: a real Vault dev server's transit engine
// signs the bundle, its provenance and TOC; the exported public key lets
// stock cosign verify them; each way the KMS can fail is one clear line.
func TestKMSKeyInVault(t *testing.T) {
	s := startSite(t)
	ctx := context.Background()
	v, err := testvault.Start(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.Close() })
	for _, k := range []string{"p7bundle", "security"} {
		if err := v.CreateKey(ctx, k, "ecdsa-p256"); err != nil {
			t.Fatal(err)
		}
	}
	if err := v.WritePolicy(ctx, "bundle-signer", `
path "transit/sign/p7bundle/*" { capabilities = ["update"] }
path "transit/sign/p7bundle" { capabilities = ["update"] }
path "transit/keys/p7bundle" { capabilities = ["read"] }
path "transit/sign/security/*" { capabilities = ["update"] }
path "transit/sign/security" { capabilities = ["update"] }
path "transit/keys/security" { capabilities = ["read"] }
`); err != nil {
		t.Fatal(err)
	}
	token, err := v.CreateToken(ctx, "bundle-signer")
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("VAULT_ADDR", v.Addr())
	t.Setenv("VAULT_TOKEN", token)
	os.Unsetenv("COSIGN_PASSWORD") // a KMS key needs no password (t.Setenv in startSite restores it)

	const kmsKey = "hashivault://p7bundle"
	withKey := func(key string, args []string) []string {
		out := append([]string(nil), args...)
		for i, a := range out {
			if a == s.key {
				out[i] = key
			}
		}
		return out
	}
	out := filepath.Join(s.dir, "kms.tar.zst")
	r := p7(t, s.up.Password+"\n", withKey(kmsKey, s.buildArgs(out))...)
	if r.code != 0 {
		t.Fatalf("build with %s: %v", kmsKey, r)
	}

	pub := filepath.Join(s.dir, "vault.pub")
	if r := p7(t, "", "public-key", "--key", kmsKey, "-o", pub); r.code != 0 {
		t.Fatalf("public-key: %v", r)
	}
	for _, key := range []string{kmsKey, pub} {
		r := p7(t, "", "verify", out, "--key", key)
		if r.code != 0 || !strings.Contains(r.stdout, "provenance: valid") {
			t.Fatalf("verify --key %s: %v", key, r)
		}
	}
	// Stock cosign, with the exported key only: the archive, the
	// provenance, and the install path's check of the table of contents.
	cs := newCosign(t, t.TempDir())
	cs.must("verify-blob", "--key", pub, "--signature", out+".sig", "--insecure-ignore-tlog", out)
	cs.must("verify-blob-attestation", "--key", pub, "--type", "slsaprovenance1", "--signature", out+bundle.ProvenanceSuffix, "--insecure-ignore-tlog", out)
	reg := startSiteRegistry(t)
	if r := p7(t, reg.Password+"\n", pushArgs(reg, out, kmsKey)...); r.code != 0 {
		t.Fatalf("push --key %s: %v", kmsKey, r)
	}
	// The security team's approval, signed in Vault as well: checked with
	// the KMS key and its exported public key, by p7bundle and stock cosign.
	const approverKMS = "hashivault://security"
	if r := p7(t, "", "approve", out, "--key", approverKMS, "--bundle-key", pub, "--site", "plant-a"); r.code != 0 {
		t.Fatalf("approve --key %s: %v", approverKMS, r)
	}
	approverPub := filepath.Join(s.dir, "security-vault.pub")
	if r := p7(t, "", "public-key", "--key", approverKMS, "-o", approverPub); r.code != 0 {
		t.Fatalf("public-key: %v", r)
	}
	for _, key := range []string{approverKMS, approverPub} {
		if r := p7(t, "", "verify", out, "--key", pub, "--approver-key", key, "--site", "plant-a"); r.code != 0 || !strings.Contains(r.stdout, "approval 1: valid") {
			t.Fatalf("verify --approver-key %s: %v", key, r)
		}
	}
	if r := p7(t, "", "verify", out, "--key", pub, "--approvals", "--json"); r.code != 0 || !strings.Contains(r.stdout, `"approverKMS": "`+approverKMS+`"`) {
		t.Fatalf("the approval does not name its KMS key: %v", r)
	}
	line := filepath.Join(s.dir, "vault-approval.json")
	os.WriteFile(line, bytes.TrimSpace(mustRead(t, bundle.ApprovalPath(out))), 0o644)
	cs.must("verify-blob-attestation", "--key", approverPub, "--type", bundle.ApprovalPredicateType, "--signature", line, "--insecure-ignore-tlog", out)
	if r := p7(t, reg.Password+"\n", pushArgs(reg, out, kmsKey, "--require-approval", approverKMS, "--site", "plant-a")...); r.code != 0 {
		t.Fatalf("push --require-approval %s: %v", approverKMS, r)
	}

	// The bundle is not signed by the file key.
	if r := p7(t, "", "verify", out, "--key", s.pub); r.code != exitVerify {
		t.Fatalf("verify with another key: %v", r)
	}

	oneLine := func(name string, r result, want ...string) {
		t.Helper()
		line := strings.TrimSpace(r.stderr)
		if r.code != exitKey || strings.Contains(line, "\n") {
			t.Fatalf("%s: want exit %d and one line: %v", name, exitKey, r)
		}
		for _, w := range want {
			if !strings.Contains(line, w) {
				t.Fatalf("%s: %q does not say %q", name, line, w)
			}
		}
		if strings.Contains(r.stdout+r.stderr, token) || strings.Contains(r.stdout+r.stderr, v.RootToken()) {
			t.Fatalf("%s: a Vault token is in the output", name)
		}
		if _, err := os.Stat(filepath.Join(s.dir, "never.tar.zst")); !os.IsNotExist(err) {
			t.Fatalf("%s: a failed build left its output", name)
		}
	}
	never := filepath.Join(s.dir, "never.tar.zst")
	oneLine("wrong key name", p7(t, s.up.Password+"\n", withKey("hashivault://no-such-key", s.buildArgs(never))...), "hashivault://no-such-key")
	oneLine("verify with a wrong key name", p7(t, "", "verify", out, "--key", "hashivault://no-such-key"), "hashivault://no-such-key")

	t.Setenv("VAULT_ADDR", "http://127.0.0.1:1")
	oneLine("unreachable Vault", p7(t, s.up.Password+"\n", withKey(kmsKey, s.buildArgs(never))...), kmsKey, "127.0.0.1:1")
	t.Setenv("VAULT_ADDR", v.Addr())

	if err := v.RevokeToken(ctx, token); err != nil {
		t.Fatal(err)
	}
	oneLine("revoked token", p7(t, s.up.Password+"\n", withKey(kmsKey, s.buildArgs(never))...), kmsKey, "permission denied")
	oneLine("public-key with a revoked token", p7(t, "", "public-key", "--key", kmsKey), kmsKey, "permission denied")
}

// The AWS SDK logs its IMDS fallback to the process's stderr; p7bundle's
// one error line must stay the only one. A local server that refuses every
// request stands in for the instance metadata service.
func TestAWSKMSFailureIsOneLine(t *testing.T) {
	imds := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "forbidden", http.StatusForbidden)
	}))
	defer imds.Close()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self, "verify", filepath.Join(t.TempDir(), "b.tar.zst"), "--key", "awskms:///alias/p7bundle")
	cmd.Env = []string{asCLI + "=1", "HOME=" + t.TempDir(), "AWS_REGION=eu-west-1",
		"AWS_EC2_METADATA_SERVICE_ENDPOINT=" + imds.URL, "AWS_CONFIG_FILE=/nonexistent", "AWS_SHARED_CREDENTIALS_FILE=/nonexistent"}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err = cmd.Run()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != exitKey {
		t.Fatalf("exit %v, want %d\n%s", err, exitKey, stderr.String())
	}
	if lines := strings.Split(strings.TrimSpace(stderr.String()), "\n"); len(lines) != 1 || !strings.HasPrefix(lines[0], "p7bundle: key error: key awskms:///alias/p7bundle:") {
		t.Errorf("stderr is not one error line:\n%s", stderr.String())
	}
}
