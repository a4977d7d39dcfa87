package narration_test

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/vramseal/vramseal/narration"
)

func TestScrub(t *testing.T) {
	const R = narration.Redacted
	tests := []struct {
		name, in, want string
		n              int
	}{
		// Positive cases.
		{"bearer", "Authorization: Bearer abcdefgh.ijk-lmn_op", "Authorization: Bearer " + R, 1},
		{"bearer lower case", "got bearer 0123456789abcdef== back", "got bearer " + R + " back", 1},
		{"token pair", "retry with token=s3cr3t/+=%~x now", "retry with token=" + R + " now", 1},
		{"password pair", "PASSWORD=hunter2", "PASSWORD=" + R, 1},
		{"prefixed key", "x-api-key=AbC123, next", "x-api-key=" + R + ", next", 1},
		{"aws secret name", "aws_secret_access_key=wJalrXUtnFEMI/K7MDENG", "aws_secret_access_key=" + R, 1},
		{"quoted value", `secret="two words"`, "secret=" + R, 1},
		{"spaces around =", "pwd = hunter2", "pwd = " + R, 1},
		{"query string", "GET /v1?user=a&token=abc123&x=1", "GET /v1?user=a&token=" + R + "&x=1", 1},
		{"two pairs", "key=a secret=b", "key=" + R + " secret=" + R, 2},
		{"json member", `body {"token":"abc\"def","id":1}`, `body {"token":"` + R + `","id":1}`, 1},
		{"json member spaced", `{"client_secret" : "zzz"}`, `{"client_secret" : "` + R + `"}`, 1},
		{"url user info", "fetch https://bob:hunter2@models.example/x", "fetch https://" + R + "@models.example/x", 1},
		{"url user only", "s3://AKIDKEY@bucket/a", "s3://" + R + "@bucket/a", 1},
		{"pem block", "key: -----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY----- end", "key: " + R + " end", 1},
		{"pem cut", "-----BEGIN PRIVATE KEY-----\nMIIEow", R, 1},
		{"aws access key", "id AKIAIOSFODNN7EXAMPLE used", "id " + R + " used", 1},
		// Negative cases.
		{"monkey is not a key", "monkey=1", "monkey=1", 0},
		{"keyboard", "keyboard=2 tokenizer=3", "keyboard=2 tokenizer=3", 0},
		{"words without value", "the key is sealed; token bucket empty", "the key is sealed; token bucket empty", 0},
		{"bearer in prose", "the bearer of bad news", "the bearer of bad news", 0},
		{"url without user info", "see https://example.com/a@b", "see https://example.com/a@b", 0},
		{"email", "mail ops@example.com", "mail ops@example.com", 0},
		{"public key", "-----BEGIN PUBLIC KEY-----", "-----BEGIN PUBLIC KEY-----", 0},
		{"short AKIA", "AKIA1234", "AKIA1234", 0},
		{"lower-case hex digest", "sha256=9f86d081884c7d659a2feaa0c55ad015", "sha256=9f86d081884c7d659a2feaa0c55ad015", 0},
		{"key id is fine", "key_id=k1 sealed", "key_id=k1 sealed", 0},
		{"empty", "", "", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, n := narration.Scrub(tt.in)
			if got != tt.want || n != tt.n {
				t.Errorf("Scrub(%q) = %q, %d, want %q, %d", tt.in, got, n, tt.want, tt.n)
			}
		})
	}
}

func TestScrubCleanDoesNotAllocate(t *testing.T) {
	allocs := testing.AllocsPerRun(100, func() { narration.Scrub(cleanSentence) })
	if allocs != 0 {
		t.Errorf("Scrub(clean sentence) allocates %v times, want 0", allocs)
	}
}

func FuzzScrub(f *testing.F) {
	for _, s := range []string{"token=abc", "Bearer abcdefghijk", "https://u:p@h/", "-----BEGIN PRIVATE KEY-----", "AKIAIOSFODNN7EXAMPLE", `{"key":"v"}`, "monkey=1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		once, n := narration.Scrub(s)
		twice, _ := narration.Scrub(once)
		if n > 0 && !strings.Contains(once, narration.Redacted) {
			t.Errorf("Scrub(%q) = %q, %d: no %s", s, once, n, narration.Redacted)
		}
		if twice != once {
			t.Errorf("Scrub is not idempotent: %q -> %q -> %q", s, once, twice)
		}
	})
}

func TestSecret(t *testing.T) {
	const value = "hunter2-canary"
	s := narration.NewSecret(value)
	type wrapper struct {
		Token narration.Secret `json:"token"`
	}
	var tb strings.Builder
	slog.New(slog.NewTextHandler(&tb, nil)).Info("m", "s", s)
	var jb strings.Builder
	slog.New(slog.NewJSONHandler(&jb, nil)).Info("m", "s", s)
	js, err := json.Marshal(wrapper{s})
	if err != nil {
		t.Fatal(err)
	}
	text, _ := s.MarshalText()
	app, _ := s.AppendText(nil)
	outputs := map[string]string{
		"String":   s.String(),
		"GoString": s.GoString(),
		"%v":       fmt.Sprintf("%v", s),
		"%+v":      fmt.Sprintf("%+v", wrapper{s}),
		"%#v":      fmt.Sprintf("%#v", wrapper{s}),
		"%s":       fmt.Sprintf("%s", s),
		"%q":       fmt.Sprintf("%q", s),
		"%x":       fmt.Sprintf("%x", s),
		"%d":       fmt.Sprintf("%d", s),
		"json":     string(js),
		"text":     string(text),
		"append":   string(app),
		"slogtext": tb.String(),
		"slogjson": jb.String(),
	}
	for path, out := range outputs {
		if strings.Contains(out, value) || !strings.Contains(out, narration.Redacted) {
			t.Errorf("%s of Secret = %q, want %s and no value", path, out, narration.Redacted)
		}
	}
	if got := s.Reveal(); got != value {
		t.Errorf("Reveal() = %q, want %q", got, value)
	}
}
