package topic

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// MaxNameLength is the longest valid topic name, in characters (Kafka's limit: 249 leaves room
// in a 255-byte file name for a partition suffix).
const MaxNameLength = 249

// ErrInvalidName is wrapped by every error ValidateName returns.
var ErrInvalidName = errors.New("topic: invalid topic name")

// ValidateName reports whether name is a valid topic name: 1 to MaxNameLength characters, each
// an ASCII letter, digit, '.', '_' or '-', and neither "." nor "..". Names become directory
// names, so these rules also keep every topic inside the data directory.
//
// The error wraps ErrInvalidName and says exactly what is wrong: the first offending character
// and its 0-based index, or the length.
func ValidateName(name string) error {
	if name == "" {
		return fmt.Errorf("%w: the name is empty (want 1 to %d characters from [a-zA-Z0-9._-])", ErrInvalidName, MaxNameLength)
	}
	for i := 0; i < len(name); i++ {
		if validNameByte(name[i]) {
			continue
		}
		// Every character before i is valid ASCII, so i is both the byte and the character index.
		what := fmt.Sprintf("byte 0x%02x (not valid UTF-8)", name[i])
		if r, size := utf8.DecodeRuneInString(name[i:]); r != utf8.RuneError || size > 1 {
			what = fmt.Sprintf("character %q", r)
		}
		return fmt.Errorf("%w %s: %s at index %d is not allowed (allowed: ASCII letters, digits, '.', '_' and '-')",
			ErrInvalidName, shortQuote(name), what, i)
	}
	if len(name) > MaxNameLength {
		return fmt.Errorf("%w %s: it is %d characters long, the maximum is %d", ErrInvalidName, shortQuote(name), len(name), MaxNameLength)
	}
	if name == "." || name == ".." {
		return fmt.Errorf("%w %q: %q is not allowed (it is a special directory name)", ErrInvalidName, name, name)
	}
	return nil
}

func validNameByte(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-'
}

// shortQuote quotes s for an error message, cut to its first 64 bytes so that a huge input
// does not make a huge error.
func shortQuote(s string) string {
	const limit = 64
	if len(s) <= limit {
		return fmt.Sprintf("%q", s)
	}
	cut := limit
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return fmt.Sprintf("%q…", s[:cut])
}

// CollisionKey returns the form under which two topic names collide: the name with every '.'
// replaced by '_'. Kafka's metric names replace '.' with '_', so "orders.eu" and "orders_eu"
// would report under the same metric name. The broker can keep existing topics indexed by
// this key to find a collision without a scan.
func CollisionKey(name string) string {
	return strings.ReplaceAll(name, ".", "_")
}

// CollidesWith reports whether topic names a and b collide: they are equal once every '.' is
// read as '_' (Kafka's Topic.hasCollision). Identical names collide too, so the broker checks
// whether the topic already exists first (to report "already exists"), and then refuses to
// create a topic that collides with any existing one, naming it, as Kafka does.
func CollidesWith(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if x == '.' {
			x = '_'
		}
		if y == '.' {
			y = '_'
		}
		if x != y {
			return false
		}
	}
	return true
}
