package testregistry

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// TokenServer is a token service of the Distribution token auth spec on a
// loopback port of its own (GitLab's layout, or any registry whose auth is
// a separate service): it checks Basic credentials and issues ES256 JWTs
// that the registry trusts through its rootcertbundle.
type TokenServer struct {
	Host            string // "127.0.0.1:PORT"
	Realm           string // the URL the registry's challenges name
	Service, Issuer string
	// TTL is how long a token is valid (the registry adds a minute's leeway).
	TTL time.Duration

	oneRepository      bool
	username, password string
	key                *ecdsa.PrivateKey
	x5c                string // base64 DER of the signing certificate
	srv                *http.Server
	ln                 net.Listener

	mu       sync.Mutex
	requests []TokenRequest
}

// TokenRequest is one request the token server answered.
type TokenRequest struct {
	Header http.Header
	Scopes []string
	Status int
}

// TokenOptions configure StartTokenServer.
type TokenOptions struct {
	// Addr is the listen address; default a free port on 127.0.0.1.
	Addr               string
	Username, Password string
	// CertFile and KeyFile serve TLS; plain HTTP when empty.
	CertFile, KeyFile string
	// SignerDir holds the signing key WriteTokenSigner wrote.
	SignerDir string
	// TTL is how long a token is valid; default 5 minutes. The registry
	// adds a minute's leeway: -58 s makes tokens that live 1 to 2 seconds.
	TTL time.Duration
	// OneRepository grants a request's first repository scope only, as a
	// token service that scopes each token to one repository does: a
	// cross-repository mount then lacks pull on its source.
	OneRepository bool
	// RealmHost is the host name the realm names, default the listen IP.
	// go-containerregistry refuses a realm at a private IP literal on
	// another port (its SSRF guard), so a registry it pushes into names
	// "localhost".
	RealmHost string
}

const (
	tokenService = "p7bundle-testregistry"
	tokenIssuer  = "p7bundle-testtoken"
)

// WriteTokenSigner writes a token-signing key and its self-signed
// certificate into dir and returns the certificate's path: the
// rootcertbundle of the registry that trusts the tokens.
func WriteTokenSigner(dir string) (string, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(3), Subject: pkix.Name{CommonName: tokenIssuer},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(7 * 24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return "", err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return "", err
	}
	if err := writePEM(filepath.Join(dir, "token-signing.key"), "EC PRIVATE KEY", keyDER, 0o600); err != nil {
		return "", err
	}
	cert := filepath.Join(dir, "token-signing.crt")
	return cert, writePEM(cert, "CERTIFICATE", der, 0o644)
}

// TokenConfig is the auth section of a registry configuration that
// challenges with realm and trusts the tokens signed by rootCertBundle's key.
func TokenConfig(realm, rootCertBundle string) string {
	return fmt.Sprintf("auth:\n  token:\n    realm: %q\n    service: %q\n    issuer: %q\n    rootcertbundle: %q\n",
		realm, tokenService, tokenIssuer, rootCertBundle)
}

// StartTokenServer serves tokens signed with the key in o.SignerDir.
func StartTokenServer(o TokenOptions) (*TokenServer, error) {
	s := &TokenServer{Service: tokenService, Issuer: tokenIssuer, TTL: o.TTL, oneRepository: o.OneRepository, username: o.Username, password: o.Password}
	if s.TTL == 0 {
		s.TTL = 5 * time.Minute
	}
	keyPEM, err := os.ReadFile(filepath.Join(o.SignerDir, "token-signing.key"))
	if err != nil {
		return nil, err
	}
	certPEM, err := os.ReadFile(filepath.Join(o.SignerDir, "token-signing.crt"))
	if err != nil {
		return nil, err
	}
	kb, cb := pemBytes(keyPEM), pemBytes(certPEM)
	if s.key, err = x509.ParseECPrivateKey(kb); err != nil {
		return nil, fmt.Errorf("token-signing key: %w", err)
	}
	s.x5c = base64.StdEncoding.EncodeToString(cb)
	addr := o.Addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	if s.ln, err = net.Listen("tcp", addr); err != nil {
		return nil, err
	}
	s.Host = s.ln.Addr().String()
	if o.RealmHost != "" {
		s.Host = net.JoinHostPort(o.RealmHost, strconv.Itoa(s.ln.Addr().(*net.TCPAddr).Port))
	}
	s.srv = &http.Server{Handler: http.HandlerFunc(s.serve), ReadHeaderTimeout: 10 * time.Second}
	if o.CertFile == "" {
		s.Realm = "http://" + s.Host + "/token"
		go s.srv.Serve(s.ln)
		return s, nil
	}
	pair, err := tls.LoadX509KeyPair(o.CertFile, o.KeyFile)
	if err != nil {
		s.ln.Close()
		return nil, err
	}
	s.srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{pair}}
	s.Realm = "https://" + s.Host + "/token"
	go s.srv.ServeTLS(s.ln, "", "")
	return s, nil
}

func pemBytes(b []byte) []byte {
	if block, _ := pem.Decode(b); block != nil {
		return block.Bytes
	}
	return nil
}

func (s *TokenServer) serve(w http.ResponseWriter, r *http.Request) {
	scopes := r.URL.Query()["scope"]
	user, pass, ok := r.BasicAuth()
	status := http.StatusOK
	switch {
	case r.URL.Path != "/token":
		status = http.StatusNotFound
	case r.URL.Query().Get("service") != s.Service:
		status = http.StatusBadRequest
	case ok && (user != s.username || pass != s.password):
		status = http.StatusUnauthorized
	}
	s.mu.Lock()
	s.requests = append(s.requests, TokenRequest{Header: r.Header.Clone(), Scopes: scopes, Status: status})
	s.mu.Unlock()
	if status != http.StatusOK {
		http.Error(w, http.StatusText(status), status)
		return
	}
	if !ok {
		scopes = nil // anonymous: a token that grants nothing
	}
	if s.oneRepository {
		scopes = firstRepository(scopes)
	}
	token, err := s.Mint(user, scopes)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{
		"token": token, "access_token": token, "expires_in": int(s.TTL.Seconds()), "issued_at": time.Now().UTC().Format(time.RFC3339),
	})
}

// firstRepository keeps the scopes of the first repository named.
func firstRepository(scopes []string) []string {
	var kept []string
	first := ""
	for _, field := range scopes {
		for _, scope := range strings.Fields(field) {
			if name, ok := strings.CutPrefix(scope, "repository:"); ok {
				name = name[:max(strings.LastIndex(name, ":"), 0)]
				if first == "" {
					first = name
				}
				if name != first {
					continue
				}
			}
			kept = append(kept, scope)
		}
	}
	return kept
}

// Requests returns what the token server was asked, in order.
func (s *TokenServer) Requests() []TokenRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]TokenRequest(nil), s.requests...)
}

// Mint issues a token for subject granting every scope
// ("repository:NAME:pull,push", "registry:catalog:*") as asked.
func (s *TokenServer) Mint(subject string, scopes []string) (string, error) {
	type access struct {
		Type    string   `json:"type"`
		Name    string   `json:"name"`
		Actions []string `json:"actions"`
	}
	grants := []access{}
	for _, field := range scopes {
		for _, scope := range strings.Fields(field) {
			typ, rest, ok1 := strings.Cut(scope, ":")
			i := strings.LastIndex(rest, ":")
			if !ok1 || i < 0 {
				continue
			}
			grants = append(grants, access{Type: typ, Name: rest[:i], Actions: strings.Split(rest[i+1:], ",")})
		}
	}
	now := time.Now()
	jti := make([]byte, 16)
	rand.Read(jti)
	header, _ := json.Marshal(map[string]any{"typ": "JWT", "alg": "ES256", "x5c": []string{s.x5c}})
	claims, _ := json.Marshal(map[string]any{
		"iss": s.Issuer, "sub": subject, "aud": s.Service, "iat": now.Unix(), "nbf": now.Add(-time.Second).Unix(),
		"exp": now.Add(s.TTL).Unix(), "jti": base64.RawURLEncoding.EncodeToString(jti), "access": grants,
	})
	signed := base64.RawURLEncoding.EncodeToString(header) + "." + base64.RawURLEncoding.EncodeToString(claims)
	sum := sha256.Sum256([]byte(signed))
	r, sv, err := ecdsa.Sign(rand.Reader, s.key, sum[:])
	if err != nil {
		return "", err
	}
	sig := make([]byte, 64) // JWS ES256: r || s, 32 bytes each
	r.FillBytes(sig[:32])
	sv.FillBytes(sig[32:])
	return signed + "." + base64.RawURLEncoding.EncodeToString(sig), nil
}

// Close stops the server (a nil s is fine).
func (s *TokenServer) Close() {
	if s != nil {
		s.srv.Close()
	}
}
