package audit

import (
	"bytes"
	"encoding/base64"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/tlog"
)

// goldenLines returns the record lines of the golden segment, for seeds.
func goldenLines(f *testing.F) [][]byte {
	ents, _ := filepath.Glob(filepath.Join("testdata", "v[12]", "*.ndjson"))
	var out [][]byte
	for _, e := range ents {
		b, err := os.ReadFile(e)
		if err != nil {
			f.Fatal(err)
		}
		out = append(out, splitLines(b)...)
	}
	return out
}

func FuzzParseRecord(f *testing.F) {
	for _, l := range goldenLines(f) {
		f.Add(l)
	}
	f.Add([]byte(`{"v":1}`))
	f.Add([]byte(`{"v":2,"seq":1}`))
	f.Fuzz(func(t *testing.T, line []byte) {
		line = bytes.TrimSuffix(line, []byte("\n"))
		var v recordView
		if err := parseRecord(line, &v); err != nil {
			return
		}
		// Canonical: encoding the decoded record gives the same bytes.
		var r Record
		v.record(&r)
		e := Event{Type: r.Type, Severity: r.Severity, CorrelationID: r.CorrelationID, Fields: r.Fields}
		body := appendBody(nil, &e, appendFixed(nil, r.Service, r.Node, r.Worker))
		var k [32]byte
		s := sealer{ver: v.ver, logID: string(v.idLogID), epoch: r.Epoch, mac: newMAC(&k)}
		got := s.appendLine(nil, r.Seq, r.Time, body, &r.Prev)
		if want := v.macInput(); !bytes.HasPrefix(got, want) || got[len(want)] != ',' {
			t.Fatalf("re-encoding differs:\n got %q\nwant %q", got, want)
		}
	})
}

func FuzzParseManifest(f *testing.F) {
	if b, err := os.ReadFile(filepath.Join("testdata", "v1", manifestName)); err == nil {
		f.Add(b)
	}
	m := &manifest{Ver: formatVersion, LogID: "0123456789abcdef", Segments: []segmentInfo{{
		Name: segmentName(time.Date(2026, 1, 2, 0, 0, 0, 0, time.UTC), 1), FirstSeq: 1, LastSeq: 0,
	}}}
	f.Add(m.encode())
	f.Add([]byte(`{"v":1}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := parseManifest(b)
		if err != nil {
			return
		}
		m2, err := parseManifest(m.encode())
		if err != nil {
			t.Fatalf("re-parse of an encoded manifest: %v", err)
		}
		if !bytes.Equal(m.encode(), m2.encode()) {
			t.Fatal("manifest encoding is not stable")
		}
	})
}

func FuzzParseVerificationKey(f *testing.F) {
	f.Add([]byte(keyFileHeader + "0123456789abcdef " + "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		k, err := ParseVerificationKey(b)
		if err != nil {
			return
		}
		if k2, err := ParseVerificationKey(k.Encode()); err != nil || k2.key != k.key || k2.logID != k.logID {
			t.Fatalf("round trip: %v", err)
		}
	})
}

// fuzzKey is a fixed checkpoint key for seeds: 32 bytes of seed for
// Ed25519, so the seeds are the same in every run.
func fuzzKey(f *testing.F) *signingKey {
	k, _, err := newSigningKey(bytes.NewReader(make([]byte, 32)), "0123456789abcdef")
	if err != nil {
		f.Fatal(err)
	}
	return k
}

// proofSeeds returns a real inclusion and consistency proof, for seeds.
func proofSeeds(f *testing.F) (k *signingKey, inclusion, consistency []byte) {
	k = fuzzKey(f)
	var fr frontier
	var stored []tlog.Hash
	var notes [][]byte
	for i := range 5 {
		stored = append(stored, fr.add(leafHash([]byte{byte(i)}))...)
		msg, err := k.signCheckpoint(uint64(fr.n), fr.root())
		if err != nil {
			f.Fatal(err)
		}
		notes = append(notes, msg)
	}
	hr := tlog.HashReaderFunc(func(idx []int64) ([]tlog.Hash, error) {
		out := make([]tlog.Hash, len(idx))
		for i, x := range idx {
			out[i] = stored[x]
		}
		return out, nil
	})
	rp, err := tlog.ProveRecord(5, 2, hr)
	if err != nil {
		f.Fatal(err)
	}
	tp, err := tlog.ProveTree(5, 2, hr)
	if err != nil {
		f.Fatal(err)
	}
	inclusion = (&InclusionProof{Index: 2, Record: []byte{2}, Hashes: rp, Checkpoint: notes[4]}).Encode()
	consistency = (&ConsistencyProof{OldSize: 2, NewSize: 5, Hashes: tp, Old: notes[1], New: notes[4]}).Encode()
	return k, inclusion, consistency
}

func FuzzParseCheckpoint(f *testing.F) {
	k, inc, _ := proofSeeds(f)
	p, err := ParseInclusionProof(inc)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(p.Checkpoint)
	f.Add([]byte("vramseal/audit/0123456789abcdef\n1\nAAAA\n\n— x y\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		ck, err := ParseCheckpoint(b, k.pub)
		if err != nil {
			return
		}
		if ck.Origin != origin(k.pub.LogID()) || !bytes.HasPrefix(b, []byte(checkpointText(k.pub.LogID(), ck.Size, ck.Root)+"\n")) {
			t.Fatalf("ParseCheckpoint(%q) = %+v: not its canonical text", b, ck)
		}
		if msg, rest, err := splitNote(b); err != nil || len(rest) != 0 || !bytes.Equal(msg, b) {
			t.Fatalf("splitNote of a valid checkpoint = %q, %q, %v", msg, rest, err)
		}
	})
}

func FuzzParseCheckpointText(f *testing.F) {
	f.Add("vramseal/audit/0123456789abcdef\n20\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n")
	f.Add("o\n0\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\nextension\n")
	f.Fuzz(func(t *testing.T, text string) {
		ck, err := parseCheckpointText(text)
		if err != nil {
			return
		}
		if got := ck.Origin + "\n" + strconv.FormatUint(ck.Size, 10) + "\n" + base64.StdEncoding.EncodeToString(ck.Root[:]) + "\n"; got != text {
			t.Fatalf("parseCheckpointText(%q) re-encodes to %q", text, got)
		}
	})
}

func FuzzParseProof(f *testing.F) {
	_, inc, cons := proofSeeds(f)
	f.Add(inc)
	f.Add(cons)
	f.Add([]byte(inclusionHeader + "\nindex 0\n\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if p, err := ParseInclusionProof(b); err == nil {
			if got := p.Encode(); !bytes.Equal(got, b) {
				t.Fatalf("ParseInclusionProof(%q) re-encodes to %q", b, got)
			}
		}
		if p, err := ParseConsistencyProof(b); err == nil {
			if got := p.Encode(); !bytes.Equal(got, b) {
				t.Fatalf("ParseConsistencyProof(%q) re-encodes to %q", b, got)
			}
		}
	})
}

func FuzzParsePublicKey(f *testing.F) {
	f.Add([]byte(fuzzKey(f).pub.Encode()))
	f.Add([]byte("vramseal/audit/0123456789abcdef+00000000+AQ==\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		k, err := ParsePublicKey(b)
		if err != nil {
			return
		}
		if k2, err := ParsePublicKey(k.Encode()); err != nil || k2.String() != k.String() {
			t.Fatalf("round trip of %q: %v", b, err)
		}
	})
}

func FuzzParseAnchor(f *testing.F) {
	for _, line := range splitLines(must(os.ReadFile(filepath.Join(goldenV2Dir, epochsName)))) {
		f.Add(bytes.TrimSuffix(line, []byte("\n")))
	}
	f.Add([]byte(anchorHeader))
	f.Fuzz(func(t *testing.T, b []byte) {
		a, err := parseAnchor(b, "d90fed2d2fa1324d")
		if err != nil {
			return
		}
		if got := a.line("d90fed2d2fa1324d"); !bytes.Equal(got, append(bytes.Clone(b), '\n')) {
			t.Errorf("re-encoding differs:\n got %q\nwant %q", got, b)
		}
	})
}
