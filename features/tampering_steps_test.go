package features

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cucumber/godog"

	"github.com/vramseal/vramseal/seal"
)

func (w *world) registerTampering(sc *godog.ScenarioContext) {
	sc.Step(`^I take the seal of shard "([^"]*)"$`, w.takeSeal)
	sc.Step(`^someone changes the (.+) of the seal$`, w.changeSealField)
	sc.Step(`^an attacker re-signs the seal with a key derived from their own secret$`, w.resignWithOwnKey)
	sc.Step(`^the seal travels as JSON(?: and its (.+) is edited in transit)?$`, w.sealViaJSON)
	sc.Step(`^the worker's seal key (accepts|rejects) the seal(?: as tampered)?$`, w.keyJudgesSeal)
	sc.Step(`^every single-byte change to the seal's binary form is rejected$`, w.binaryTamperMatrix)
}

func (w *world) takeSeal(id string) error {
	m, err := w.manager()
	if err != nil {
		return err
	}
	info, err := m.Shard(id)
	if err != nil {
		return err
	}
	w.seal, w.sealValid = info.Seal, true
	return nil
}

// changeSealField alters one field of the seal under examination the way a
// forger would, keeping the seal well formed so that only the signature can
// catch the change.
func (w *world) changeSealField(field string) error {
	s := &w.seal
	switch field {
	case "shard ID":
		s.ShardID += "-x"
	case "model reference":
		s.ModelRef = "attacker/backdoored-model@main"
	case "shard position":
		s.ShardIndex, s.ShardCount = 1, 2
	case "GPU index":
		s.DeviceIndex++
	case "GPU UUID":
		s.DeviceUUID = "GPU-00000000-0000-0000-0000-000000000000"
	case "size":
		s.Size--
	case "chunk size":
		s.ChunkSize *= 2
	case "flat digest":
		s.Digest[0] ^= 0x01
	case "tree root":
		s.Root[31] ^= 0x80
	case "sealed-at time":
		s.SealedAt = s.SealedAt.Add(time.Nanosecond)
	case "key ID":
		s.KeyID = "k1:0000000000000000"
	case "worker ID":
		s.WorkerID = "worker-attacker"
	case "signature":
		s.Signature[7] ^= 0x04
	default:
		return fmt.Errorf("unknown seal field %q", field)
	}
	return nil
}

func (w *world) resignWithOwnKey() error {
	k, err := seal.DeriveKey([]byte("the-attacker-has-a-secret-of-their-own-too"))
	if err != nil {
		return err
	}
	s := w.seal
	s.ModelRef = "attacker/backdoored-model@main"
	if err := k.Sign(&s); err != nil {
		return err
	}
	// The attacker also claims the worker's key ID, which cannot help.
	s.KeyID = w.seal.KeyID
	w.seal = s
	return nil
}

// sealViaJSON encodes the seal as JSON and decodes it again, optionally
// after replacing the first hex digit of one hash member in the text.
func (w *world) sealViaJSON(field string) error {
	b, err := w.seal.MarshalJSON()
	if err != nil {
		return err
	}
	if field != "" {
		member := map[string]string{"digest": `"digest":"`, "tree root": `"tree_root":"`, "signature": `"signature":"`}[field]
		if member == "" {
			return fmt.Errorf("unknown JSON member %q", field)
		}
		i := bytes.Index(b, []byte(member))
		if i < 0 {
			return fmt.Errorf("seal JSON has no %s member: %s", member, b)
		}
		i += len(member)
		if b[i] == '0' {
			b[i] = '1'
		} else {
			b[i] = '0'
		}
	}
	s, err := seal.DecodeJSON(b)
	if err != nil {
		return fmt.Errorf("decode the seal's JSON: %w", err)
	}
	w.seal = *s
	return nil
}

func (w *world) keyJudgesSeal(verdict string) error {
	if !w.sealValid {
		return errors.New("no seal was taken in this scenario")
	}
	err := w.m.Key().Verify(&w.seal)
	switch verdict {
	case "accepts":
		if err != nil {
			return fmt.Errorf("Verify = %w, want the seal accepted", err)
		}
	case "rejects":
		if !errors.Is(err, seal.ErrSignatureInvalid) {
			return fmt.Errorf("Verify = %v, want ErrSignatureInvalid", err)
		}
	}
	return nil
}

// binaryTamperMatrix flips every bit pattern 0x01 and 0x80 of every byte of
// the seal's binary form: each change must fail to decode or fail to verify.
func (w *world) binaryTamperMatrix(ctx context.Context) error {
	b, err := w.seal.MarshalBinary()
	if err != nil {
		return err
	}
	key := w.m.Key()
	for i := range b {
		for _, mask := range []byte{0x01, 0x80} {
			c := bytes.Clone(b)
			c[i] ^= mask
			var s seal.Seal
			if err := s.UnmarshalBinary(c); err != nil {
				continue
			}
			if err := key.Verify(&s); !errors.Is(err, seal.ErrSignatureInvalid) {
				return fmt.Errorf("byte %d ^ %#02x: the altered seal decodes and verifies (err %v)", i, mask, err)
			}
		}
	}
	var s seal.Seal
	if err := s.UnmarshalBinary(b); err != nil {
		return fmt.Errorf("the unaltered binary seal does not decode: %w", err)
	}
	if err := key.Verify(&s); err != nil {
		return fmt.Errorf("the unaltered binary seal does not verify: %w", err)
	}
	return ctx.Err()
}
