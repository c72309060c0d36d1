package topic

import (
	"errors"
	"strings"
	"testing"
)

func TestValidateName(t *testing.T) {
	for _, tc := range []struct {
		name    string
		in      string
		wantErr string // substring of the error; "" means valid
	}{
		{"one char", "a", ""},
		{"digit", "0", ""},
		{"every class", "Orders_v2.eu-west-1", ""},
		{"max length 249", strings.Repeat("x", 249), ""},
		{"three dots", "...", ""},
		{"dot prefix", ".hidden", ""},
		{"dot dot prefix", "..a", ""},
		{"dash prefix", "-a", ""},
		{"underscores", "__consumer_offsets", ""},

		{"empty", "", "the name is empty"},
		{"too long 250", strings.Repeat("x", 250), "it is 250 characters long, the maximum is 249"},
		{"far too long", strings.Repeat("x", 10000), "it is 10000 characters long"},
		{"dot", ".", `"." is not allowed`},
		{"dot dot", "..", `".." is not allowed`},

		{"space", "my topic", `character ' ' at index 2 is not allowed`},
		{"leading space", " a", `character ' ' at index 0`},
		{"trailing space", "a ", `character ' ' at index 1`},
		{"tab", "a\tb", `character '\t' at index 1`},
		{"newline", "a\n", `character '\n' at index 1`},
		{"NUL", "a\x00", `character '\x00' at index 1`},
		{"DEL", "\x7f", `character '\x7f' at index 0`},
		{"slash", "a/b", `character '/' at index 1`},
		{"path traversal", "../etc", `character '/' at index 2`},
		{"backslash", `a\b`, `character '\\' at index 1`},
		{"colon", "a:b", `character ':' at index 1`},
		{"star", "a*", `character '*' at index 1`},
		{"question", "a?", `character '?'`},
		{"double quote", `a"`, `character '"'`},
		{"single quote", "a'", `character '\''`},
		{"backquote", "a`", "character '`'"},
		{"angle", "a<b>", `character '<' at index 1`},
		{"pipe", "a|b", `character '|'`},
		{"at", "a@b", `character '@'`},
		{"hash", "#a", `character '#' at index 0`},
		{"plus", "a+b", `character '+'`},
		{"comma", "a,b", `character ','`},
		{"equals", "a=b", `character '='`},
		{"tilde", "~a", `character '~'`},
		{"bang", "a!", `character '!'`},
		{"dollar", "$a", `character '$'`},
		{"percent", "a%20", `character '%'`},
		{"ampersand", "a&b", `character '&'`},
		{"parens", "a(b)", `character '('`},
		{"brackets", "a[0]", `character '['`},
		{"braces", "{a}", `character '{' at index 0`},
		{"semicolon", "a;b", `character ';'`},
		{"caret", "a^b", `character '^'`},
		{"latin-1 letter", "café", `character 'é' at index 3`},
		{"CJK", "主题", `character '主' at index 0`},
		{"emoji", "a🚀", `character '🚀' at index 1`},
		{"fullwidth dot", "a．b", `character '．' at index 1`},
		{"invalid UTF-8", "a\xffb", `byte 0xff (not valid UTF-8) at index 1`},
		{"lone continuation byte", "\x80", `byte 0x80 (not valid UTF-8) at index 0`},
		{"bad char beats length", strings.Repeat("x", 300) + "/", `character '/' at index 300`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := ValidateName(tc.in)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("ValidateName(%q) = %v, want nil", tc.in, err)
				}
				return
			}
			if err == nil {
				t.Fatalf("ValidateName(%q) = nil, want an error containing %q", tc.in, tc.wantErr)
			}
			if !errors.Is(err, ErrInvalidName) {
				t.Errorf("error %v does not wrap ErrInvalidName", err)
			}
			if !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("ValidateName(%q) = %q, want it to contain %q", shortQuote(tc.in), err, tc.wantErr)
			}
			if len(err.Error()) > 300 {
				t.Errorf("error is %d bytes long; a long name must be cut in the message", len(err.Error()))
			}
		})
	}
}

// Every single byte, alone and inside a valid name, is accepted exactly when it is in
// [a-zA-Z0-9._-] (a lone '.' aside).
func TestValidateNameEveryByte(t *testing.T) {
	for b := 0; b < 256; b++ {
		c := byte(b)
		want := 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-'
		s := "x" + string([]byte{c}) + "y"
		if got := ValidateName(s) == nil; got != want {
			t.Errorf("ValidateName(%q) valid = %v, want %v", s, got, want)
		}
	}
}

func TestCollidesWith(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want bool
	}{
		{"orders.eu", "orders_eu", true},
		{"orders_eu", "orders.eu", true},
		{"a.b_c", "a_b.c", true},
		{"a.b", "a.b", true}, // identical names collide: the broker reports "already exists" first
		{"a.b", "a-b", false},
		{"a.b", "a.bc", false},
		{"ab", "a_", false},
		{"A_b", "a_b", false}, // names are case-sensitive
		{"", "", true},
		{".", "_", true},
	} {
		if got := CollidesWith(tc.a, tc.b); got != tc.want {
			t.Errorf("CollidesWith(%q, %q) = %v, want %v", tc.a, tc.b, got, tc.want)
		}
		if got := CollisionKey(tc.a) == CollisionKey(tc.b); got != tc.want {
			t.Errorf("CollisionKey(%q) == CollisionKey(%q) is %v, want %v", tc.a, tc.b, got, tc.want)
		}
	}
}

func FuzzValidateName(f *testing.F) {
	for _, s := range []string{"", "a", ".", "..", "...", "a/b", "orders.eu", "café", "\xff", strings.Repeat("z", 249), strings.Repeat("z", 250)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		err := ValidateName(name)
		valid := len(name) >= 1 && len(name) <= MaxNameLength && name != "." && name != ".."
		for i := 0; i < len(name); i++ {
			valid = valid && validNameByte(name[i])
		}
		if (err == nil) != valid {
			t.Fatalf("ValidateName(%q) = %v, want valid=%v", name, err, valid)
		}
		if err != nil {
			if !errors.Is(err, ErrInvalidName) {
				t.Fatalf("error %v does not wrap ErrInvalidName", err)
			}
			if len(err.Error()) > 400 {
				t.Fatalf("error of %d bytes for a %d-byte name", len(err.Error()), len(name))
			}
		}
		if !CollidesWith(name, CollisionKey(name)) || CollidesWith(name, name+"x") {
			t.Fatalf("CollidesWith inconsistent for %q", name)
		}
	})
}
