package provenance

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Limits on untrusted bundles.
const (
	// MaxBundleSize is the largest bundle [VerifyBundle] reads.
	MaxBundleSize = 16 << 20
	// MaxResources is the most files a statement may list.
	MaxResources = 1 << 16
	// maxNameLen caps a resource or subject name in bytes.
	maxNameLen = 4096
	// maxSignatures caps the DSSE signature list.
	maxSignatures = 16
)

// Format identifiers checked by [VerifyBundle].
const (
	mediaTypeV01 = "application/vnd.dev.sigstore.bundle+json;version=0.1"
	mediaTypeV02 = "application/vnd.dev.sigstore.bundle+json;version=0.2"
	// MediaTypeV03 is the Sigstore bundle version model_signing writes.
	MediaTypeV03 = "application/vnd.dev.sigstore.bundle.v0.3+json"
	// PayloadType is the DSSE payload type of an in-toto statement.
	PayloadType = "application/vnd.in-toto+json"
	// StatementType and PredicateType identify a model-signing statement.
	StatementType = "https://in-toto.io/Statement/v1"
	PredicateType = "https://model_signing/signature/v1.0"
	methodFiles   = "files"
	hashSHA256    = "sha256"
)

// SingleFile is the resource name model_signing gives the only file of a
// signed single-file model (a path relative to the file itself).
const SingleFile = "."

// Digests maps a slash-separated relative path to its SHA-256.
type Digests map[string][32]byte

// Statement is the content of a verified model signature.
type Statement struct {
	Name   string  // subject name: the model directory or file name at signing
	Digest string  // lower-case hex SHA-256 of the signed payload bytes (the statement digest)
	Method string  // serialization method; always "files"
	Files  Digests // every signed file; a single-file model has one entry, [SingleFile]
}

// CheckName returns a [*NameError] unless the statement signs the model name.
func (s *Statement) CheckName(name string) error {
	if s.Name != name {
		return &NameError{Expected: name, Signed: s.Name}
	}
	return nil
}

type bundleJSON struct {
	MediaType    string        `json:"mediaType"`
	DSSEEnvelope *envelopeJSON `json:"dsseEnvelope"`
}

type envelopeJSON struct {
	Payload     *string `json:"payload"`
	PayloadType string  `json:"payloadType"`
	Signatures  []struct {
		Sig   string `json:"sig"`
		KeyID string `json:"keyid"`
	} `json:"signatures"`
}

type statementJSON struct {
	Type    string `json:"_type"`
	Subject []struct {
		Name   string            `json:"name"`
		Digest map[string]string `json:"digest"`
	} `json:"subject"`
	PredicateType string `json:"predicateType"`
	Predicate     *struct {
		Serialization *struct {
			Method   string `json:"method"`
			HashType string `json:"hash_type"`
		} `json:"serialization"`
		Resources []struct {
			Name      string `json:"name"`
			Algorithm string `json:"algorithm"`
			Digest    string `json:"digest"`
		} `json:"resources"`
	} `json:"predicate"`
}

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: bundle: "+format, append([]any{ErrMalformed}, args...)...)
}

// VerifyBundle verifies an OpenSSF model-signing signature (doc.go) with key
// and returns the signed statement. Errors: one wrapping [ErrMalformed] for a
// bundle that breaks the format, naming the rule; [*SignatureError] for a
// signature that key does not verify. The statement is parsed only after
// its signature verifies.
func VerifyBundle(bundle []byte, key *PublicKey) (*Statement, error) {
	if len(bundle) > MaxBundleSize {
		return nil, malformed("%d bytes, more than %d", len(bundle), MaxBundleSize)
	}
	var b bundleJSON
	if err := strictUnmarshal(bundle, &b); err != nil {
		return nil, malformed("%v", err)
	}
	switch b.MediaType {
	case mediaTypeV01, mediaTypeV02, MediaTypeV03:
	default:
		return nil, malformed("media type %q is not a Sigstore bundle v0.1 to v0.3", printable(b.MediaType))
	}
	env := b.DSSEEnvelope
	if env == nil {
		return nil, malformed("no dsseEnvelope")
	}
	if env.PayloadType != PayloadType {
		return nil, malformed("payload type %q, want %q", printable(env.PayloadType), PayloadType)
	}
	if env.Payload == nil {
		return nil, malformed("no payload")
	}
	payload, err := decodeBase64(*env.Payload)
	if err != nil {
		return nil, malformed("payload: %v", err)
	}
	if len(env.Signatures) == 0 || len(env.Signatures) > maxSignatures {
		return nil, malformed("%d signatures, want 1 to %d", len(env.Signatures), maxSignatures)
	}
	msg := PAE(env.PayloadType, payload)
	ok := false
	for i, s := range env.Signatures {
		sig, err := decodeBase64(s.Sig)
		if err != nil {
			return nil, malformed("signature %d: %v", i, err)
		}
		if key.verify(msg, sig) {
			ok = true
		}
	}
	if !ok {
		return nil, &SignatureError{Fingerprint: key.Fingerprint()}
	}
	st, err := parseStatement(payload)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(payload)
	st.Digest = hex.EncodeToString(sum[:])
	return st, nil
}

// PAE is the DSSE v1 pre-authentication encoding of a payload: "DSSEv1",
// then the length in decimal and the bytes of the payload type and of the
// payload, all separated by single spaces.
func PAE(typ string, payload []byte) []byte {
	var b bytes.Buffer
	b.WriteString("DSSEv1 ")
	b.WriteString(strconv.Itoa(len(typ)))
	b.WriteByte(' ')
	b.WriteString(typ)
	b.WriteByte(' ')
	b.WriteString(strconv.Itoa(len(payload)))
	b.WriteByte(' ')
	b.Write(payload)
	return b.Bytes()
}

// decodeBase64 decodes standard base64 with padding, the encoding of
// protobuf JSON bytes fields; URL-safe input is accepted too, as DSSE allows.
func decodeBase64(s string) ([]byte, error) {
	if b, err := base64.StdEncoding.Strict().DecodeString(s); err == nil {
		return b, nil
	}
	b, err := base64.URLEncoding.Strict().DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("not base64")
	}
	return b, nil
}

// strictUnmarshal decodes one JSON value and rejects trailing data.
func strictUnmarshal(data []byte, v any) error {
	if !utf8.Valid(data) {
		return fmt.Errorf("not UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("not JSON: %v", err)
	}
	if dec.More() {
		return fmt.Errorf("data after the JSON value")
	}
	return nil
}

func parseStatement(payload []byte) (*Statement, error) {
	var s statementJSON
	if err := strictUnmarshal(payload, &s); err != nil {
		return nil, malformed("statement: %v", err)
	}
	if s.Type != StatementType {
		return nil, malformed("statement type %q, want %q", printable(s.Type), StatementType)
	}
	if s.PredicateType != PredicateType {
		return nil, malformed("predicate type %q, want %q", printable(s.PredicateType), PredicateType)
	}
	if len(s.Subject) != 1 {
		return nil, malformed("%d subjects, want 1", len(s.Subject))
	}
	subj := s.Subject[0]
	if err := checkSubjectName(subj.Name); err != nil {
		return nil, err
	}
	if len(subj.Digest) != 1 || subj.Digest[hashSHA256] == "" {
		return nil, malformed("subject digest must be exactly one sha256")
	}
	subjDigest, err := parseHex(subj.Digest[hashSHA256])
	if err != nil {
		return nil, malformed("subject digest: %v", err)
	}
	p := s.Predicate
	if p == nil || p.Serialization == nil {
		return nil, malformed("no predicate serialization")
	}
	if p.Serialization.Method != methodFiles {
		return nil, malformed("serialization method %q, want %q", printable(p.Serialization.Method), methodFiles)
	}
	if p.Serialization.HashType != hashSHA256 {
		return nil, malformed("hash type %q, want %q", printable(p.Serialization.HashType), hashSHA256)
	}
	if len(p.Resources) == 0 || len(p.Resources) > MaxResources {
		return nil, malformed("%d resources, want 1 to %d", len(p.Resources), MaxResources)
	}
	files := make(Digests, len(p.Resources))
	for _, r := range p.Resources {
		if err := checkPath(r.Name); err != nil {
			return nil, malformed("resource: %v", err)
		}
		if r.Algorithm != hashSHA256 {
			return nil, malformed("resource %q: algorithm %q, want %q", r.Name, printable(r.Algorithm), hashSHA256)
		}
		d, err := parseHex(r.Digest)
		if err != nil {
			return nil, malformed("resource %q: %v", r.Name, err)
		}
		if _, dup := files[r.Name]; dup {
			return nil, malformed("resource %q listed twice", r.Name)
		}
		files[r.Name] = d
	}
	if _, ok := files[SingleFile]; ok && len(files) != 1 {
		return nil, malformed("resource %q beside other resources", SingleFile)
	}
	if got := SubjectDigest(files); got != subjDigest {
		return nil, malformed("subject digest %x does not match the resources (%x)", subjDigest, got)
	}
	return &Statement{Name: subj.Name, Method: methodFiles, Files: files}, nil
}

// SubjectDigest is model_signing's digest of a "files" manifest: SHA-256 of
// the concatenated 32-byte file digests in byte order of their names.
func SubjectDigest(files Digests) [32]byte {
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	h := sha256.New()
	for _, n := range names {
		d := files[n]
		h.Write(d[:])
	}
	var out [32]byte
	h.Sum(out[:0])
	return out
}

// parseHex parses a lower- or upper-case 64-digit hex SHA-256.
func parseHex(s string) ([32]byte, error) {
	var d [32]byte
	if len(s) != 64 {
		return d, fmt.Errorf("digest is %d characters, want 64 hex", len(s))
	}
	if _, err := hex.Decode(d[:], []byte(s)); err != nil {
		return d, fmt.Errorf("digest is not hex")
	}
	return d, nil
}

// ParseSHA256 parses a 64-digit hex SHA-256 (for --expect-sha256). Errors
// wrap [ErrMalformed].
func ParseSHA256(s string) ([32]byte, error) {
	d, err := parseHex(s)
	if err != nil {
		return d, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	return d, nil
}

func checkSubjectName(n string) error {
	if n == "" || len(n) > maxNameLen || !utf8.ValidString(n) || hasControl(n) {
		return malformed("subject name %q is empty, too long, or has control characters", printable(n))
	}
	return nil
}

// checkPath enforces the resource name rules of doc.go: a clean, relative,
// slash-separated path of UTF-8 without control characters or backslashes,
// or [SingleFile].
func checkPath(n string) error {
	if n == SingleFile {
		return nil
	}
	bad := func(why string) error { return fmt.Errorf("name %q %s", printable(n), why) }
	switch {
	case n == "":
		return bad("is empty")
	case len(n) > maxNameLen:
		return bad("is too long")
	case !utf8.ValidString(n):
		return bad("is not UTF-8")
	case hasControl(n):
		return bad("has control characters")
	case strings.Contains(n, `\`):
		return bad("has a backslash")
	case strings.HasPrefix(n, "/"):
		return bad("is absolute")
	}
	for _, el := range strings.Split(n, "/") {
		switch el {
		case "":
			return bad("has an empty element")
		case ".", "..":
			return bad("has a . or .. element")
		}
	}
	return nil
}

func hasControl(s string) bool {
	for _, r := range s {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return true
		}
	}
	return false
}
