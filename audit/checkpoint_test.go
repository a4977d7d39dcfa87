package audit

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"math/bits"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/tlog"
)

// signedLog writes n records to a log that rotates every few records,
// closes it, and returns its directory, keys and checkpoint sizes.
func signedLog(t *testing.T, n int) (dir string, vk *VerificationKey, pk *PublicKey) {
	t.Helper()
	dir, vk, l := newLog(t, Options{SegmentMaxBytes: 1500})
	for i := range n {
		mustAppend(t, l, testEvent(i))
		if i%3 == 2 {
			if err := l.Flush(context.Background()); err != nil {
				t.Fatal(err)
			}
		}
	}
	pk = l.PublicKey()
	mustClose(t, l)
	return dir, vk, pk
}

// checkpointSizes lists the tree sizes of every signed checkpoint of dir.
func checkpointSizes(t *testing.T, dir string, pk *PublicKey) []uint64 {
	t.Helper()
	var sizes []uint64
	for _, s := range loadTestManifest(t, dir).Segments {
		cf, _, err := openCheckpoints(OSFS{}, dir, s.Name)
		if err != nil {
			t.Fatal(err)
		}
		for {
			ck, err := cf.next(pk)
			if err != nil {
				break
			}
			sizes = append(sizes, ck.Size)
		}
	}
	return sizes
}

func verifyPublic(dir string, pk *PublicKey) (*VerifyReport, error) {
	return Verify(context.Background(), dir, VerifyOptions{PublicKey: pk})
}

func wantCheckpointProblem(t *testing.T, dir string, pk *PublicKey, p Problem, detail string) {
	t.Helper()
	_, err := verifyPublic(dir, pk)
	var ve *VerifyError
	if !errors.As(err, &ve) || ve.Problem != p || !strings.Contains(err.Error(), detail) {
		t.Fatalf("Verify(public key) = %v, want %s naming %q", err, p, detail)
	}
}

func TestCheckpointsAndProofs(t *testing.T) {
	dir, vk, pk := signedLog(t, 20)
	if got, err := ReadPublicKey(dir, nil); err != nil || got.String() != pk.String() {
		t.Fatalf("ReadPublicKey = %v, %v, want %s", got, err, pk)
	}
	rep, err := verifyPublic(dir, pk)
	if err != nil {
		t.Fatalf("Verify(public key) = %v", err)
	}
	if !rep.CheckpointsChecked || rep.MACsChecked || rep.SignedSize != 20 || rep.Unsigned != 0 || rep.Checkpoints < rep.Segments-1 {
		t.Errorf("Verify(public key) = %+v, want every segment signed through seq 20, MACs not checked", rep)
	}
	if _, err := Verify(context.Background(), dir, VerifyOptions{Key: vk, PublicKey: pk}); err != nil {
		t.Errorf("Verify(both keys) = %v", err)
	}
	ck, err := LatestCheckpoint(dir, ReadOptions{})
	if err != nil || ck.Size != 20 || ck.Origin != origin(vk.LogID()) {
		t.Fatalf("LatestCheckpoint = %+v, %v, want size 20", ck, err)
	}
	if !bytes.HasPrefix(ck.Note, []byte(checkpointText(vk.LogID(), ck.Size, ck.Root)+"\n"+sigPrefix+origin(vk.LogID())+" ")) {
		t.Errorf("checkpoint note = %q, want the C2SP text and one signature", ck.Note)
	}
	ctx := context.Background()
	sizes := checkpointSizes(t, dir, pk)
	for seq := uint64(1); seq <= 20; seq++ {
		for _, size := range []uint64{0, sizes[len(sizes)/2]} {
			if size != 0 && seq > size {
				continue
			}
			p, err := ProveInclusion(ctx, dir, seq, size, ReadOptions{})
			if err != nil {
				t.Fatalf("ProveInclusion(%d, %d) = %v", seq, size, err)
			}
			p2, err := ParseInclusionProof(p.Encode())
			if err != nil {
				t.Fatalf("ParseInclusionProof(Encode) = %v", err)
			}
			c, r, err := CheckInclusion(p2, pk, nil)
			if err != nil || r.Seq != seq || (size != 0 && c.Size != size) {
				t.Fatalf("CheckInclusion(seq %d, size %d) = %v, %v", seq, size, r, err)
			}
		}
	}
	for i, old := range sizes {
		for _, cur := range sizes[i:] {
			p, err := ProveConsistency(ctx, dir, old, cur, ReadOptions{})
			if err != nil {
				t.Fatalf("ProveConsistency(%d, %d) = %v", old, cur, err)
			}
			p2, err := ParseConsistencyProof(p.Encode())
			if err != nil || !IsConsistencyProof(p.Encode()) {
				t.Fatalf("ParseConsistencyProof(Encode) = %v", err)
			}
			if o, c, err := CheckConsistency(p2, pk); err != nil || o.Size != old || c.Size != cur {
				t.Fatalf("CheckConsistency(%d, %d) = %v", old, cur, err)
			}
		}
	}
	if _, err := ProveInclusion(ctx, dir, 21, 0, ReadOptions{}); err == nil {
		t.Error("ProveInclusion(seq beyond the checkpoint) = nil error")
	}
	if _, err := ProveConsistency(ctx, dir, 20, 0, ReadOptions{}); err != nil {
		t.Errorf("ProveConsistency(latest, latest) = %v", err)
	}
	if _, err := ProveInclusion(ctx, dir, 1, sizes[0]+1, ReadOptions{}); !errors.Is(err, ErrNoCheckpoint) {
		t.Errorf("ProveInclusion(size without a checkpoint) = %v, want ErrNoCheckpoint", err)
	}
}

// TestProofsAfterRestart reopens the log: proofs against checkpoints of
// the earlier run still verify, and the new checkpoints are consistent.
func TestProofsAfterRestart(t *testing.T) {
	dir, _, pk := signedLog(t, 7)
	l, err := Open(dir, Options{SegmentMaxBytes: 1500})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		mustAppend(t, l, testEvent(i))
	}
	mustClose(t, l)
	if _, err := verifyPublic(dir, pk); err != nil {
		t.Fatalf("Verify(public key) after restart = %v", err)
	}
	p, err := ProveConsistency(context.Background(), dir, 7, 0, ReadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, cur, err := CheckConsistency(p, pk); err != nil || cur.Size != 12 {
		t.Errorf("CheckConsistency(7, latest) = %v, %v; want latest 12", cur, err)
	}
}

// TestTreeFileRebuilt: a missing or damaged tree file is rebuilt from the
// records at Open, and proofs still verify.
func TestTreeFileRebuilt(t *testing.T) {
	for _, damage := range []struct {
		name string
		do   func(path string) error
	}{
		{"missing", os.Remove},
		{"zeroed", func(p string) error { return os.WriteFile(p, make([]byte, 32*40), 0o600) }},
		{"cut", func(p string) error { return os.Truncate(p, 32*3+7) }},
	} {
		t.Run(damage.name, func(t *testing.T) {
			dir, _, pk := signedLog(t, 12)
			if err := damage.do(filepath.Join(dir, treeName)); err != nil {
				t.Fatal(err)
			}
			l, err := Open(dir, Options{})
			if err != nil {
				t.Fatalf("Open = %v, want the tree rebuilt", err)
			}
			mustAppend(t, l, testEvent(99))
			mustClose(t, l)
			if _, err := verifyPublic(dir, pk); err != nil {
				t.Fatalf("Verify(public key) = %v", err)
			}
			p, err := ProveInclusion(context.Background(), dir, 5, 0, ReadOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if _, _, err := CheckInclusion(p, pk, nil); err != nil {
				t.Errorf("CheckInclusion = %v", err)
			}
		})
	}
}

// TestLogWithoutCheckpointKey opens a log made before checkpoints: Open
// creates the key, says so in a record, builds the tree and signs it.
func TestLogWithoutCheckpointKey(t *testing.T) {
	dir, vk, _ := signedLog(t, 8)
	old, _ := filepath.Glob(filepath.Join(dir, "*"+checkpointsSuffix))
	for _, name := range append(old, filepath.Join(dir, treeName), filepath.Join(dir, checkpointKeyName), filepath.Join(dir, checkpointPubName)) {
		if err := os.Remove(name); err != nil {
			t.Fatal(err)
		}
	}
	mustVerify(t, dir, vk)
	l, err := Open(dir, Options{})
	if err != nil {
		t.Fatalf("Open(log without checkpoint key) = %v", err)
	}
	pk := l.PublicKey()
	mustClose(t, l)
	var said []string
	Query(context.Background(), dir, Filter{Types: []string{"audit_checkpoint_key"}}, ReadOptions{}, func(r *Record) error {
		f, _ := r.Field("public_key")
		said = append(said, f.StringValue())
		return nil
	})
	if len(said) != 1 || said[0] != pk.String() {
		t.Errorf("audit_checkpoint_key records = %q, want one naming %s", said, pk)
	}
	rep, err := verifyPublic(dir, pk)
	if err != nil || rep.SignedSize != rep.LastSeq {
		t.Fatalf("Verify(public key) = %+v, %v", rep, err)
	}
	mustVerify(t, dir, vk)
}

func TestVerifyPublicKeyFailures(t *testing.T) {
	base, _, pk := signedLog(t, 12)
	m := loadTestManifest(t, base)
	first := m.Segments[0].Name
	ckFile := first + checkpointsSuffix
	t.Run("wrong key", func(t *testing.T) {
		other, _, err := newSigningKey(rand.Reader, pk.LogID())
		if err != nil {
			t.Fatal(err)
		}
		wantCheckpointProblem(t, base, other.pub, CheckpointMismatch, "no signature by key")
		otherLog, _, err := newSigningKey(rand.Reader, "0123456789abcdef")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := verifyPublic(base, otherLog.pub); !errors.Is(err, ErrWrongKey) {
			t.Errorf("Verify(key of another log) = %v, want ErrWrongKey", err)
		}
	})
	t.Run("forged checkpoint", func(t *testing.T) {
		dir := copyDir(t, base)
		path := filepath.Join(dir, ckFile)
		b := must(os.ReadFile(path))
		lines := strings.SplitN(string(b), "\n", 4)
		root := must(base64.StdEncoding.DecodeString(lines[2]))
		root[0] ^= 1
		lines[2] = base64.StdEncoding.EncodeToString(root)
		if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")), 0o600); err != nil {
			t.Fatal(err)
		}
		wantCheckpointProblem(t, dir, pk, CheckpointMismatch, "invalid (forged or altered)")
	})
	t.Run("tampered record", func(t *testing.T) {
		// Change a record's content and repair everything a verifier
		// without the MAC key checks: only the signed tree shows it.
		dir := copyDir(t, base)
		rewriteRecord(t, dir)
		if _, err := Verify(context.Background(), dir, VerifyOptions{}); err != nil {
			t.Fatalf("Verify(no keys) = %v; the tamper test needs a change only the tree shows", err)
		}
		wantCheckpointProblem(t, dir, pk, CheckpointMismatch, "the records hash to")
	})
	t.Run("signed records cut", func(t *testing.T) {
		dir := copyDir(t, base)
		m := loadTestManifest(t, dir)
		live := m.Segments[len(m.Segments)-1]
		if live.Records < 2 {
			t.Skipf("live segment has %d records", live.Records)
		}
		path := filepath.Join(dir, live.Name)
		lines := splitLines(must(os.ReadFile(path)))
		if err := os.WriteFile(path, bytes.Join(lines[:len(lines)-1], nil), 0o600); err != nil {
			t.Fatal(err)
		}
		// Make the manifest agree, as a careful attacker would.
		m.Segments[len(m.Segments)-1].Records--
		m.Segments[len(m.Segments)-1].LastSeq--
		m.Segments[len(m.Segments)-1].Size -= int64(len(lines[len(lines)-1]))
		var v recordView
		parseRecord(bytes.TrimSuffix(lines[len(lines)-2], []byte("\n")), &v)
		m.Segments[len(m.Segments)-1].LastMAC = v.mac
		m.Segments[len(m.Segments)-1].LastTime = must(time.Parse(timeLayout, string(v.time)))
		if err := os.WriteFile(filepath.Join(dir, manifestName), m.encode(), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := Verify(context.Background(), dir, VerifyOptions{}); err != nil {
			t.Fatalf("Verify(no keys) = %v; the test needs a cut only the checkpoints show", err)
		}
		wantCheckpointProblem(t, dir, pk, Truncated, "signed records are missing")
	})
	t.Run("checkpoint file deleted", func(t *testing.T) {
		dir := copyDir(t, base)
		if len(m.Segments) < 3 {
			t.Skip("need two closed segments")
		}
		if err := os.Remove(filepath.Join(dir, m.Segments[1].Name+checkpointsSuffix)); err != nil {
			t.Fatal(err)
		}
		wantCheckpointProblem(t, dir, pk, CheckpointMismatch, "no signed checkpoint of its last record")
	})
	t.Run("inconsistent checkpoint", func(t *testing.T) {
		// A validly signed checkpoint of another tree: only whoever holds
		// the signing key can make one, and it must still be found.
		dir := copyDir(t, base)
		k, err := parseSigningKey(must(os.ReadFile(filepath.Join(dir, checkpointKeyName))), pk.LogID())
		if err != nil {
			t.Fatal(err)
		}
		live := m.Segments[len(m.Segments)-1]
		msg, err := k.signCheckpoint(live.LastSeq, tlog.Hash{1})
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, live.Name+checkpointsSuffix)
		b := must(os.ReadFile(path))
		// Replace the last checkpoint (of the last record) by the forgery.
		cf := &checkpointFile{b: b}
		var off int
		for {
			ck, err := cf.next(pk)
			if err != nil {
				break
			}
			if ck.Size == live.LastSeq {
				break
			}
			off = cf.off
		}
		b = append(append([]byte(nil), b[:off]...), msg...)
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		wantCheckpointProblem(t, dir, pk, CheckpointMismatch, "a record in seq 11..12 changed), or this checkpoint is forged")

		old, err := LatestCheckpoint(base, ReadOptions{})
		if err != nil {
			t.Fatal(err)
		}
		p := &ConsistencyProof{OldSize: old.Size, NewSize: old.Size, Old: old.Note, New: msg}
		if _, _, err := CheckConsistency(p, pk); !errors.Is(err, ErrBadProof) {
			t.Errorf("CheckConsistency(two different trees of one size) = %v, want ErrBadProof", err)
		}
	})
}

func sha256Of(b []byte) [32]byte { return sha256.Sum256(b) }

func TestCheckProofFailures(t *testing.T) {
	dir, _, pk := signedLog(t, 9)
	ctx := context.Background()
	p, err := ProveInclusion(ctx, dir, 4, 0, ReadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	other, err := ProveInclusion(ctx, dir, 5, 0, ReadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	altered := bytes.Replace(p.Record, []byte(`"n":3,`), []byte(`"n":4,`), 1)
	wrongKey, _, _ := newSigningKey(rand.Reader, pk.LogID())
	tests := []struct {
		name   string
		key    *PublicKey
		record []byte
		hashes []tlog.Hash
		want   error
		detail string
	}{
		{"good", pk, nil, nil, nil, ""},
		{"another record", pk, other.Record, nil, ErrBadProof, "the record is seq 5, the proof is for seq 4"},
		{"altered record", pk, altered, nil, ErrBadProof, "is not the one in the signed tree"},
		{"altered proof", pk, nil, []tlog.Hash{{9}}, ErrBadProof, "is not the one in the signed tree"},
		{"wrong key", wrongKey.pub, nil, nil, ErrBadCheckpoint, "no signature by key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q := *p
			if tt.hashes != nil {
				q.Hashes = append(append([]tlog.Hash(nil), p.Hashes[:len(p.Hashes)-1]...), tt.hashes...)
			}
			_, _, err := CheckInclusion(&q, tt.key, tt.record)
			if tt.want == nil && err != nil || tt.want != nil && (!errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.detail)) {
				t.Errorf("CheckInclusion = %v, want %v naming %q", err, tt.want, tt.detail)
			}
		})
	}
	// A forged checkpoint inside the proof.
	q := *p
	q.Checkpoint = bytes.Replace(p.Checkpoint, []byte("\n9\n"), []byte("\n8\n"), 1)
	if _, _, err := CheckInclusion(&q, pk, nil); !errors.Is(err, ErrBadCheckpoint) {
		t.Errorf("CheckInclusion(forged checkpoint) = %v, want ErrBadCheckpoint", err)
	}
}

// rewriteRecord changes record content in the first segment and repairs
// the checksums, so that only the MACs and the signed tree show it.
func rewriteRecord(t *testing.T, dir string) {
	t.Helper()
	m := loadTestManifest(t, dir)
	first := m.Segments[0].Name
	path := filepath.Join(dir, first)
	b := bytes.Replace(must(os.ReadFile(path)), []byte(`"n":1,`), []byte(`"n":7,`), 1)
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	m.Segments[0].SHA256 = sha256Of(b)
	if err := os.WriteFile(filepath.Join(dir, manifestName), m.encode(), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path+checksumSuffix, checksumLine(m.Segments[0].SHA256, first), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestOpenRefusesRewrittenTree: when Open must rebuild the tree and the
// records no longer hash to the latest signed checkpoint, it refuses
// rather than sign a tree inconsistent with one it signed before.
func TestOpenRefusesRewrittenTree(t *testing.T) {
	dir, _, _ := signedLog(t, 4) // one segment: the latest checkpoint covers the changed record
	rewriteRecord(t, dir)
	if err := os.Remove(filepath.Join(dir, treeName)); err != nil {
		t.Fatal(err)
	}
	_, err := Open(dir, Options{})
	var ce *CorruptionError
	if !errors.As(err, &ce) || ce.Problem != CheckpointMismatch || !strings.Contains(err.Error(), "no longer hash to the root") {
		t.Fatalf("Open = %v, want a checkpoint mismatch", err)
	}
}

// mth is RFC 6962's Merkle tree hash (section 2.1), written out as the
// RFC states it, as an oracle for the frontier.
func mth(leaves [][]byte) [32]byte {
	switch n := len(leaves); n {
	case 0:
		return sha256.Sum256(nil)
	case 1:
		return sha256.Sum256(append([]byte{0}, leaves[0]...))
	default:
		k := 1
		for k*2 < n {
			k *= 2
		}
		l, r := mth(leaves[:k]), mth(leaves[k:])
		return sha256.Sum256(append(append([]byte{1}, l[:]...), r[:]...))
	}
}

// TestFrontierIsRFC6962 checks the tree the log keeps against the RFC's
// definition: the root and the number of stored hashes at every size.
func TestFrontierIsRFC6962(t *testing.T) {
	var fr frontier
	var leaves [][]byte
	stored := 0
	for n := 1; n <= 70; n++ {
		leaf := []byte("record " + strconv.Itoa(n))
		leaves = append(leaves, leaf)
		stored += len(fr.add(leafHash(leaf)))
		if got, want := fr.root(), mth(leaves); got != want {
			t.Fatalf("root of %d leaves = %x, want %x", n, got[:8], want[:8])
		}
		if int64(stored) != tlog.StoredHashCount(int64(n)) || len(fr.idx) != bits.OnesCount(uint(n)) {
			t.Fatalf("after %d leaves: %d stored hashes, frontier of %d; want %d, %d",
				n, stored, len(fr.idx), tlog.StoredHashCount(int64(n)), bits.OnesCount(uint(n)))
		}
		if got := treeRecords(tlog.StoredHashCount(int64(n))); got != int64(n) {
			t.Fatalf("treeRecords(StoredHashCount(%d)) = %d", n, got)
		}
	}
}
