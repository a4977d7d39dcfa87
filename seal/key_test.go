package seal

import (
	"bytes"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// testSecret is the worker secret of the fixed test key (also the key of
// the golden files).
const testSecret = "vramseal test secret 0123456789abcdef"

func testKey(t testing.TB) Key {
	t.Helper()
	k, err := DeriveKey([]byte(testSecret))
	if err != nil {
		t.Fatalf("DeriveKey: %v", err)
	}
	return k
}

func TestDeriveKey(t *testing.T) {
	tests := []struct {
		name    string
		secret  []byte
		wantErr bool
	}{
		{"nil", nil, true},
		{"empty", []byte{}, true},
		{"31 bytes", bytes.Repeat([]byte{'a'}, 31), true},
		{"32 bytes", bytes.Repeat([]byte{'a'}, 32), false},
		{"1000 bytes", bytes.Repeat([]byte{'b'}, 1000), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k, err := DeriveKey(tt.secret)
			if (err != nil) != tt.wantErr {
				t.Fatalf("DeriveKey(%d bytes) error = %v, want error %v", len(tt.secret), err, tt.wantErr)
			}
			if err != nil {
				if !k.IsZero() {
					t.Errorf("DeriveKey(%d bytes) returned a non-zero key with an error", len(tt.secret))
				}
				if !strings.Contains(err.Error(), "at least 32") || !strings.HasPrefix(err.Error(), "seal: ") {
					t.Errorf("DeriveKey(%d bytes) error = %q, want a clear 'seal: ... at least 32' message", len(tt.secret), err)
				}
				return
			}
			if k.IsZero() {
				t.Errorf("DeriveKey(%d bytes) is zero", len(tt.secret))
			}
		})
	}

	k1, k2 := testKey(t), testKey(t)
	if k1.ID() != k2.ID() || k1.m().key != k2.m().key {
		t.Errorf("DeriveKey is not deterministic")
	}
	other, _ := DeriveKey([]byte(testSecret + "!"))
	if other.ID() == k1.ID() {
		t.Errorf("different secrets have the same key ID %s", k1.ID())
	}
	if !regexp.MustCompile(`^k1:[0-9a-f]{16}$`).MatchString(k1.ID()) {
		t.Errorf("ID() = %q, want k1: and 16 lowercase hex digits", k1.ID())
	}
	if (Key{}).ID() != "" || !(Key{}).IsZero() {
		t.Errorf("zero Key has ID %q", (Key{}).ID())
	}

	// The derivation is exactly HKDF-SHA256 with the documented label, and
	// the ID the documented hash.
	want, _ := hkdf.Key(sha256.New, []byte(testSecret), nil, "vramseal seal key v1", 32)
	if !bytes.Equal(k1.m().key[:], want) {
		t.Errorf("DeriveKey is not HKDF-SHA256(secret, no salt, %q)", keyLabel)
	}
	id := sha256.Sum256(append([]byte("vramseal key id v1\x00"), want...))
	if k1.ID() != "k1:"+hex.EncodeToString(id[:8]) {
		t.Errorf("ID() = %s, want the documented fingerprint", k1.ID())
	}
}

func TestLoadKeyFile(t *testing.T) {
	dir := t.TempDir()
	want := testKey(t)
	tests := []struct {
		name    string
		content string
		mode    os.FileMode
		wantErr string // substring; "" means success
	}{
		{"0600", testSecret, 0o600, ""},
		{"0400", testSecret, 0o400, ""},
		{"trailing newline", testSecret + "\n", 0o600, ""},
		{"trailing crlf", testSecret + "\r\n", 0o600, ""},
		{"group readable", testSecret, 0o640, "chmod 600"},
		{"other readable", testSecret, 0o604, "chmod 600"},
		{"group writable", testSecret, 0o620, "chmod 600"},
		{"world", testSecret, 0o666, "mode 0666"},
		{"short", "short secret\n", 0o600, "at least 32"},
		{"too large", strings.Repeat("x", maxKeyFileSize+1), 0o600, "larger than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tt.name, " ", "_"))
			if err := os.WriteFile(path, []byte(tt.content), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(path, tt.mode); err != nil {
				t.Fatal(err)
			}
			k, err := LoadKeyFile(path)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("LoadKeyFile(%s) = %v, want success", tt.name, err)
				}
				if k.ID() != want.ID() {
					t.Errorf("LoadKeyFile(%s) ID = %s, want %s", tt.name, k.ID(), want.ID())
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("LoadKeyFile(%s) = %v, want error containing %q", tt.name, err, tt.wantErr)
			}
			if strings.Contains(err.Error(), testSecret) {
				t.Errorf("LoadKeyFile error leaks the secret: %v", err)
			}
		})
	}
	if _, err := LoadKeyFile(filepath.Join(dir, "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("LoadKeyFile(missing) = %v, want os.ErrNotExist", err)
	}
	if _, err := LoadKeyFile(dir); err == nil {
		t.Errorf("LoadKeyFile(directory) succeeded")
	}
	// Only one newline is trimmed: two newlines are part of the secret.
	path := filepath.Join(dir, "two-newlines")
	os.WriteFile(path, []byte(testSecret+"\n\n"), 0o600)
	if k, err := LoadKeyFile(path); err != nil || k.ID() == want.ID() {
		t.Errorf("LoadKeyFile trimmed more than one newline (err %v)", err)
	}
}

// TestKeyNeverPrinted formats a Key every way the program might and
// requires that no form of the key bytes appears.
func TestKeyNeverPrinted(t *testing.T) {
	k := testKey(t)
	raw := k.m().key[:]
	forbidden := []string{
		hex.EncodeToString(raw),
		strings.ToUpper(hex.EncodeToString(raw)),
		base64.StdEncoding.EncodeToString(raw),
		base64.RawURLEncoding.EncodeToString(raw),
		string(raw),
		fmt.Sprint(raw),             // [12 34 ...]
		fmt.Sprintf("%#v", raw[:4]), // []byte{0x..
		fmt.Sprintf("%v", raw[:6])[1:],
		hex.EncodeToString(raw[:6]),
		testSecret,
	}
	check := func(t *testing.T, what, out string) {
		t.Helper()
		for _, f := range forbidden {
			if strings.Contains(out, f) {
				t.Errorf("%s leaks key material: %q", what, out)
			}
		}
		// Byte values printed as decimal, one at a time, would be a leak too.
		if strings.Contains(out, fmt.Sprint(raw[0], " ", raw[1], " ", raw[2])) {
			t.Errorf("%s leaks key bytes: %q", what, out)
		}
	}

	type holder struct {
		Public  Key
		private Key
	}
	hv := holder{k, k}
	values := map[string]any{"Key": k, "*Key": &k, "struct": hv, "*struct": &hv, "slice": []Key{k}, "map": map[string]Key{"k": k}}
	verbs := []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d", "%T", "%p", "%10.3v", "%-20s", "% x", "%#x", "%b", "%o", "%c", "%U", "%e", "%g", "%t"}
	for name, v := range values {
		for _, verb := range verbs {
			check(t, "fmt.Sprintf("+verb+", "+name+")", fmt.Sprintf(verb, v))
		}
		check(t, "fmt.Sprint("+name+")", fmt.Sprint(v))
		check(t, "fmt.Sprintln("+name+")", fmt.Sprintln(v))
		b, err := json.Marshal(v)
		if err != nil {
			t.Errorf("json.Marshal(%s): %v", name, err)
		}
		check(t, "json.Marshal("+name+")", string(b))
	}
	if s := k.String(); !strings.Contains(s, k.ID()) || !strings.Contains(s, "REDACTED") {
		t.Errorf("String() = %q, want REDACTED and the key ID", s)
	}
	check(t, "error wrapping", fmt.Errorf("sign with %v: %w", k, errors.New("boom")).Error())
	txt, _ := k.MarshalText()
	check(t, "MarshalText", string(txt))
	check(t, "GoString", k.GoString())

	for _, h := range []struct {
		name string
		new  func(*bytes.Buffer) slog.Handler
	}{
		{"json", func(b *bytes.Buffer) slog.Handler { return slog.NewJSONHandler(b, nil) }},
		{"text", func(b *bytes.Buffer) slog.Handler { return slog.NewTextHandler(b, nil) }},
	} {
		var buf bytes.Buffer
		log := slog.New(h.new(&buf))
		log.Info("key", "key", k, "ptr", &k, "struct", hv, slog.Any("any", k), slog.Group("g", "k", k))
		log.With("key", k).Info("with")
		check(t, "slog "+h.name, buf.String())
		if !strings.Contains(buf.String(), k.ID()) {
			t.Errorf("slog %s output lacks the key ID: %s", h.name, buf.String())
		}
	}
	if s := fmt.Sprint(Key{}); !strings.Contains(s, "REDACTED") {
		t.Errorf("zero Key prints as %q", s)
	}
}
