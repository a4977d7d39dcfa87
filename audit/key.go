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
	logID string
	key   epochKey
}

// LogID returns the ID of the log the key belongs to.
func (k *VerificationKey) LogID() string { return k.logID }

// String names the key without revealing it.
func (k *VerificationKey) String() string { return "audit verification key for log " + k.logID }

// GoString names the key without revealing it.
func (k *VerificationKey) GoString() string {
	return "audit.VerificationKey{logID: " + k.logID + ", key: REDACTED}"
}

const keyFileHeader = "vramseal-audit-verification-key v1 "

// Encode returns the key file contents:
// "vramseal-audit-verification-key v1 <log id> <64 hex>\n".
func (k *VerificationKey) Encode() []byte {
	b := []byte(keyFileHeader + k.logID + " ")
	b = appendHex(b, k.key[:])
	return append(b, '\n')
}

// ParseVerificationKey parses what [VerificationKey.Encode] wrote.
func ParseVerificationKey(b []byte) (*VerificationKey, error) {
	b = bytes.TrimSuffix(b, []byte{'\n'})
	if !bytes.HasPrefix(b, []byte(keyFileHeader)) {
		return nil, fmt.Errorf("%w: missing header %q", errKeyFile, keyFileHeader[:len(keyFileHeader)-1])
	}
	b = b[len(keyFileHeader):]
	if len(b) != 16+1+64 || b[16] != ' ' || !isLowerHex(b[:16]) {
		return nil, fmt.Errorf("%w: want <16 hex log id> <64 hex key>", errKeyFile)
	}
	k := &VerificationKey{logID: string(b[:16])}
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
	b := []byte(`{"v":1,"log_id":"` + s.logID + `","epoch":`)
	b = fmt.Appendf(b, "%d", s.epoch)
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
	if sj.V != formatVersion {
		return nil, fmt.Errorf("%w: version %d", errState, sj.V)
	}
	if len(sj.LogID) != 16 || !isLowerHex([]byte(sj.LogID)) {
		return nil, fmt.Errorf("%w: bad log id", errState)
	}
	t, err := time.Parse(timeLayout, sj.Started)
	if err != nil {
		return nil, fmt.Errorf("%w: bad epoch_started", errState)
	}
	s := &state{logID: sj.LogID, epoch: sj.Epoch, started: t}
	d := dec{b: []byte(sj.Key)}
	if len(sj.Key) != 64 || !d.hex32((*[32]byte)(&s.key)) {
		return nil, fmt.Errorf("%w: bad key", errState)
	}
	return s, nil
}

// strictJSON decodes one JSON value with no unknown fields and nothing after
// it.
func strictJSON(b []byte, v any) error {
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
