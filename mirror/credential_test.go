package mirror

import (
	"context"
	"encoding/base64"
	"os"
	"path/filepath"
	"testing"
)

// install writes registry.username/password from the credentials it uses:
// without --registry-username those come from docker config.
func TestCredentialFromDockerConfig(t *testing.T) {
	dir := t.TempDir()
	auth := base64.StdEncoding.EncodeToString([]byte("site-user:site-pa55"))
	os.WriteFile(filepath.Join(dir, "config.json"), []byte(`{"auths":{"registry.local:5000":{"auth":"`+auth+`"}}}`), 0o600)
	t.Setenv("DOCKER_CONFIG", dir)
	c, err := NewClient(RegistryOptions{})
	if err != nil {
		t.Fatal(err)
	}
	u, p, err := c.Credential(context.Background(), "registry.local:5000")
	if err != nil || u != "site-user" || p != "site-pa55" {
		t.Errorf("docker config credential = %q, %q, %v", u, p, err)
	}
	if u, p, err := c.Credential(context.Background(), "other.local"); err != nil || u != "" || p != "" {
		t.Errorf("no entry: %q %q %v", u, p, err)
	}
	given, _ := NewClient(RegistryOptions{Username: "flag-user", Password: "flag-pass"})
	if u, p, _ := given.Credential(context.Background(), "registry.local:5000"); u != "flag-user" || p != "flag-pass" {
		t.Errorf("flag credential = %q, %q", u, p)
	}
	os.WriteFile(filepath.Join(dir, "config.json"), []byte(`{"auths":{"registry.local:5000":{"identitytoken":"tok"}}}`), 0o600)
	c, _ = NewClient(RegistryOptions{})
	if _, _, err := c.Credential(context.Background(), "registry.local:5000"); err == nil {
		t.Error("an identity token was taken for a password")
	}
}
