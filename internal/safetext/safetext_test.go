package safetext

import (
	"bytes"
	"encoding/json"
	"testing"
)

func TestControlCharactersAreEscaped(t *testing.T) {
	for in, want := range map[string]string{
		"plain\ttext\n":                       "plain\ttext\n",
		"\x1b]0;pwned\x07title":               `\u001b]0;pwned\u0007title`,
		"over\rwrite":                         `over\u000dwrite`,
		"c1 csi \u009b2J and del \x7f":        `c1 csi \u009b2J and del \u007f`,
		"ünïcödé stays, \u00a0 nbsp stays":    "ünïcödé stays, \u00a0 nbsp stays",
		"invalid \xff\xfe bytes pass through": "invalid \xff\xfe bytes pass through",
	} {
		if got := String(in); got != want {
			t.Errorf("String(%q) = %q, want %q", in, got, want)
		}
		// The writer gives the same, however the input is cut.
		for cut := 0; cut <= len(in); cut++ {
			var b bytes.Buffer
			w := NewWriter(&b)
			w.Write([]byte(in[:cut]))
			w.Write([]byte(in[cut:]))
			if b.String() != want {
				t.Errorf("Writer(%q cut at %d) = %q, want %q", in, cut, b.String(), want)
			}
		}
	}
}

// JSON through the writer is the same document: C1 characters, which
// encoding/json leaves raw, become \u escapes it reads back.
func TestJSONStaysTheSame(t *testing.T) {
	v := map[string]string{"name": "evil\u009b[2Jchart\x1b[31m", "ok": "ä"}
	raw, _ := json.Marshal(v)
	var b bytes.Buffer
	NewWriter(&b).Write(raw)
	var back map[string]string
	if err := json.Unmarshal(b.Bytes(), &back); err != nil || back["name"] != v["name"] || back["ok"] != "ä" {
		t.Fatalf("%s -> %v, %v", b.String(), back, err)
	}
	if bytes.ContainsRune(b.Bytes(), 0x9b) || bytes.ContainsRune(b.Bytes(), 0x1b) {
		t.Errorf("a control character went through: %q", b.String())
	}
}
