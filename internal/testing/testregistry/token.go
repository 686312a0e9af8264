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
	"fmt"
	"math/big"
	"net"
	"net/http"
	"path/filepath"
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

// startTokenServer listens on a free port and writes the certificate the
// registry checks tokens against to dir/token-signing.crt. TLS is served
// with cert and key when set.
func startTokenServer(dir, username, password, cert, key string, ttl time.Duration) (*TokenServer, string, error) {
	s := &TokenServer{Service: "p7bundle-testregistry", Issuer: "p7bundle-testtoken", TTL: ttl, username: username, password: password}
	var err error
	if s.key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		return nil, "", err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(3), Subject: pkix.Name{CommonName: s.Issuer},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(7 * 24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &s.key.PublicKey, s.key)
	if err != nil {
		return nil, "", err
	}
	s.x5c = base64.StdEncoding.EncodeToString(der)
	bundle := filepath.Join(dir, "token-signing.crt")
	if err := writePEM(bundle, "CERTIFICATE", der, 0o644); err != nil {
		return nil, "", err
	}
	if s.ln, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		return nil, "", err
	}
	s.Host = s.ln.Addr().String()
	s.srv = &http.Server{Handler: http.HandlerFunc(s.serve), ReadHeaderTimeout: 10 * time.Second}
	if cert != "" {
		pair, err := tls.LoadX509KeyPair(cert, key)
		if err != nil {
			s.ln.Close()
			return nil, "", err
		}
		s.srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{pair}}
		s.Realm = "https://" + s.Host + "/token"
		go s.srv.ServeTLS(s.ln, "", "")
	} else {
		s.Realm = "http://" + s.Host + "/token"
		go s.srv.Serve(s.ln)
	}
	return s, bundle, nil
}

// tokenConfig is the registry's auth section for s.
func (s *TokenServer) tokenConfig(bundle string) string {
	return fmt.Sprintf("auth:\n  token:\n    realm: %q\n    service: %q\n    issuer: %q\n    rootcertbundle: %q\n", s.Realm, s.Service, s.Issuer, bundle)
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

func (s *TokenServer) close() {
	if s != nil {
		s.srv.Close()
	}
}
