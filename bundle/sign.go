package bundle

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
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
	"github.com/sigstore/sigstore/pkg/cryptoutils"
	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/sigstore/sigstore/pkg/signature/kms"
	"github.com/sigstore/sigstore/pkg/signature/options"

	"github.com/p7bundle/p7bundle/internal/atomicfile"
)

// Signer signs a SHA-256 digest of the archive bytes and returns the
// base64 signature, exactly what `cosign sign-blob` writes.
type Signer interface {
	SignDigest(sha256 []byte) (string, error)
	PublicKey() (crypto.PublicKey, error)
}

// Verifier checks a base64 signature over a SHA-256 digest.
type Verifier interface {
	VerifyDigest(sha256 []byte, sigBase64 string) error
}

type cosignSigner struct {
	sv    signature.SignerVerifier
	ecdsa *ecdsa.PrivateKey // set for ECDSA key files: signed deterministically
}

// SignDigest signs with an ECDSA key file deterministically (RFC 6979): the
// table of contents signature is inside the archive, and a randomized one
// would make every build's bytes differ. A KMS signs as it does (randomized
// for ECDSA): such builds differ in their signatures only.
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

func (s cosignSigner) PublicKey() (crypto.PublicKey, error) { return s.sv.PublicKey() }

// publicKeyHint identifies the key in a Sigstore bundle: base64 of the
// SHA-256 of its DER public key, as cosign writes it.
func publicKeyHint(s Signer) (string, error) {
	sum, err := publicKeyDigest(s)
	if err != nil {
		return "", err
	}
	return base64.StdEncoding.EncodeToString(sum), nil
}

// publicKeyDigest is the SHA-256 of the signer's DER public key.
func publicKeyDigest(s Signer) ([]byte, error) {
	pub, err := s.PublicKey()
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(der)
	return sum[:], nil
}

// SigstoreBundle renders a Sigstore bundle (v0.3, message signature, key
// hint, no transparency log entry), as `cosign sign-blob --new-bundle-format
// --tlog-upload=false` writes it.
func SigstoreBundle(s Signer, sum []byte, sigBase64 string) ([]byte, error) {
	hint, err := publicKeyHint(s)
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

// LoadSigner loads a KMS key (IsKMSKey; password unused) or a cosign
// private key file.
func LoadSigner(ctx context.Context, ref string, password []byte) (Signer, error) {
	if IsKMSKey(ref) {
		sv, _, err := loadKMS(ctx, ref)
		if err != nil {
			return nil, err
		}
		return cosignSigner{sv: sv}, nil
	}
	if err := unsupportedKeyRef(ref); err != nil {
		return nil, err
	}
	return loadKeyFile(ref, password)
}

// unsupportedKeyRef names key references this build cannot use, rather
// than failing to open them as files.
func unsupportedKeyRef(ref string) error {
	if strings.HasPrefix(ref, "pkcs11:") {
		return fmt.Errorf("%w: %s: PKCS#11 keys are not built in (they need cgo and the token vendor's library); use a key file or a KMS URI (%s)", ErrKey, ref, strings.Join(kms.SupportedProviders(), ", "))
	}
	return nil
}

// loadKeyFile reads a cosign private key (ENCRYPTED SIGSTORE/COSIGN PRIVATE
// KEY PEM) and decrypts it with password, as cosign.LoadPrivateKey does;
// done here because the ECDSA key itself is needed to sign deterministically.
func loadKeyFile(keyPath string, password []byte) (Signer, error) {
	data, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, fmt.Errorf("%w: reading key %s: %v", ErrKey, keyPath, err)
	}
	bad := func(msg string) error { return fmt.Errorf("%w: private key %s: %s", ErrKey, keyPath, msg) }
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, bad("invalid pem block")
	}
	if block.Type != cosignPrivateKeyPEMType && block.Type != sigstorePrivateKeyPEMType {
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
	sv, err := signature.LoadDefaultSignerVerifier(pk, options.WithED25519ph())
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
		// The library's words ("invalid ASN.1 ...") read like a broken file.
		return fmt.Errorf("%w: the key did not sign sha256 %x (the file changed since, or another key signed it)", ErrSignature, sum)
	}
	return nil
}

// LoadVerifier loads a PEM public key file (cosign.pub) or the public key
// of a KMS key (IsKMSKey); signatures are checked here, offline.
func LoadVerifier(ctx context.Context, ref string) (Verifier, error) {
	if IsKMSKey(ref) {
		_, pub, err := loadKMS(ctx, ref)
		if err != nil {
			return nil, err
		}
		v, err := signature.LoadVerifier(pub, crypto.SHA256)
		if err != nil {
			return nil, fmt.Errorf("%w: key %s: %v", ErrKey, ref, err)
		}
		return cosignVerifier{v}, nil
	}
	if err := unsupportedKeyRef(ref); err != nil {
		return nil, err
	}
	pubPath := ref
	data, err := os.ReadFile(pubPath)
	if err != nil {
		return nil, fmt.Errorf("%w: reading public key %s: %v", ErrKey, pubPath, err)
	}
	if block, _ := pem.Decode(data); block == nil || block.Type != "PUBLIC KEY" {
		return nil, fmt.Errorf("%w: %s is not a PEM public key (want what cosign.pub holds: -----BEGIN PUBLIC KEY-----)", ErrKey, pubPath)
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

// PublicKeyPEM is the PEM public key of a signer, as cosign.pub holds it.
func PublicKeyPEM(s Signer) ([]byte, error) {
	pub, err := s.PublicKey()
	if err != nil {
		return nil, fmt.Errorf("%w: public key: %v", ErrKey, err)
	}
	b, err := cryptoutils.MarshalPublicKeyToPEM(pub)
	if err != nil {
		return nil, fmt.Errorf("%w: public key: %v", ErrKey, err)
	}
	return b, nil
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
	if err := CheckKeyPair(prefix); err != nil {
		return "", "", err
	}
	private, public, err := generateKeyPair(password)
	if err != nil {
		return "", "", fmt.Errorf("%w: generating key pair: %v", ErrKey, err)
	}
	if err := createExclusive(keyPath, private, 0o600); err != nil {
		return "", "", err
	}
	if err := createExclusive(pubPath, public, 0o644); err != nil {
		os.Remove(keyPath)
		return "", "", err
	}
	return keyPath, pubPath, nil
}

// CheckKeyPair fails when GenerateKeyPair(prefix) could not write: a key
// file is there already (ErrExists), or the directory refuses new files.
func CheckKeyPair(prefix string) error {
	if prefix == "" {
		prefix = DefaultKeyPrefix
	}
	for _, p := range []string{prefix + ".key", prefix + ".pub"} {
		if _, err := os.Lstat(p); err == nil {
			return fmt.Errorf("%w: %s (refusing to overwrite a key)", ErrExists, p)
		}
		if err := atomicfile.Check(p, false); err != nil {
			return err
		}
	}
	return nil
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

// PEM types of cosign's encrypted private keys (cosign's keys.go). Written
// here, with generateKeyPair, because importing cosign's package for them
// linked rekor and ~240 more packages: 5 MB of binary and 7 ms of package
// init in every command, a twentieth of a re-install.
const (
	sigstorePrivateKeyPEMType = "ENCRYPTED SIGSTORE PRIVATE KEY"
	cosignPrivateKeyPEMType   = "ENCRYPTED COSIGN PRIVATE KEY"
)

// generateKeyPair is cosign.GenerateKeyPair: an ECDSA P-256 key, PKCS #8,
// encrypted with securesystemslib's scrypt + secretbox, and its PEM public key.
func generateKeyPair(password []byte) (private, public []byte, err error) {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, nil, err
	}
	enc, err := encrypted.Encrypt(der, password)
	if err != nil {
		return nil, nil, err
	}
	public, err = cryptoutils.MarshalPublicKeyToPEM(priv.Public())
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: sigstorePrivateKeyPEMType, Bytes: enc}), public, nil
}
