package narration

import (
	"fmt"
	"io"
	"log/slog"
	"regexp"
	"strings"
)

// Redacted is what every redacted secret is replaced with.
const Redacted = "[REDACTED]"

// Secret holds a value that must never be printed: a token, password or key.
// Every formatting path (String, GoString, fmt verbs, slog, JSON and text
// marshalling) yields [Redacted]; only [Secret.Reveal] returns the value.
// The zero Secret holds the empty string.
type Secret struct{ v string }

// NewSecret wraps v.
func NewSecret(v string) Secret { return Secret{v: v} }

// Reveal returns the secret value. Call it only where the value is used,
// never where it is logged.
func (s Secret) Reveal() string { return s.v }

// String returns [Redacted].
func (Secret) String() string { return Redacted }

// GoString returns [Redacted], so %#v hides the value too.
func (Secret) GoString() string { return Redacted }

// Format writes [Redacted] for every verb and flag.
func (Secret) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, Redacted) }

// LogValue returns [Redacted] as a string value.
func (Secret) LogValue() slog.Value { return slog.StringValue(Redacted) }

// MarshalJSON returns [Redacted] as a JSON string.
func (Secret) MarshalJSON() ([]byte, error) { return []byte(`"` + Redacted + `"`), nil }

// MarshalText returns [Redacted].
func (Secret) MarshalText() ([]byte, error) { return []byte(Redacted), nil }

// AppendText appends [Redacted] to b.
func (Secret) AppendText(b []byte) ([]byte, error) { return append(b, Redacted...), nil }

var (
	_ fmt.Stringer   = Secret{}
	_ fmt.GoStringer = Secret{}
	_ fmt.Formatter  = Secret{}
	_ slog.LogValuer = Secret{}
)

// secretName matches the name of a credential: one of the words below,
// optionally after prefixes joined by '_' or '-' ("api_key", "x-auth-token",
// "aws_secret_access_key"). It must start at a word boundary, so "monkey" is
// not a name.
const secretName = `(?:[a-z0-9]+[_-])*(?:apikey|key|token|secret|password|passwd|pwd)s?`

// A scrubber replaces every match of re with repl (in the syntax of
// [regexp.Regexp.Expand]).
type scrubber struct {
	re   *regexp.Regexp
	repl string
}

// scrubbers run in order; a pattern that swallows a larger span runs first.
var scrubbers = []scrubber{
	// PEM private key blocks (RFC 7468), including a block cut before its end.
	{regexp.MustCompile(`-----BEGIN[A-Z0-9 ]*PRIVATE KEY-----(?s:.*?)(?:-----END[A-Z0-9 ]*PRIVATE KEY-----|\z)`), Redacted},
	// JSON members: "token": "value".
	{regexp.MustCompile(`(?i)("` + secretName + `"\s*:\s*)"(?:[^"\\]|\\.)*"`), `${1}"` + Redacted + `"`},
	// Authorization: Bearer <token> (RFC 6750 b64token).
	{regexp.MustCompile(`(?i)\b(bearer)\s+[a-z0-9._~+/-]{8,}=*`), `${1} ` + Redacted},
	// key=value pairs, the value quoted or running to a space or separator.
	{regexp.MustCompile(`(?i)\b(` + secretName + `\s*=\s*)(?:"[^"]*"|'[^']*'|[^\s&,;"'<>]+)`), `${1}` + Redacted},
	// User information in URLs (RFC 3986 section 3.2.1).
	{regexp.MustCompile(`(?i)\b([a-z][a-z0-9+.-]*://)[^/?#\s@]+@`), `${1}` + Redacted + `@`},
	// AWS access key IDs.
	{regexp.MustCompile(`\b(?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AIPA|ANPA|ANVA|APKA|AROA)[A-Z0-9]{16}\b`), Redacted},
}

// Scrub returns s with every secret it recognizes replaced by [Redacted], and
// the number of replacements. It recognizes bearer tokens, key=value pairs and
// JSON members whose name is a credential (key, token, secret, password),
// user information in URLs, PEM private key blocks and AWS access key IDs.
// A cheap keyword check runs first, so clean text costs no allocation.
func Scrub(s string) (string, int) {
	if !mayHoldSecret(s) {
		return s, 0
	}
	n := 0
	for _, sc := range scrubbers {
		m := sc.re.FindAllStringSubmatchIndex(s, -1)
		if len(m) == 0 {
			continue
		}
		n += len(m)
		out := make([]byte, 0, len(s))
		last := 0
		for _, loc := range m {
			out = append(out, s[last:loc[0]]...)
			out = sc.re.ExpandString(out, sc.repl, s, loc)
			last = loc[1]
		}
		s = string(append(out, s[last:]...))
	}
	return s, n
}

// mayHoldSecret reports whether s may hold something a scrubber matches. It
// is a superset check (false means no scrubber matches) built from
// strings.IndexByte, which scans clean text many bytes at a time.
func mayHoldSecret(s string) bool {
	// key=value pairs need '=' and JSON members '"', both with a credential
	// word.
	if (strings.IndexByte(s, '=') >= 0 || strings.IndexByte(s, '"') >= 0) && hasCredentialWord(s) {
		return true
	}
	if i := strings.IndexByte(s, '@'); i >= 0 && strings.Contains(s, "://") {
		return true
	}
	return hasAt(s, '-', "-----begin") || hasAt(s, 'b', "bearer") || hasAt(s, 'B', "bearer") || hasAWSKeyID(s)
}

// hasCredentialWord reports whether s contains, in any case, one of the
// words that end a credential name.
func hasCredentialWord(s string) bool {
	for _, w := range [...]struct {
		lower, upper byte
		word         string
	}{{'k', 'K', "key"}, {'t', 'T', "token"}, {'s', 'S', "secret"}, {'p', 'P', "passw"}, {'p', 'P', "pwd"}} {
		if hasAt(s, w.lower, w.word) || hasAt(s, w.upper, w.word) {
			return true
		}
	}
	return false
}

// hasAt reports whether some c in s starts lower, ignoring ASCII case.
func hasAt(s string, c byte, lower string) bool {
	for {
		i := strings.IndexByte(s, c)
		if i < 0 {
			return false
		}
		if hasPrefixFold(s[i:], lower) {
			return true
		}
		s = s[i+1:]
	}
}

// hasAWSKeyID reports whether s holds an 'A' followed by 19 upper-case
// letters and digits, the shape of an AWS access key ID.
func hasAWSKeyID(s string) bool {
	for len(s) >= 20 {
		i := strings.IndexByte(s, 'A')
		if i < 0 || len(s)-i < 20 {
			return false
		}
		if awsLike(s[i:]) {
			return true
		}
		s = s[i+1:]
	}
	return false
}

// hasPrefixFold reports whether s starts with lower, ignoring ASCII case.
// lower holds only lower-case letters and bytes that setting bit 0x20 leaves
// alone ('-').
func hasPrefixFold(s, lower string) bool {
	if len(s) < len(lower) {
		return false
	}
	for i := 0; i < len(lower); i++ {
		if s[i]|0x20 != lower[i] {
			return false
		}
	}
	return true
}

// awsLike reports whether s starts with 20 upper-case letters and digits,
// the shape of an AWS access key ID.
func awsLike(s string) bool {
	if len(s) < 20 {
		return false
	}
	for i := 0; i < 20; i++ {
		if c := s[i]; (c < 'A' || c > 'Z') && (c < '0' || c > '9') {
			return false
		}
	}
	return true
}
