package imageref

import "testing"

const d = "sha256:" + "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

func TestParse(t *testing.T) {
	for in, want := range map[string]Ref{
		"registry.pseven.io/pseven/app:2023.09.25": {Name: "registry.pseven.io/pseven/app", Tag: "2023.09.25"},
		"registry.local:5000/pseven/app":           {Name: "registry.local:5000/pseven/app"},
		"registry.local:5000/pseven/app:1.0@" + d:  {Name: "registry.local:5000/pseven/app", Tag: "1.0", Digest: d},
		"[fd00::1]:5000/app@" + d:                  {Name: "[fd00::1]:5000/app", Digest: d},
		"busybox":                                  {Name: "busybox"},
		"localhost:5000/a/b/c:v1":                  {Name: "localhost:5000/a/b/c", Tag: "v1"},
	} {
		got, err := Parse(in)
		if err != nil || got != want {
			t.Errorf("Parse(%q) = %+v, %v; want %+v", in, got, err, want)
		}
		if err == nil && got.String() != in {
			t.Errorf("Parse(%q).String() = %q", in, got.String())
		}
	}
	for _, bad := range []string{"", "https://registry.pseven.io/app", "pseven/UPPER", "app:", "app@sha256:short"} {
		if r, err := Parse(bad); err == nil {
			t.Errorf("Parse(%q) = %+v, want an error", bad, r)
		}
	}
	if n, tag, dg := Split("not a ref"); n != "not a ref" || tag != "" || dg != "" {
		t.Errorf("Split of garbage = %q %q %q", n, tag, dg)
	}
}
