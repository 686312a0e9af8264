package bundle

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/secure-systems-lab/go-securesystemslib/encrypted"
	"github.com/sigstore/cosign/v2/pkg/cosign"
	"github.com/sigstore/sigstore/pkg/cryptoutils"
	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/sigstore/sigstore/pkg/signature/options"

	"github.com/p7bundle/p7bundle/internal/atomicfile"
)

// Signer signs a SHA-256 digest of the archive bytes and returns the
// base64 signature, exactly what `cosign sign-blob` writes.
type Signer interface {
	SignDigest(sha256 []byte) (string, error)
	// PublicKeyHint identifies the key in a Sigstore bundle: base64 of the
	// SHA-256 of its DER public key, as cosign writes it.
	PublicKeyHint() (string, error)
}

// Verifier checks a base64 signature over a SHA-256 digest.
type Verifier interface {
	VerifyDigest(sha256 []byte, sigBase64 string) error
}

type cosignSigner struct {
	sv    signature.SignerVerifier
	ecdsa *ecdsa.PrivateKey // set for ECDSA keys: signed deterministically
}

// SignDigest signs an ECDSA key deterministically (RFC 6979): the table
// of contents signature is inside the archive, and a randomized one would
// make every build's bytes differ.
func (s cosignSigner) SignDigest(sum []byte) (string, error) {
	var sig []byte
	var err error
	if s.ecdsa != nil {
		sig, err = s.ecdsa.Sign(nil, sum, crypto.SHA256)
	} else {
		sig, err = s.sv.SignMessage(bytes.NewReader(nil), options.WithDigest(sum), options.WithCryptoSignerOpts(crypto.SHA256))
	}
	if err != nil {
		return "", fmt.Errorf("signing: %w", err)
	}
	return base64.StdEncoding.EncodeToString(sig), nil
}

func (s cosignSigner) PublicKeyHint() (string, error) {
	pub, err := s.sv.PublicKey()
	if err != nil {
		return "", err
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(der)
	return base64.StdEncoding.EncodeToString(sum[:]), nil
}

// SigstoreBundle renders a Sigstore bundle (v0.3, message signature, key
// hint, no transparency log entry), as `cosign sign-blob --new-bundle-format
// --tlog-upload=false` writes it.
func SigstoreBundle(s Signer, sum []byte, sigBase64 string) ([]byte, error) {
	hint, err := s.PublicKeyHint()
	if err != nil {
		return nil, fmt.Errorf("%w: public key: %v", ErrKey, err)
	}
	type digest struct {
		Algorithm string `json:"algorithm"`
		Digest    string `json:"digest"`
	}
	doc := map[string]any{
		"mediaType":            "application/vnd.dev.sigstore.bundle.v0.3+json",
		"verificationMaterial": map[string]any{"publicKey": map[string]string{"hint": hint}},
		"messageSignature": map[string]any{
			"messageDigest": digest{"SHA2_256", base64.StdEncoding.EncodeToString(sum)},
			"signature":     sigBase64,
		},
	}
	b, err := json.Marshal(doc)
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// LoadSigner reads a cosign private key (ENCRYPTED SIGSTORE/COSIGN PRIVATE
// KEY PEM) and decrypts it with password, as cosign.LoadPrivateKey does;
// done here because the ECDSA key itself is needed to sign deterministically.
func LoadSigner(keyPath string, password []byte) (Signer, error) {
	data, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, fmt.Errorf("%w: reading key %s: %v", ErrKey, keyPath, err)
	}
	bad := func(msg string) error { return fmt.Errorf("%w: private key %s: %s", ErrKey, keyPath, msg) }
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, bad("invalid pem block")
	}
	if block.Type != cosign.CosignPrivateKeyPemType && block.Type != cosign.SigstorePrivateKeyPemType {
		return nil, bad("unsupported pem type: " + block.Type)
	}
	der, err := encrypted.Decrypt(block.Bytes, password)
	if err != nil {
		return nil, bad("wrong password or damaged key")
	}
	pk, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, bad(err.Error())
	}
	sv, err := signature.LoadDefaultSignerVerifier(pk, *cosign.GetDefaultLoadOptions(nil)...)
	if err != nil {
		return nil, bad(err.Error())
	}
	priv, _ := pk.(*ecdsa.PrivateKey)
	return cosignSigner{sv: sv, ecdsa: priv}, nil
}

type cosignVerifier struct{ v signature.Verifier }

func (v cosignVerifier) VerifyDigest(sum []byte, sigBase64 string) error {
	sig, err := base64.StdEncoding.DecodeString(strings.TrimSpace(sigBase64))
	if err != nil {
		return fmt.Errorf("%w: signature is not base64: %v", ErrSignature, err)
	}
	if err := v.v.VerifySignature(bytes.NewReader(sig), nil, options.WithDigest(sum), options.WithCryptoSignerOpts(crypto.SHA256)); err != nil {
		return fmt.Errorf("%w: %v", ErrSignature, err)
	}
	return nil
}

// LoadVerifier reads a PEM public key (cosign.pub).
func LoadVerifier(pubPath string) (Verifier, error) {
	data, err := os.ReadFile(pubPath)
	if err != nil {
		return nil, fmt.Errorf("%w: reading public key %s: %v", ErrKey, pubPath, err)
	}
	pub, err := cryptoutils.UnmarshalPEMToPublicKey(data)
	if err != nil {
		return nil, fmt.Errorf("%w: public key %s: %v", ErrKey, pubPath, err)
	}
	v, err := signature.LoadVerifier(pub, crypto.SHA256)
	if err != nil {
		return nil, fmt.Errorf("%w: public key %s: %v", ErrKey, pubPath, err)
	}
	return cosignVerifier{v}, nil
}

// ErrExists: keygen refuses to replace a key file.
var ErrExists = errors.New("file exists")

// DefaultKeyPrefix names the key files as cosign does: cosign.key, cosign.pub.
const DefaultKeyPrefix = "cosign"

// GenerateKeyPair writes prefix.key (encrypted with password, mode 0600)
// and prefix.pub, in cosign's format; prefix defaults to DefaultKeyPrefix.
// Existing files are never replaced.
func GenerateKeyPair(prefix string, password []byte) (keyPath, pubPath string, err error) {
	if prefix == "" {
		prefix = DefaultKeyPrefix
	}
	keyPath, pubPath = prefix+".key", prefix+".pub"
	for _, p := range []string{keyPath, pubPath} {
		if _, err := os.Lstat(p); err == nil {
			return "", "", fmt.Errorf("%w: %s (refusing to overwrite a key)", ErrExists, p)
		}
	}
	keys, err := cosign.GenerateKeyPair(func(bool) ([]byte, error) { return password, nil })
	if err != nil {
		return "", "", fmt.Errorf("%w: generating key pair: %v", ErrKey, err)
	}
	if err := createExclusive(keyPath, keys.PrivateBytes, 0o600); err != nil {
		return "", "", err
	}
	if err := createExclusive(pubPath, keys.PublicBytes, 0o644); err != nil {
		os.Remove(keyPath)
		return "", "", err
	}
	return keyPath, pubPath, nil
}

// createExclusive writes path, never over an existing key file.
func createExclusive(path string, data []byte, mode os.FileMode) error {
	if err := atomicfile.Create(path, data, mode); err != nil {
		if errors.Is(err, os.ErrExist) {
			return fmt.Errorf("%w: %s (refusing to overwrite a key)", ErrExists, path)
		}
		return err
	}
	return nil
}
