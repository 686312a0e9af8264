package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/p7bundle/p7bundle/internal/testing/faultproxy"
	"github.com/p7bundle/p7bundle/internal/testing/testregistry"
)

// Enterprise registries as they answer, in front of a real registry:
// Harbor's missing project, a cross-repository mount answered 202 with an
// upload session (Nexus, Artifactory), GitLab's deep prefixes, robot
// accounts whose names hold "$" and "+" given through docker config.
func TestRegistryBehaviours(t *testing.T) {
	s := startSite(t)
	v1, _, delta := monthBundles(t, s)
	robotRegistry := func(t *testing.T) *testregistry.Registry {
		t.Helper()
		reg, err := testregistry.Start(context.Background(), testregistry.Options{Username: "robot$pseven+ci", Password: "h4rbor-pa55", TLS: true})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { reg.Stop() })
		return reg
	}
	// behind puts a proxy that answers (or rewrites) as opts says in front
	// of a real registry.
	behind := func(t *testing.T, opts faultproxy.Options) (*testregistry.Registry, *faultproxy.Proxy) {
		t.Helper()
		reg := robotRegistry(t)
		opts.Target, opts.Transport = reg.URL(), reg.HTTPClient().Transport
		p, err := faultproxy.Start(opts)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { p.Close() })
		return reg, p
	}
	push := func(reg *testregistry.Registry, host, bundle string, extra ...string) result {
		t.Helper()
		args := append([]string{"push", bundle, "--key", s.pub, "--registry", host, "--plain-http",
			"--registry-username", reg.Username, "--registry-password-stdin"}, extra...)
		return p7(t, reg.Password+"\n", args...)
	}

	t.Run("Harbor: the project does not exist", func(t *testing.T) {
		reg, p := behind(t, faultproxy.Options{Answer: func(w http.ResponseWriter, r *http.Request) bool {
			if r.Method == http.MethodGet || r.Method == http.MethodHead || r.URL.Path == "/v2/" {
				return false
			}
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusNotFound)
			w.Write([]byte(`{"errors":[{"code":"NAME_UNKNOWN","message":"project pseven not found: project pseven not found"}]}`))
			return true
		}})
		r := push(reg, p.Host, v1)
		line := lastLine(r.stderr)
		if r.code != exitRegistry || !strings.Contains(line, p.Host) || !strings.Contains(line, `project "pseven"`) || !strings.Contains(line, "create it") {
			t.Errorf("push into a missing project: %v", r)
		}
		t.Logf("missing project: %s", line)
	})

	t.Run("mount answered 202 with an upload session", func(t *testing.T) {
		var mounts atomic.Int64
		reg, p := behind(t, faultproxy.Options{Answer: func(w http.ResponseWriter, r *http.Request) bool {
			if r.Method == http.MethodPost && r.URL.Query().Get("mount") != "" {
				// Nexus and Artifactory: no mount, an ordinary session instead.
				mounts.Add(1)
				q := r.URL.Query()
				q.Del("mount")
				q.Del("from")
				r.URL.RawQuery = q.Encode()
			}
			return false
		}})
		for _, b := range []string{v1, delta} {
			if r := push(reg, p.Host, b, "--json"); r.code != 0 {
				t.Fatalf("push %s: %v", b, r)
			}
		}
		if mounts.Load() == 0 {
			t.Fatal("no mount was asked for: the test proves nothing")
		}
		t.Logf("%d mounts answered with an upload session", mounts.Load())
		assertPulls(t, reg, manifestOf(t, delta))
	})

	t.Run("no Docker-Content-Digest header", func(t *testing.T) {
		reg, p := behind(t, faultproxy.Options{Modify: func(r *http.Response) { r.Header.Del("Docker-Content-Digest") }})
		for _, run := range []string{"push", "re-push"} {
			r := push(reg, p.Host, v1, "--json")
			var rep struct {
				BlobsPushed int `json:"blobsPushed"`
			}
			if r.code != 0 || json.Unmarshal([]byte(r.stdout), &rep) != nil {
				t.Fatalf("%s without Docker-Content-Digest: %v", run, r)
			}
			// The re-push finds every tag current (by the manifest's own hash).
			if run == "re-push" && rep.BlobsPushed != 0 {
				t.Errorf("the re-push uploaded %d blobs", rep.BlobsPushed)
			}
		}
		assertPulls(t, reg, manifestOf(t, v1))
	})

	t.Run("deep prefix, robot account from docker config", func(t *testing.T) {
		reg := robotRegistry(t)
		cfg := t.TempDir()
		auth := base64.StdEncoding.EncodeToString([]byte(reg.Username + ":" + reg.Password))
		b, _ := json.Marshal(map[string]any{"auths": map[string]any{reg.Host: map[string]string{"auth": auth}}})
		os.WriteFile(filepath.Join(cfg, "config.json"), b, 0o600)
		t.Setenv("DOCKER_CONFIG", cfg)
		r := p7(t, "", "push", v1, "--key", s.pub, "--registry", reg.Host, "--ca-file", reg.CAFile, "--registry-prefix", "group/sub/pseven", "--json")
		if r.code != 0 {
			t.Fatalf("push with a deep prefix and docker config: %v", r)
		}
		tags := strings.Join(allTags(t, reg), " ")
		if !strings.Contains(tags, "group/sub/pseven/pseven-app:6.47.4712") {
			t.Errorf("tags: %s", tags)
		}
	})
}
