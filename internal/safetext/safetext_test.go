package safetext

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestEscape(t *testing.T) {
	for in, want := range map[string]string{
		"plain op-1":                       "plain op-1",
		"héllo 世界 🎉":                       "héllo 世界 🎉",
		"op1\x1b[2J\x1b]0;pwned\x07":       `op1\u001b[2J\u001b]0;pwned\u0007`,
		"t\nFAKE 1796000000000-0 ok op=op": `t\nFAKE 1796000000000-0 ok op=op`,
		"a\tb\rc":                          `a\tb\rc`,
		"bad\xffbyte":                      `bad\xffbyte`,
		"del\x7f c1\u0085 \u2028\u2029":    `del\u007f c1\u0085 \u2028\u2029`,
		"rtl \u202egnp.exe \u2066x\u2069":  `rtl \u202egnp.exe \u2066x\u2069`,
		`back\slash`:                       `back\slash`,
	} {
		if got := Escape(in); got != want {
			t.Errorf("Escape(%q) = %q; want %q", in, got, want)
		}
	}
}

func TestCap(t *testing.T) {
	if got := Cap("short", 10); got != "short" {
		t.Errorf("Cap(short) = %q", got)
	}
	long := strings.Repeat("x", 1000)
	got := Cap(long, 256)
	if !strings.HasPrefix(got, strings.Repeat("x", 256)+"…(1000 bytes)") || len(got) > 256+20 {
		t.Errorf("Cap(long) = %q", got)
	}
	got = Cap(strings.Repeat("\x1b", 100), 12)
	if strings.ContainsRune(got, 0x1b) || !strings.HasSuffix(got, "…(100 bytes)") {
		t.Errorf("Cap(escapes) = %q", got)
	}
}

func FuzzEscapeIsOneSafeLine(f *testing.F) {
	f.Add("op1\x1b[2J\n\u202e")
	f.Fuzz(func(t *testing.T, s string) {
		out := Escape(s)
		if !utf8.ValidString(out) {
			t.Fatalf("Escape(%q) = %q: invalid UTF-8", s, out)
		}
		for _, r := range out {
			if unsafe(r) {
				t.Fatalf("Escape(%q) = %q: holds %U", s, out, r)
			}
		}
		if clean(s) && out != s {
			t.Fatalf("Escape changed clean text %q", s)
		}
	})
}
