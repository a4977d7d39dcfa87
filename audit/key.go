package audit

import (
	"bytes"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"time"
)

// Labels of the key schedule (HKDF-SHA256, RFC 5869, empty salt). Each
// derivation has its own versioned label, so no key is used for two
// purposes.
const (
	labelEvolve = "vramseal audit key v1 evolve"
	labelMAC    = "vramseal audit mac v1"
	labelAnchor = "vramseal audit epoch anchor v2"
)

// epochKey is the secret k_e of one epoch.
type epochKey [32]byte

func hkdf32(k *epochKey, label string) [32]byte {
	b, err := hkdf.Key(sha256.New, k[:], nil, label, 32)
	if err != nil {
		panic("audit: hkdf: " + err.Error()) // only for impossible lengths
	}
	var out [32]byte
	copy(out[:], b)
	clear(b)
	return out
}

// next returns k_{e+1} = HKDF-SHA256(k_e, label "vramseal audit key v1 evolve").
func (k *epochKey) next() epochKey { return epochKey(hkdf32(k, labelEvolve)) }

// macKey returns the MAC key of the epoch:
// HKDF-SHA256(k_e, label "vramseal audit mac v1").
func (k *epochKey) macKey() [32]byte { return hkdf32(k, labelMAC) }

// anchorKey returns the key that MACs the anchor of the next epoch:
// HKDF-SHA256(k_e, label "vramseal audit epoch anchor v2").
func (k *epochKey) anchorKey() [32]byte { return hkdf32(k, labelAnchor) }

// keyAt derives k_epoch from k_from (epoch from <= epoch).
func keyAt(k epochKey, from, epoch uint64) epochKey {
	for e := from; e < epoch; e++ {
		n := k.next()
		clear(k[:])
		k = n
	}
	return k
}

// VerificationKey is a log's initial key k_0: whoever holds it can check
// (and could forge) every record, so it belongs off the machine. [Init]
// returns it; [VerificationKey.Encode] and [ParseVerificationKey] move it to
// and from a file. Its String and GoString never show the key.
type VerificationKey struct {
	logID   string
	version int // format version of the log
	key     epochKey
}

// LogID returns the ID of the log the key belongs to.
func (k *VerificationKey) LogID() string { return k.logID }

// String names the key without revealing it.
func (k *VerificationKey) String() string { return "audit verification key for log " + k.logID }

// GoString names the key without revealing it.
func (k *VerificationKey) GoString() string {
	return "audit.VerificationKey{logID: " + k.logID + ", key: REDACTED}"
}

// keyFileHeader is the key file's first word; a space, "v" and the log's
// format version follow.
const keyFileHeader = "vramseal-audit-verification-key v"

// Version returns the format version of the key's log: a key of a version
// 2 log does not verify a log in version 1 (that would be a downgrade).
func (k *VerificationKey) Version() int { return k.version }

// Encode returns the key file contents:
// "vramseal-audit-verification-key v<version> <log id> <64 hex>\n".
func (k *VerificationKey) Encode() []byte {
	b := fmt.Appendf(nil, "%s%d %s ", keyFileHeader, k.version, k.logID)
	b = appendHex(b, k.key[:])
	return append(b, '\n')
}

// ParseVerificationKey parses what [VerificationKey.Encode] wrote. The
// final newline may be missing (a key pasted or copied by hand often loses
// it); nothing else may differ.
func ParseVerificationKey(b []byte) (*VerificationKey, error) {
	b = bytes.TrimSuffix(b, []byte{'\n'})
	if !bytes.HasPrefix(b, []byte(keyFileHeader)) || len(b) < len(keyFileHeader)+2 || b[len(keyFileHeader)+1] != ' ' {
		return nil, fmt.Errorf("%w: missing header %q", errKeyFile, keyFileHeader+"N")
	}
	ver := int(b[len(keyFileHeader)] - '0')
	if ver != formatV1 && ver != formatVersion {
		return nil, fmt.Errorf("%w: unsupported version (want %d or %d)", errKeyFile, formatV1, formatVersion)
	}
	b = b[len(keyFileHeader)+2:]
	if len(b) != 16+1+64 || b[16] != ' ' || !isLowerHex(b[:16]) {
		return nil, fmt.Errorf("%w: want <16 hex log id> <64 hex key>", errKeyFile)
	}
	k := &VerificationKey{logID: string(b[:16]), version: ver}
	d := dec{b: b[17:]}
	if !d.hex32((*[32]byte)(&k.key)) {
		return nil, fmt.Errorf("%w: key is not 64 lowercase hex digits", errKeyFile)
	}
	return k, nil
}

// state is the sealing state file: the current epoch and its key. It is
// replaced atomically at every epoch; the previous key is gone from disk
// once the rename is durable.
type state struct {
	ver     int // format version of the log
	logID   string
	epoch   uint64
	started time.Time // when the epoch began
	key     epochKey
}

const stateName = "state.json"

type stateJSON struct {
	V       int    `json:"v"`
	LogID   string `json:"log_id"`
	Epoch   uint64 `json:"epoch"`
	Started string `json:"epoch_started"`
	Key     string `json:"key"`
}

func (s *state) encode() []byte {
	b := fmt.Appendf(nil, `{"v":%d,"log_id":"%s","epoch":%d`, s.ver, s.logID, s.epoch)
	b = append(b, `,"epoch_started":"`...)
	b = s.started.UTC().AppendFormat(b, timeLayout)
	b = append(b, `","key":"`...)
	b = appendHex(b, s.key[:])
	return append(b, "\"}\n"...)
}

func parseState(b []byte) (*state, error) {
	var sj stateJSON
	if err := strictJSON(b, &sj); err != nil {
		return nil, fmt.Errorf("%w: %v", errState, err)
	}
	if err := requireMembers(b, "v", "log_id", "epoch", "epoch_started", "key"); err != nil {
		return nil, fmt.Errorf("%w: %v", errState, err)
	}
	if sj.V != formatV1 && sj.V != formatVersion || sj.Epoch > maxInt {
		return nil, fmt.Errorf("%w: version %d", errState, sj.V)
	}
	if len(sj.LogID) != 16 || !isLowerHex([]byte(sj.LogID)) {
		return nil, fmt.Errorf("%w: bad log id", errState)
	}
	t, err := time.Parse(timeLayout, sj.Started)
	if err != nil {
		return nil, fmt.Errorf("%w: bad epoch_started", errState)
	}
	s := &state{ver: sj.V, logID: sj.LogID, epoch: sj.Epoch, started: t}
	d := dec{b: []byte(sj.Key)}
	if len(sj.Key) != 64 || !d.hex32((*[32]byte)(&s.key)) {
		return nil, fmt.Errorf("%w: bad key", errState)
	}
	return s, nil
}

// strictJSON decodes one JSON value with no unknown fields, no member
// named twice in any object, and nothing after it.
func strictJSON(b []byte, v any) error {
	if err := noDuplicates(b); err != nil {
		return err
	}
	dj := json.NewDecoder(bytes.NewReader(b))
	dj.DisallowUnknownFields()
	if err := dj.Decode(v); err != nil {
		return err
	}
	if _, err := dj.Token(); err != io.EOF {
		return fmt.Errorf("trailing data")
	}
	return nil
}

// noDuplicates refuses JSON in which an object names a member twice:
// encoding/json would keep the last one silently.
func noDuplicates(b []byte) error {
	dj := json.NewDecoder(bytes.NewReader(b))
	type obj struct {
		seen  map[string]bool
		isKey bool // the next token is a member name
	}
	var stack []*obj
	for {
		tok, err := dj.Token()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		var top *obj
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		if top != nil && top.isKey {
			if d, ok := tok.(json.Delim); ok && d == '}' {
				stack = stack[:len(stack)-1]
				if len(stack) > 0 && stack[len(stack)-1] != nil {
					stack[len(stack)-1].isKey = true
				}
				continue
			}
			name := tok.(string)
			if top.seen[name] {
				return fmt.Errorf("member %q named twice", truncateForError(name))
			}
			top.seen[name] = true
			top.isKey = false
			continue
		}
		switch tok {
		case json.Delim('{'):
			stack = append(stack, &obj{seen: map[string]bool{}, isKey: true})
			continue
		case json.Delim('['):
			stack = append(stack, nil)
			continue
		case json.Delim(']'):
			stack = stack[:len(stack)-1]
		}
		// A value ended: in an object, a member name comes next.
		if len(stack) > 0 && stack[len(stack)-1] != nil {
			stack[len(stack)-1].isKey = true
		}
	}
}

// requireMembers refuses a JSON object that lacks one of names.
func requireMembers(b []byte, names ...string) error {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		return err
	}
	for _, n := range names {
		if _, ok := m[n]; !ok {
			return fmt.Errorf("member %q is missing", n)
		}
	}
	return nil
}
