package provenance

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
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

// signer makes bundles with a test key, to check rules that sit under the
// signature.
type signer struct {
	priv crypto.Signer
	pub  *PublicKey
	hash func([]byte) []byte
}

func newSigner(t testing.TB, kind string) *signer {
	t.Helper()
	var priv crypto.Signer
	var hash func([]byte) []byte
	switch kind {
	case "p256":
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		priv, hash = k, func(m []byte) []byte { h := sha256.Sum256(m); return h[:] }
	case "p384":
		k, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
		priv, hash = k, func(m []byte) []byte { h := sha512.Sum384(m); return h[:] }
	case "ed25519":
		_, k, _ := ed25519.GenerateKey(rand.Reader)
		priv, hash = k, func(m []byte) []byte { return m }
	}
	der, err := x509.MarshalPKIXPublicKey(priv.Public())
	if err != nil {
		t.Fatal(err)
	}
	pub, err := ParsePublicKey(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
	if err != nil {
		t.Fatalf("ParsePublicKey(%s) = %v", kind, err)
	}
	return &signer{priv, pub, hash}
}

type res struct{ name, digest string }

func statementJSONFor(name string, rs []res, mutate func(map[string]any)) []byte {
	files := Digests{}
	var list []any
	for _, r := range rs {
		d, _ := hex.DecodeString(r.digest)
		var a [32]byte
		copy(a[:], d)
		files[r.name] = a
		list = append(list, map[string]any{"name": r.name, "algorithm": "sha256", "digest": r.digest})
	}
	sd := subjectDigest(files)
	st := map[string]any{
		"_type":         statementType,
		"subject":       []any{map[string]any{"name": name, "digest": map[string]any{"sha256": hex.EncodeToString(sd[:])}}},
		"predicateType": predicateType,
		"predicate": map[string]any{
			"serialization": map[string]any{"method": "files", "hash_type": "sha256", "allow_symlinks": false},
			"resources":     list,
		},
	}
	if mutate != nil {
		mutate(st)
	}
	b, _ := json.Marshal(st)
	return b
}

func (s *signer) bundle(t testing.TB, payload []byte) []byte {
	t.Helper()
	var opts crypto.SignerOpts = crypto.SHA256
	switch s.pub.Algorithm() {
	case "ecdsa-p384":
		opts = crypto.SHA384
	case "ed25519":
		opts = crypto.Hash(0)
	}
	sig, err := s.priv.Sign(rand.Reader, s.hash(pae(payloadType, payload)), opts)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(map[string]any{
		"mediaType":            mediaTypeV03,
		"verificationMaterial": map[string]any{"publicKey": map[string]any{"hint": "x"}},
		"dsseEnvelope": map[string]any{
			"payload":     base64.StdEncoding.EncodeToString(payload),
			"payloadType": payloadType,
			"signatures":  []any{map[string]any{"sig": base64.StdEncoding.EncodeToString(sig), "keyid": ""}},
		},
	})
	return b
}

var (
	d1 = strings.Repeat("ab", 32)
	d2 = strings.Repeat("cd", 32)
)

func TestKeyKinds(t *testing.T) {
	for _, kind := range []string{"p256", "p384", "ed25519"} {
		t.Run(kind, func(t *testing.T) {
			s := newSigner(t, kind)
			b := s.bundle(t, statementJSONFor("m", []res{{"a/b.safetensors", d1}, {"c.json", d2}}, nil))
			st, err := VerifyBundle(b, s.pub)
			if err != nil {
				t.Fatalf("VerifyBundle(%s) = %v", kind, err)
			}
			if len(st.Files) != 2 {
				t.Errorf("Files = %v, want 2", st.Files)
			}
			other := newSigner(t, kind)
			var se *SignatureError
			if _, err := VerifyBundle(b, other.pub); !errors.As(err, &se) {
				t.Errorf("VerifyBundle(other %s key) = %v, want *SignatureError", kind, err)
			}
		})
	}
}

func TestSignedButMalformed(t *testing.T) {
	s := newSigner(t, "p256")
	set := func(path string, v any) func(map[string]any) {
		return func(m map[string]any) {
			parts := strings.Split(path, ".")
			for _, p := range parts[:len(parts)-1] {
				m = m[p].(map[string]any)
			}
			m[parts[len(parts)-1]] = v
		}
	}
	ok := []res{{"a", d1}}
	for _, tt := range []struct {
		name   string
		subj   string
		rs     []res
		mutate func(map[string]any)
	}{
		{"duplicate resource", "m", []res{{"a", d1}, {"a", d1}}, nil},
		{"dot dot", "m", []res{{"../etc/passwd", d1}}, nil},
		{"inner dot dot", "m", []res{{"a/../../b", d1}}, nil},
		{"absolute", "m", []res{{"/etc/passwd", d1}}, nil},
		{"backslash", "m", []res{{`a\b`, d1}}, nil},
		{"control char", "m", []res{{"a\nb", d1}}, nil},
		{"empty element", "m", []res{{"a//b", d1}}, nil},
		{"empty name", "m", []res{{"", d1}}, nil},
		{"single beside others", "m", []res{{".", d1}, {"b", d2}}, nil},
		{"bad hex", "m", []res{{"a", strings.Repeat("zz", 32)}}, nil},
		{"short digest", "m", []res{{"a", "abcd"}}, nil},
		{"no resources", "m", nil, nil},
		{"subject name control", "m\x1b[31m", ok, nil},
		{"statement type", "m", ok, set("_type", "https://in-toto.io/Statement/v0.1")},
		{"predicate type", "m", ok, set("predicateType", "https://example/other")},
		{"method", "m", ok, set("predicate.serialization.method", "shards")},
		{"hash type", "m", ok, set("predicate.serialization.hash_type", "blake2")},
		{"subject digest", "m", ok, func(m map[string]any) {
			m["subject"].([]any)[0].(map[string]any)["digest"] = map[string]any{"sha256": d2}
		}},
		{"extra resource", "m", ok, func(m map[string]any) {
			p := m["predicate"].(map[string]any)
			p["resources"] = append(p["resources"].([]any), map[string]any{"name": "x", "algorithm": "sha256", "digest": d2})
		}},
		{"two subjects", "m", ok, func(m map[string]any) {
			m["subject"] = append(m["subject"].([]any), m["subject"].([]any)[0])
		}},
		{"resource algorithm", "m", ok, func(m map[string]any) {
			m["predicate"].(map[string]any)["resources"].([]any)[0].(map[string]any)["algorithm"] = "md5"
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			b := s.bundle(t, statementJSONFor(tt.subj, tt.rs, tt.mutate))
			_, err := VerifyBundle(b, s.pub)
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("VerifyBundle(%s) = %v, want malformed", tt.name, err)
			}
			if strings.ContainsAny(err.Error(), "\n\x1b") {
				t.Errorf("error %q has control characters", err)
			}
		})
	}
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
