package provenance

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

const fixtures = "../testdata/models"

func readFixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(fixtures, name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func fixtureKey(t testing.TB) *PublicKey {
	t.Helper()
	k, err := ParsePublicKey(readFixture(t, "fixture-key.pub"))
	if err != nil {
		t.Fatalf("ParsePublicKey(fixture) = %v", err)
	}
	return k
}

func TestFixturesVerify(t *testing.T) {
	key := fixtureKey(t)
	der, _ := pem.Decode(readFixture(t, "fixture-key.pub"))
	fp := sha256.Sum256(der.Bytes)
	if got, want := key.Fingerprint(), hex.EncodeToString(fp[:]); got != want {
		t.Errorf("Fingerprint() = %s, want %s", got, want)
	}
	for _, tt := range []struct {
		sig, name, dir string
		files          []string
	}{
		{"tiny-llama.sig", "tiny-llama", "tiny-llama", nil},
		{"single.safetensors.sig", "single.safetensors", ".", []string{"single.safetensors"}},
	} {
		t.Run(tt.sig, func(t *testing.T) {
			bundle := readFixture(t, tt.sig)
			st, err := VerifyBundle(bundle, key)
			if err != nil {
				t.Fatalf("VerifyBundle(%s) = %v", tt.sig, err)
			}
			if err := st.CheckName(tt.name); err != nil {
				t.Errorf("CheckName(%q) = %v", tt.name, err)
			}
			var ne *NameError
			if err := st.CheckName("other"); !errors.As(err, &ne) || ne.Signed != tt.name {
				t.Errorf("CheckName(other) = %v, want *NameError", err)
			}
			dir := filepath.Join(fixtures, tt.dir)
			files := tt.files
			if files == nil {
				ents, err := os.ReadDir(dir)
				if err != nil {
					t.Fatal(err)
				}
				for _, e := range ents {
					files = append(files, e.Name())
				}
			}
			want := Digests{}
			for _, f := range files {
				b, err := os.ReadFile(filepath.Join(dir, f))
				if err != nil {
					t.Fatal(err)
				}
				key := f
				if tt.files != nil {
					key = SingleFile
				}
				want[key] = sha256.Sum256(b)
			}
			if diff := cmp.Diff(want, st.Files); diff != "" {
				t.Errorf("statement files differ from the fixture (-want +got):\n%s", diff)
			}
			if st.Method != "files" || st.Name != tt.name {
				t.Errorf("statement = %q %q, want files %q", st.Method, st.Name, tt.name)
			}
			env := decodeEnvelope(t, bundle)
			payload, _ := base64.StdEncoding.DecodeString(env["payload"].(string))
			ps := sha256.Sum256(payload)
			if st.Digest != hex.EncodeToString(ps[:]) {
				t.Errorf("Digest = %s, want sha256 of payload", st.Digest)
			}
			e := NewExpect(st.Files)
			if tt.files == nil {
				if err := e.CheckFiles(dir, files); err != nil {
					t.Errorf("CheckFiles = %v", err)
				}
			}
			p := st.Provenance(key)
			j, _ := json.Marshal(p)
			for _, k := range []string{`"verified":true`, `"method":"signature"`, `"key_fingerprint"`, `"statement_digest"`, `"signed_name"`} {
				if !strings.Contains(string(j), k) {
					t.Errorf("Provenance JSON %s lacks %s", j, k)
				}
			}
		})
	}
}

func TestOtherKeyFails(t *testing.T) {
	key := fixtureKey(t)
	_, err := VerifyBundle(readFixture(t, "tiny-llama.other-key.sig"), key)
	var se *SignatureError
	if !errors.As(err, &se) || se.Fingerprint != key.Fingerprint() {
		t.Fatalf("VerifyBundle(other-key) = %v, want *SignatureError with %s", err, key.Fingerprint())
	}
	if !IsIntegrity(err) || !strings.Contains(err.Error(), key.Fingerprint()) {
		t.Errorf("error %q is not an integrity error naming the key", err)
	}
}

func decodeEnvelope(t testing.TB, bundle []byte) map[string]any {
	t.Helper()
	var b map[string]any
	if err := json.Unmarshal(bundle, &b); err != nil {
		t.Fatal(err)
	}
	return b["dsseEnvelope"].(map[string]any)
}

// edit decodes the bundle, lets f change it, and encodes it again.
func edit(t testing.TB, bundle []byte, f func(b map[string]any, env map[string]any)) []byte {
	t.Helper()
	var b map[string]any
	if err := json.Unmarshal(bundle, &b); err != nil {
		t.Fatal(err)
	}
	f(b, b["dsseEnvelope"].(map[string]any))
	out, err := json.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func flipB64(t testing.TB, s string, i int) string {
	raw, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	raw[i%len(raw)] ^= 1
	return base64.StdEncoding.EncodeToString(raw)
}

func TestTamperedFixture(t *testing.T) {
	key := fixtureKey(t)
	orig := readFixture(t, "tiny-llama.sig")
	sigErr := func(err error) bool { var se *SignatureError; return errors.As(err, &se) }
	bad := func(err error) bool { return errors.Is(err, ErrMalformed) }
	for _, tt := range []struct {
		name   string
		bundle []byte
		want   func(error) bool
	}{
		{"flipped payload byte", edit(t, orig, func(_, env map[string]any) {
			env["payload"] = flipB64(t, env["payload"].(string), 200)
		}), sigErr},
		{"flipped signature", edit(t, orig, func(_, env map[string]any) {
			s := env["signatures"].([]any)[0].(map[string]any)
			s["sig"] = flipB64(t, s["sig"].(string), 40)
		}), sigErr},
		{"changed payload type", edit(t, orig, func(_, env map[string]any) {
			env["payloadType"] = "application/json"
		}), bad},
		{"wrong media type", edit(t, orig, func(b, _ map[string]any) {
			b["mediaType"] = "application/vnd.dev.sigstore.bundle.v0.4+json"
		}), bad},
		{"no signatures", edit(t, orig, func(_, env map[string]any) {
			env["signatures"] = []any{}
		}), bad},
		{"payload not base64", edit(t, orig, func(_, env map[string]any) {
			env["payload"] = "!!!"
		}), bad},
		{"trailing data", append(append([]byte{}, orig...), []byte(" {}")...), bad},
		{"too large", make([]byte, MaxBundleSize+1), bad},
		{"empty", nil, bad},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := VerifyBundle(tt.bundle, key)
			if !tt.want(err) {
				t.Errorf("VerifyBundle(%s) = %v", tt.name, err)
			}
		})
	}
	// Every truncation fails as malformed; every flipped byte fails.
	for n := range len(orig) {
		if _, err := VerifyBundle(orig[:n], key); !bad(err) {
			t.Fatalf("VerifyBundle(truncated to %d) = %v, want malformed", n, err)
		}
	}
	for i := range orig {
		b := append([]byte{}, orig...)
		b[i] ^= 0x20
		st, err := VerifyBundle(b, key)
		if err == nil && !cmp.Equal(st.Files, mustVerify(t, orig, key).Files) {
			t.Fatalf("byte %d flipped: verified with different files", i)
		}
	}
}

func mustVerify(t testing.TB, b []byte, k *PublicKey) *Statement {
	st, err := VerifyBundle(b, k)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func TestParsePublicKeyRejects(t *testing.T) {
	k, _ := ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	der, _ := x509.MarshalPKIXPublicKey(k.Public())
	p521 := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	good := readFixture(t, "fixture-key.pub")
	for name, in := range map[string][]byte{
		"empty":     nil,
		"not pem":   []byte("hello"),
		"p521":      p521,
		"priv type": []byte(strings.Replace(string(good), "PUBLIC KEY", "EC PRIVATE KEY", 2)),
		"two":       append(append([]byte{}, good...), good...),
		"bad der":   pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: []byte{1, 2, 3}}),
	} {
		if _, err := ParsePublicKey(in); !errors.Is(err, ErrMalformed) {
			t.Errorf("ParsePublicKey(%s) = %v, want malformed", name, err)
		}
	}
}

func TestParseSHA256Sums(t *testing.T) {
	in := d1 + "  config.json\n" + d2 + " *./model-00001.safetensors\r\n\n"
	got, err := ParseSHA256Sums(strings.NewReader(in))
	if err != nil {
		t.Fatalf("ParseSHA256Sums = %v", err)
	}
	a, _ := ParseSHA256(d1)
	b, _ := ParseSHA256(d2)
	if diff := cmp.Diff(Digests{"config.json": a, "model-00001.safetensors": b}, got); diff != "" {
		t.Errorf("ParseSHA256Sums (-want +got):\n%s", diff)
	}
	for _, tt := range []string{
		"",
		d1 + "  a\n" + d1 + "  a\n",
		d1[:63] + "g  a\n",
		d1 + " a\n",
		d1 + "  \n",
		d1 + "  a\x01b\n",
		d1 + "  ../a\n",
		d1 + "  /a\n",
		"\\" + d1 + "  a\\nb\n",
		d1 + "  " + strings.Repeat("x", maxSumsLine) + "\n",
	} {
		if _, err := ParseSHA256Sums(strings.NewReader(tt)); !errors.Is(err, ErrMalformed) {
			t.Errorf("ParseSHA256Sums(%q) = %v, want malformed", tt, err)
		}
	}
}

func TestExpect(t *testing.T) {
	a, _ := ParseSHA256(d1)
	b, _ := ParseSHA256(d2)
	e := NewExpect(Digests{"a": a, "b/c": b})
	if err := e.Check("a", a); err != nil {
		t.Errorf("Check(a) = %v", err)
	}
	var me *MismatchError
	if err := e.Check("a", b); !errors.As(err, &me) || me.File != "a" || me.Expected != d1 || me.Actual != d2 {
		t.Errorf("Check(a, wrong) = %v, want *MismatchError", err)
	}
	if err := e.Check("z", a); !errors.Is(err, ErrNotCovered) || !IsIntegrity(err) {
		t.Errorf("Check(z) = %v, want ErrNotCovered", err)
	}
	if got := e.Missing([]string{"a"}); !cmp.Equal(got, []string{"b/c"}) {
		t.Errorf("Missing([a]) = %v, want [b/c]", got)
	}
	if got := e.Files(); !sort.StringsAreSorted(got) || len(got) != 2 {
		t.Errorf("Files() = %v", got)
	}
}

func TestHashFileRefuses(t *testing.T) {
	dir := t.TempDir()
	out := t.TempDir()
	os.WriteFile(filepath.Join(out, "secret"), []byte("x"), 0o600)
	os.WriteFile(filepath.Join(dir, "ok"), []byte("hello"), 0o600)
	os.Symlink(filepath.Join(out, "secret"), filepath.Join(dir, "escape"))
	os.Symlink("ok", filepath.Join(dir, "inside"))
	os.Mkdir(filepath.Join(dir, "sub"), 0o700)
	want := sha256.Sum256([]byte("hello"))
	for _, rel := range []string{"ok", "inside"} {
		if got, err := HashFile(dir, rel); err != nil || got != want {
			t.Errorf("HashFile(%s) = %x, %v", rel, got, err)
		}
	}
	for _, rel := range []string{"escape", "sub", "../x", "missing"} {
		if _, err := HashFile(dir, rel); err == nil {
			t.Errorf("HashFile(%s) = nil error", rel)
		}
	}
	e := NewExpect(Digests{"ok": sha256.Sum256([]byte("other"))})
	var me *MismatchError
	if err := e.CheckFiles(dir, []string{"ok"}); !errors.As(err, &me) {
		t.Errorf("CheckFiles(changed) = %v, want *MismatchError", err)
	}
}

var (
	d1 = strings.Repeat("ab", 32)
	d2 = strings.Repeat("cd", 32)
)
