package manifests

import (
	"slices"
	"strconv"
)

// Redacted stands in for a secret value in anything meant for other eyes.
const Redacted = "(redacted)"

// LooksSecret says whether a value key or variable name is secret-bearing:
// the same test the values diff hides changes by.
func LooksSecret(name string) bool { return secretKey.MatchString(name) }

// RedactValues returns a deep copy of values for a support archive: every
// value under a secret-bearing key (LooksSecret, at any depth) replaced by
// Redacted, keeping the structure so support sees what is set, and every
// top-level key in secretKeys (the deployment secrets) redacted whole.
// Empty strings and nulls stay: "not set" is what support needs to see
// and reveals nothing. values is never modified.
func RedactValues(values map[string]interface{}, secretKeys ...string) map[string]interface{} {
	out := make(map[string]interface{}, len(values))
	for k, v := range values {
		switch {
		case slices.Contains(secretKeys, k):
			out[k] = Redacted
		default:
			out[k] = redact(v, LooksSecret(k))
		}
	}
	return out
}

func redact(v interface{}, secret bool) interface{} {
	switch t := v.(type) {
	case map[string]interface{}:
		out := make(map[string]interface{}, len(t))
		for k, e := range t {
			out[k] = redact(e, secret || LooksSecret(k))
		}
		return out
	case []interface{}:
		out := make([]interface{}, len(t))
		for i, e := range t {
			out[i] = redact(e, secret)
		}
		return out
	case nil:
		return nil
	case string:
		if secret && t != "" {
			return Redacted
		}
		return t
	case bool: // enabled: true under auth.* is configuration, not a secret
		return t
	}
	if secret {
		return Redacted
	}
	return v
}

// SecretValues returns the non-empty scalars RedactValues hides, as
// strings, so the same secrets can be scrubbed from free text (logs).
func SecretValues(values map[string]interface{}, secretKeys ...string) []string {
	var out []string
	for k, v := range values {
		collectSecrets(v, slices.Contains(secretKeys, k) || LooksSecret(k), &out)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

func collectSecrets(v interface{}, secret bool, out *[]string) {
	switch t := v.(type) {
	case map[string]interface{}:
		for k, e := range t {
			collectSecrets(e, secret || LooksSecret(k), out)
		}
	case []interface{}:
		for _, e := range t {
			collectSecrets(e, secret, out)
		}
	case string:
		if secret && t != "" {
			*out = append(*out, t)
		}
	case float64: // a numeric password, as JSON-decoded values hold it
		if secret {
			*out = append(*out, strconv.FormatFloat(t, 'f', -1, 64))
		}
	case int:
		if secret {
			*out = append(*out, strconv.Itoa(t))
		}
	case int64:
		if secret {
			*out = append(*out, strconv.FormatInt(t, 10))
		}
	}
}
