// Command ggcrregistry serves go-containerregistry's pkg/registry in place of
// distribution's `registry serve CONFIG`, for tests only: that registry
// implements the OCI 1.1 referrers API, which distribution lacks, so the
// tests that set P7BUNDLE_TEST_REGISTRY_BINARY to it exercise the referrers
// path (cosign --registry-referrers-mode=oci-1-1, build's discovery, push).
//
// It reads the part of the config testregistry.Config writes: the listen
// address, TLS, htpasswd (bcrypt) and the storage directory (blobs on disk;
// manifests live in memory, so a restart forgets them). Token auth is
// refused: that registry has none.
package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/google/go-containerregistry/pkg/registry"
	"golang.org/x/crypto/bcrypt"
	"sigs.k8s.io/yaml"
)

type config struct {
	Storage struct {
		Filesystem struct {
			RootDirectory string `json:"rootdirectory"`
		} `json:"filesystem"`
	} `json:"storage"`
	HTTP struct {
		Addr string `json:"addr"`
		TLS  struct {
			Certificate string `json:"certificate"`
			Key         string `json:"key"`
		} `json:"tls"`
	} `json:"http"`
	Auth map[string]struct {
		Realm string `json:"realm"`
		Path  string `json:"path"`
	} `json:"auth"`
}

func main() {
	if len(os.Args) != 3 || os.Args[1] != "serve" {
		log.Fatal("usage: ggcrregistry serve CONFIG")
	}
	if err := serve(os.Args[2]); err != nil {
		log.Fatal(err)
	}
}

func serve(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var c config
	if err := yaml.Unmarshal(b, &c); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	blobs := filepath.Join(c.Storage.Filesystem.RootDirectory, "ggcr-blobs")
	if err := os.MkdirAll(blobs, 0o755); err != nil {
		return err
	}
	var h http.Handler = registry.New(
		registry.WithReferrersSupport(true),
		registry.WithBlobHandler(registry.NewDiskBlobHandler(blobs)),
		registry.Logger(log.New(io.Discard, "", 0)),
	)
	for kind, a := range c.Auth {
		if kind != "htpasswd" {
			return fmt.Errorf("%s: auth %q: only htpasswd is supported", path, kind)
		}
		users, err := readHtpasswd(a.Path)
		if err != nil {
			return err
		}
		h = basicAuth(h, a.Realm, users)
	}
	// HTTP/1.1 only: pkg/registry reads a PATCH body under one lock for
	// all uploads, so over one HTTP/2 connection a waiting upload's unread
	// body stalls the connection's flow-control window, and with it the
	// upload holding the lock.
	srv := &http.Server{Addr: c.HTTP.Addr, Handler: h, TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){}}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	go func() { <-ctx.Done(); srv.Close() }()
	if c.HTTP.TLS.Certificate != "" {
		err = srv.ListenAndServeTLS(c.HTTP.TLS.Certificate, c.HTTP.TLS.Key)
	} else {
		err = srv.ListenAndServe()
	}
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

func readHtpasswd(path string) (map[string][]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	users := map[string][]byte{}
	s := bufio.NewScanner(f)
	for s.Scan() {
		if user, hash, ok := strings.Cut(strings.TrimSpace(s.Text()), ":"); ok {
			users[user] = []byte(hash)
		}
	}
	return users, s.Err()
}

// basicAuth answers as distribution's htpasswd auth does: 401 with a Basic
// challenge and an OCI error body unless the credentials match.
func basicAuth(next http.Handler, realm string, users map[string][]byte) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		user, pass, ok := r.BasicAuth()
		hash, known := users[user]
		if ok && known && bcrypt.CompareHashAndPassword(hash, []byte(pass)) == nil {
			next.ServeHTTP(w, r)
			return
		}
		w.Header().Set("WWW-Authenticate", fmt.Sprintf("Basic realm=%q", realm))
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		fmt.Fprint(w, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`)
	})
}
