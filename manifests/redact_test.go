package manifests

import (
	"reflect"
	"slices"
	"strings"
	"testing"

	sigsyaml "sigs.k8s.io/yaml"
)

func TestRedactValuesHidesEverySecretAndKeepsTheRest(t *testing.T) {
	values := map[string]interface{}{}
	if err := sigsyaml.Unmarshal([]byte(`
registry: {url: site:5000/pseven, username: site-user, password: reg-pass-1}
postgres: {host: db.site, port: 5432, user: pseven, password: pg-pass-22}
smtp: {host: "", password: smtp-pass-333, from: ops@site}
keycloak: {adminPassword: kc-admin-4444, clientSecret: kc-client-55555}
auth: {enabled: true, oidc: {issuer: https://idp, token: tok-666666}}
ldap: {bindPassword: 123456789, servers: [{host: ldap1, apiKey: ldap-key-7}]}
emptyPassword: ""
secrets: {djangoSecretKey: dj-888888, nested: {x: plain-looking-999}}
certificates: {ca.crt: "-----BEGIN CERTIFICATE-----"}
entrypoint: {webHttp: 30080, allowedHosts: ["*"]}
`), &values); err != nil {
		t.Fatal(err)
	}
	before, _ := sigsyaml.Marshal(values)
	got := RedactValues(values, "secrets", "certificates")

	if after, _ := sigsyaml.Marshal(values); string(after) != string(before) {
		t.Fatalf("RedactValues changed its input:\n%s", after)
	}
	out, _ := sigsyaml.Marshal(got)
	for _, secret := range []string{"reg-pass-1", "pg-pass-22", "smtp-pass-333", "kc-admin-4444", "kc-client-55555",
		"tok-666666", "123456789", "ldap-key-7", "dj-888888", "plain-looking-999", "BEGIN CERTIFICATE", "djangoSecretKey"} {
		if strings.Contains(string(out), secret) {
			t.Errorf("redacted values hold %q:\n%s", secret, out)
		}
	}
	for path, want := range map[string]interface{}{
		"registry.password": Redacted, "registry.url": "site:5000/pseven", "registry.username": "site-user",
		"postgres.password": Redacted, "postgres.host": "db.site", "postgres.port": float64(5432),
		"smtp.password": Redacted, "smtp.host": "", "keycloak.adminPassword": Redacted, "keycloak.clientSecret": Redacted,
		"auth.enabled": true, "auth.oidc.issuer": Redacted, "ldap.bindPassword": Redacted,
		"emptyPassword": "", "secrets": Redacted, "certificates": Redacted, "entrypoint.webHttp": float64(30080),
	} {
		if v := lookupDotted(got, path); !reflect.DeepEqual(v, want) {
			t.Errorf("%s = %#v, want %#v", path, v, want)
		}
	}
	if servers := lookupDotted(got, "ldap.servers").([]interface{}); servers[0].(map[string]interface{})["apiKey"] != Redacted ||
		servers[0].(map[string]interface{})["host"] != "ldap1" {
		t.Errorf("ldap.servers = %v", servers)
	}

	secrets := SecretValues(values, "secrets", "certificates")
	for _, want := range []string{"reg-pass-1", "pg-pass-22", "smtp-pass-333", "kc-admin-4444", "tok-666666", "123456789",
		"ldap-key-7", "dj-888888", "plain-looking-999", "-----BEGIN CERTIFICATE-----"} {
		if !slices.Contains(secrets, want) {
			t.Errorf("SecretValues lacks %q: %q", want, secrets)
		}
	}
	for _, no := range []string{"site-user", "db.site", "", "ops@site"} {
		if slices.Contains(secrets, no) {
			t.Errorf("SecretValues holds %q, not a secret", no)
		}
	}
}

// The keys the vendor guide names for passwords must all count as secret.
func TestRedactKeysCoverTheGuidesPasswords(t *testing.T) {
	for _, k := range []string{"password", "registry.password", "postgres.password", "smtp.password", "POSTGRES_PASSWORD",
		"DJANGO_SECRET_KEY", "KEYCLOAK_CLIENT_SECRET", "API_TOKEN", "credentials", "privateKey", "apiKey", "api_key", "basicAuth"} {
		if !LooksSecret(k) {
			t.Errorf("LooksSecret(%q) = false", k)
		}
	}
	for _, k := range []string{"host", "port", "username", "user", "url", "PSEVEN_HOST", "image"} {
		if LooksSecret(k) {
			t.Errorf("LooksSecret(%q) = true", k)
		}
	}
}
