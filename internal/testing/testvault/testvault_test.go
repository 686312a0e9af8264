package testvault

import (
	"context"
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestVault(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// No skip when the binary is missing: `make test-deps` provides it.
	v, err := Start(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.Close() })

	if err := v.CreateKey(ctx, "p7", "ecdsa-p256"); err != nil {
		t.Fatal(err)
	}
	pub := publicKey(t, v, "p7")
	msg := []byte("bundle manifest")
	digest := sha256.Sum256(msg)
	// sigstore's provider sends the digest with prehashed=true; Vault hashes
	// the plain input itself. Both must verify against the same digest.
	for _, in := range []map[string]any{
		{"input": base64.StdEncoding.EncodeToString(msg)},
		{"input": base64.StdEncoding.EncodeToString(digest[:]), "prehashed": true},
	} {
		sig, err := sign(ctx, v, v.RootToken(), "p7", in)
		if err != nil {
			t.Fatal(err)
		}
		if !ecdsa.VerifyASN1(pub, digest[:], sig) {
			t.Fatalf("signature with %v does not verify", in)
		}
	}

	if err := v.CreateKey(ctx, "other", "ecdsa-p256"); err != nil {
		t.Fatal(err)
	}
	// sigstore signs at transit/sign/NAME/sha2-256, hence the /* entry.
	policy := `
path "transit/sign/p7" { capabilities = ["update"] }
path "transit/sign/p7/*" { capabilities = ["update"] }
path "transit/keys/p7" { capabilities = ["read"] }
`
	if err := v.WritePolicy(ctx, "sign-p7", policy); err != nil {
		t.Fatal(err)
	}
	tok, err := v.CreateToken(ctx, "sign-p7")
	if err != nil {
		t.Fatal(err)
	}
	in := map[string]any{"input": base64.StdEncoding.EncodeToString(digest[:]), "prehashed": true}
	if _, err := sign(ctx, v, tok, "p7", in); err != nil {
		t.Fatalf("sign with the policy token: %v", err)
	}
	if err := v.Do(ctx, tok, http.MethodGet, "transit/keys/p7", nil, nil); err != nil {
		t.Fatalf("read key with the policy token: %v", err)
	}
	_, err = sign(ctx, v, tok, "other", in)
	wantForbidden(t, "sign with another key", err)
	err = v.Do(ctx, tok, http.MethodPost, "transit/keys/new", map[string]any{"type": "ecdsa-p256"}, nil)
	wantForbidden(t, "create a key", err)

	if err := v.RevokeToken(ctx, tok); err != nil {
		t.Fatal(err)
	}
	_, err = sign(ctx, v, tok, "p7", in)
	wantForbidden(t, "sign with a revoked token", err)
}

func wantForbidden(t *testing.T, what string, err error) {
	t.Helper()
	var ve *Error
	if !errors.As(err, &ve) || ve.StatusCode != http.StatusForbidden {
		t.Errorf("%s: got %v, want 403", what, err)
	}
}

// sign returns the DER signature from transit/sign/key/sha2-256.
func sign(ctx context.Context, v *Vault, token, key string, in map[string]any) ([]byte, error) {
	var out struct {
		Data struct{ Signature string }
	}
	if err := v.Do(ctx, token, http.MethodPost, "transit/sign/"+key+"/sha2-256", in, &out); err != nil {
		return nil, err
	}
	// "vault:v1:<base64>": the prefix names the key version.
	b64, ok := strings.CutPrefix(out.Data.Signature, "vault:v1:")
	if !ok {
		return nil, errors.New("unexpected signature " + out.Data.Signature)
	}
	return base64.StdEncoding.DecodeString(b64)
}

func publicKey(t *testing.T, v *Vault, key string) *ecdsa.PublicKey {
	t.Helper()
	var out struct {
		Data struct {
			Keys map[string]struct {
				PublicKey string `json:"public_key"`
			}
		}
	}
	if err := v.Do(context.Background(), v.RootToken(), http.MethodGet, "transit/keys/"+key, nil, &out); err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode([]byte(out.Data.Keys["1"].PublicKey))
	if block == nil {
		t.Fatalf("no PEM public key in %+v", out.Data)
	}
	pub, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return pub.(*ecdsa.PublicKey)
}
