// Package safetext keeps text from manifests, charts, values and registry
// answers from steering a terminal: control characters (C0 but tab and
// newline, DEL, and C1 such as the one-byte CSI) are printed as \u00XX,
// which is also a valid escape inside a JSON string, so JSON output stays
// the same document.
package safetext

import (
	"io"
	"strings"
	"unicode/utf8"
)

func unsafe(r rune) bool {
	return (r < 0x20 && r != '\t' && r != '\n') || (r >= 0x7f && r <= 0x9f)
}

const hex = "0123456789abcdef"

func escape(b []byte, r rune) []byte {
	return append(b, '\\', 'u', '0', '0', hex[r>>4&0xf], hex[r&0xf])
}

// String returns s with its control characters escaped.
func String(s string) string {
	if strings.IndexFunc(s, unsafe) < 0 {
		return s
	}
	out := make([]byte, 0, len(s)+16)
	for _, r := range s {
		if unsafe(r) {
			out = escape(out, r)
		} else {
			out = utf8.AppendRune(out, r)
		}
	}
	return string(out)
}

// Writer escapes control characters on their way to w; a UTF-8 sequence
// split between writes is held back until it is whole.
type Writer struct {
	w    io.Writer
	held []byte
}

// NewWriter wraps w.
func NewWriter(w io.Writer) *Writer { return &Writer{w: w} }

// Write escapes p and writes it; it reports len(p) when all of it went out.
func (s *Writer) Write(p []byte) (int, error) {
	buf := append(s.held, p...)
	s.held = nil
	out := make([]byte, 0, len(buf))
	for i := 0; i < len(buf); {
		if !utf8.FullRune(buf[i:]) {
			s.held = append([]byte(nil), buf[i:]...)
			break
		}
		r, n := utf8.DecodeRune(buf[i:])
		if unsafe(r) {
			out = escape(out, r)
		} else {
			out = append(out, buf[i:i+n]...) // invalid bytes pass as they are
		}
		i += n
	}
	if _, err := s.w.Write(out); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Flush writes what is held back (an incomplete UTF-8 sequence) as it is.
func (s *Writer) Flush() error {
	if len(s.held) == 0 {
		return nil
	}
	_, err := s.w.Write(s.held)
	s.held = nil
	return err
}
