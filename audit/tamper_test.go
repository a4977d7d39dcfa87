package audit

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"hash"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// tamperFixture is a closed log of several segments and epochs.
type tamperFixture struct {
	dir  string
	vk   *VerificationKey
	man  *manifest
	segs []string // segment names, oldest first; the last is live
}

func buildTamperFixture(t *testing.T) *tamperFixture {
	t.Helper()
	clk := newFakeClock()
	o := Options{Clock: clk.Now, SegmentMaxBytes: 1800, Service: "vramseal", Node: "n1", Worker: "w1"}
	dir, vk, l := newLog(t, o)
	for i := range 14 {
		mustAppend(t, l, testEvent(i))
		if i == 6 {
			// An epoch change inside a segment, once the writer has
			// stamped the records before it (it writes asynchronously).
			waitWritten(t, l, 7)
			clk.Advance(2 * time.Hour)
		}
	}
	mustClose(t, l)
	l, err := Open(dir, o)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 4 {
		mustAppend(t, l, testEvent(100+i))
	}
	mustClose(t, l)
	f := &tamperFixture{dir: dir, vk: vk}
	f.man = loadTestManifest(t, dir)
	for _, s := range f.man.Segments {
		f.segs = append(f.segs, s.Name)
	}
	if len(f.segs) < 5 || f.man.Segments[len(f.segs)-1].Closed {
		t.Fatalf("fixture has %d segments, want >= 5 with the last live", len(f.segs))
	}
	mustVerify(t, dir, vk)
	return f
}

// waitWritten waits until the log's writer has written n records.
func waitWritten(t testing.TB, l *Log, n uint64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for l.Stats().Written < n {
		if time.Now().After(deadline) {
			t.Fatalf("the writer wrote %d records in 10 s, want %d", l.Stats().Written, n)
		}
		time.Sleep(time.Millisecond)
	}
}

func loadTestManifest(t testing.TB, dir string) *manifest {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, manifestName))
	if err != nil {
		t.Fatal(err)
	}
	m, err := parseManifest(b)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func copyDir(t testing.TB, src string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "copy")
	if err := os.CopyFS(dst, os.DirFS(src)); err != nil {
		t.Fatal(err)
	}
	return dst
}

// closedLog writes n test records to a new log, closes it, and returns
// its directory, verification key, the path of its one segment and that
// segment's lines (each with its newline).
func closedLog(t testing.TB, n int) (dir string, vk *VerificationKey, path string, lines [][]byte) {
	t.Helper()
	dir, vk, l := newLog(t, Options{})
	for i := range n {
		mustAppend(t, l, testEvent(i))
	}
	mustClose(t, l)
	path = filepath.Join(dir, loadTestManifest(t, dir).Segments[0].Name)
	return dir, vk, path, splitLines(must(os.ReadFile(path)))
}

func splitLines(b []byte) [][]byte {
	var out [][]byte
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			out = append(out, b)
			break
		}
		out = append(out, b[:i+1])
		b = b[i+1:]
	}
	return out
}

func editLines(t testing.TB, path string, fn func([][]byte) [][]byte) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, bytes.Join(fn(splitLines(b)), nil), 0o600); err != nil {
		t.Fatal(err)
	}
}

// reMAC rewrites a record line with a new epoch number and MACs it with
// the given epoch key, as someone holding the current key could.
func reMAC(line []byte, epoch uint64, k epochKey) []byte {
	line = bytes.TrimSuffix(line, []byte("\n"))
	var v recordView
	if err := parseRecord(line, &v); err != nil {
		panic(err)
	}
	body := v.macInput()
	i := bytes.LastIndex(body, []byte(`,"epoch":`))
	j := bytes.LastIndex(body, []byte(`,"prev":`))
	nb := append([]byte(nil), body[:i]...)
	nb = append(nb, `,"epoch":`...)
	nb = strconv.AppendUint(nb, epoch, 10)
	nb = append(nb, body[j:]...)
	mk := k.macKey()
	m := hmac.New(newSHA, mk[:])
	m.Write(nb)
	nb = append(nb, `,"mac":"`...)
	nb = appendHex(nb, m.Sum(nil))
	return append(nb, "\"}\n"...)
}

func currentKey(t testing.TB, dir string) *state {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, stateName))
	if err != nil {
		t.Fatal(err)
	}
	st, err := parseState(b)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func wantProblem(t *testing.T, dir string, vk *VerificationKey, want ...Problem) *VerifyError {
	t.Helper()
	_, err := Verify(context.Background(), dir, VerifyOptions{Key: vk})
	var ve *VerifyError
	if !errors.As(err, &ve) {
		t.Fatalf("Verify = %v, want a *VerifyError (%v)", err, want)
	}
	for _, p := range want {
		if ve.Problem == p {
			return ve
		}
	}
	t.Fatalf("Verify = %v, want problem %v", err, want)
	return nil
}

func TestTamperMatrix(t *testing.T) {
	f := buildTamperFixture(t)
	seg := func(dir string, i int) string {
		if i < 0 {
			i += len(f.segs)
		}
		return filepath.Join(dir, f.segs[i])
	}
	live := len(f.segs) - 1
	for _, key := range []*VerificationKey{f.vk, nil} {
		name := "key"
		if key == nil {
			name = "nokey"
		}
		t.Run(name, func(t *testing.T) {
			cases := []struct {
				name string
				edit func(t *testing.T, dir string)
				want []Problem
			}{
				{"delete first line of a segment", func(t *testing.T, dir string) {
					editLines(t, seg(dir, 1), func(l [][]byte) [][]byte { return l[1:] })
				}, []Problem{Deleted}},
				{"delete middle line", func(t *testing.T, dir string) {
					editLines(t, seg(dir, 1), func(l [][]byte) [][]byte { return append(l[:1:1], l[2:]...) })
				}, []Problem{Deleted}},
				{"delete last line of a closed segment", func(t *testing.T, dir string) {
					editLines(t, seg(dir, 0), func(l [][]byte) [][]byte { return l[:len(l)-1] })
				}, []Problem{Truncated}},
				{"duplicate line", func(t *testing.T, dir string) {
					editLines(t, seg(dir, 1), func(l [][]byte) [][]byte {
						return append(l[:2:2], append([][]byte{l[1]}, l[2:]...)...)
					})
				}, []Problem{Duplicated}},
				{"duplicate an older line later", func(t *testing.T, dir string) {
					first := splitLines(must(os.ReadFile(seg(dir, 0))))[0]
					editLines(t, seg(dir, 2), func(l [][]byte) [][]byte {
						return append(l[:1:1], append([][]byte{first}, l[1:]...)...)
					})
				}, []Problem{Duplicated}},
				{"insert forged line", func(t *testing.T, dir string) {
					editLines(t, seg(dir, 1), func(l [][]byte) [][]byte {
						forged := bytes.Replace(l[0], []byte(`"shard_id":"s1"`), []byte(`"shard_id":"s9"`), 1)
						return append(l[:1:1], append([][]byte{forged}, l[1:]...)...)
					})
				}, []Problem{Inserted, Modified, Duplicated}},
				{"insert genuine record from elsewhere", func(t *testing.T, dir string) {
					far := splitLines(must(os.ReadFile(seg(dir, 3))))[0]
					editLines(t, seg(dir, 0), func(l [][]byte) [][]byte {
						return append(l[:1:1], append([][]byte{far}, l[1:]...)...)
					})
				}, []Problem{Inserted}},
				{"swap adjacent lines", func(t *testing.T, dir string) {
					editLines(t, seg(dir, 1), func(l [][]byte) [][]byte { l[0], l[1] = l[1], l[0]; return l })
				}, []Problem{Reordered}},
				{"move line far back", func(t *testing.T, dir string) {
					editLines(t, seg(dir, 2), func(l [][]byte) [][]byte { return append(l[1:], l[0]) })
				}, []Problem{Reordered}},
				{"truncate mid-line in a closed segment", func(t *testing.T, dir string) {
					b := must(os.ReadFile(seg(dir, 1)))
					os.WriteFile(seg(dir, 1), b[:len(b)/2], 0o600)
				}, []Problem{Truncated}},
				{"truncate tail of the live segment", func(t *testing.T, dir string) {
					editLines(t, seg(dir, live), func(l [][]byte) [][]byte { return l[:len(l)-1] })
				}, []Problem{Truncated}},
				{"truncate live segment mid-line", func(t *testing.T, dir string) {
					b := must(os.ReadFile(seg(dir, live)))
					os.WriteFile(seg(dir, live), b[:len(b)-10], 0o600)
				}, []Problem{Truncated}},
				{"delete a whole segment", func(t *testing.T, dir string) {
					os.Remove(seg(dir, 2))
				}, []Problem{Deleted}},
				{"delete a segment and its checksum", func(t *testing.T, dir string) {
					os.Remove(seg(dir, 2))
					os.Remove(seg(dir, 2) + checksumSuffix)
				}, []Problem{Deleted}},
				{"swap two segments", func(t *testing.T, dir string) {
					a, b := must(os.ReadFile(seg(dir, 1))), must(os.ReadFile(seg(dir, 2)))
					os.WriteFile(seg(dir, 1), b, 0o600)
					os.WriteFile(seg(dir, 2), a, 0o600)
				}, []Problem{Reordered}},
				{"stray segment", func(t *testing.T, dir string) {
					os.WriteFile(filepath.Join(dir, segmentName(time.Now(), 999)), nil, 0o600)
				}, []Problem{Inserted}},
				{"delete checksum file", func(t *testing.T, dir string) {
					os.Remove(seg(dir, 0) + checksumSuffix)
				}, []Problem{ChecksumMismatch}},
				{"append to a closed segment", func(t *testing.T, dir string) {
					editLines(t, seg(dir, 0), func(l [][]byte) [][]byte { return append(l, l[len(l)-1]) })
				}, []Problem{Duplicated}},
			}
			if key != nil {
				cases = append(cases,
					struct {
						name string
						edit func(t *testing.T, dir string)
						want []Problem
					}{"re-MAC old record with the current key", func(t *testing.T, dir string) {
						st := currentKey(t, dir)
						editLines(t, seg(dir, 0), func(l [][]byte) [][]byte {
							var v recordView
							parseRecord(bytes.TrimSuffix(l[1], []byte("\n")), &v)
							l[1] = reMAC(l[1], v.epoch, st.key)
							return l
						})
					}, []Problem{WrongEpoch}},
					struct {
						name string
						edit func(t *testing.T, dir string)
						want []Problem
					}{"re-MAC old record as the current epoch", func(t *testing.T, dir string) {
						st := currentKey(t, dir)
						editLines(t, seg(dir, 0), func(l [][]byte) [][]byte {
							l[1] = reMAC(l[1], st.epoch, st.key)
							return l
						})
					}, []Problem{WrongEpoch}},
					struct {
						name string
						edit func(t *testing.T, dir string)
						want []Problem
					}{"re-MAC last record of a closed segment as the current epoch", func(t *testing.T, dir string) {
						st := currentKey(t, dir)
						editLines(t, seg(dir, 1), func(l [][]byte) [][]byte {
							l[len(l)-1] = reMAC(l[len(l)-1], st.epoch, st.key)
							return l
						})
					}, []Problem{WrongEpoch}},
				)
			}
			for _, tt := range cases {
				t.Run(tt.name, func(t *testing.T) {
					dir := copyDir(t, f.dir)
					tt.edit(t, dir)
					wantProblem(t, dir, key, tt.want...)
				})
			}
		})
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// TestTamperEveryByte flips every byte of every segment, the manifest and
// the checksum files, one at a time, and requires verification to fail
// with the right problem.
func TestTamperEveryByte(t *testing.T) {
	f := buildTamperFixture(t)
	dir := f.dir
	// The edited copies live in memory: Verify reads them through the FS
	// it is given, as it reads a log on disk, with no system call per
	// file (thousands of Verify runs took 12 s on disk).
	mfs := loadMemFS(t, dir)
	type target struct {
		name string
		want []Problem
		last []Problem // for the file's last byte
	}
	var targets []target
	for i, s := range f.segs {
		last := []Problem{Modified}
		if i == len(f.segs)-1 {
			last = []Problem{Truncated}
		}
		targets = append(targets, target{s, []Problem{Modified}, last})
		if i < len(f.segs)-1 {
			targets = append(targets, target{s + checksumSuffix, []Problem{ChecksumMismatch}, []Problem{ChecksumMismatch}})
		}
	}
	targets = append(targets, target{manifestName, []Problem{ManifestMismatch}, []Problem{ManifestMismatch}})
	for ti, tg := range targets {
		// Every byte of the first segment, its checksum file, the live
		// segment and the manifest; every third byte elsewhere (every
		// eleventh with -short), to keep the race-detector run short.
		step := 3
		if ti <= 1 || ti >= len(targets)-2 {
			step = 1
		}
		if testing.Short() {
			step = 11
		}
		orig := mfs.files[tg.name]
		b := append([]byte(nil), orig...)
		mfs.files[tg.name] = b
		for off := 0; off < len(orig); off += step {
			b[off] ^= 0x01
			want := tg.want
			if off == len(orig)-1 {
				want = tg.last
			}
			_, err := Verify(context.Background(), dir, VerifyOptions{Key: f.vk, FS: mfs})
			var ve *VerifyError
			if !errors.As(err, &ve) || !containsProblem(want, ve.Problem) {
				t.Errorf("%s: flip byte %d (%q): Verify = %v, want %v", tg.name, off, orig[off], err, want)
			}
			b[off] ^= 0x01
		}
		mfs.files[tg.name] = orig
	}
	// The unedited copy in memory verifies, as the log on disk does.
	if _, err := Verify(context.Background(), dir, VerifyOptions{Key: f.vk, FS: mfs}); err != nil {
		t.Errorf("Verify of the unedited log in memory = %v", err)
	}
	mustVerify(t, dir, f.vk)
}

func containsProblem(ps []Problem, p Problem) bool {
	for _, q := range ps {
		if q == p {
			return true
		}
	}
	return false
}

// TestTamperTruncateEveryOffset cuts a closed segment at every offset.
func TestTamperTruncateEveryOffset(t *testing.T) {
	f := buildTamperFixture(t)
	mfs := loadMemFS(t, f.dir) // as in TestTamperEveryByte
	orig := mfs.files[f.segs[1]]
	for n := 0; n < len(orig); n++ {
		mfs.files[f.segs[1]] = orig[:n]
		_, err := Verify(context.Background(), f.dir, VerifyOptions{Key: f.vk, FS: mfs})
		var ve *VerifyError
		if !errors.As(err, &ve) || ve.Problem != Truncated {
			t.Errorf("truncate to %d bytes: Verify = %v, want truncated", n, err)
		}
	}
}

func newSHA() hash.Hash { return sha256.New() }

// TestVerifyLongLineLocation: a line longer than the reader's buffer and
// the line limit is reported at its own line number and offset.
func TestVerifyLongLineLocation(t *testing.T) {
	dir, vk, path, lines := closedLog(t, 4)
	for _, n := range []int{maxLineBytes + 64<<10, 2*maxLineBytes + 7} {
		long := append(bytes.Repeat([]byte("y"), n), '\n')
		b := bytes.Join([][]byte{lines[0], long, lines[1], lines[2], lines[3]}, nil)
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := Verify(context.Background(), dir, VerifyOptions{Key: vk})
		var ve *VerifyError
		if !errors.As(err, &ve) || ve.Line != 2 || ve.Offset != int64(len(lines[0])) {
			t.Errorf("line of %d bytes: Verify = %v, want line 2 at offset %d", n, err, len(lines[0]))
		}
	}
}

// TestTamperCheckpointsEveryByte flips every byte of a closed segment's and
// the live segment's checkpoint files, and cuts the closed one at every
// offset: verification with the public key must fail naming the
// checkpoint file.
func TestTamperCheckpointsEveryByte(t *testing.T) {
	f := buildTamperFixture(t)
	dir := f.dir
	mfs := loadMemFS(t, dir) // as in TestTamperEveryByte
	pk := must(ReadPublicKey(dir, nil))
	check := func(name, what string) {
		t.Helper()
		_, err := Verify(context.Background(), dir, VerifyOptions{PublicKey: pk, FS: mfs})
		var ve *VerifyError
		if !errors.As(err, &ve) || ve.Problem != CheckpointMismatch && ve.Problem != Truncated || ve.File != name {
			t.Errorf("%s: %s: Verify(public key) = %v, want a checkpoint problem in %s", name, what, err, name)
		}
	}
	for i, seg := range []string{f.segs[1], f.segs[len(f.segs)-1]} {
		name := seg + checkpointsSuffix
		orig := mfs.files[name]
		for off := range orig {
			b := append([]byte(nil), orig...)
			b[off] ^= 0x01
			mfs.files[name] = b
			check(name, "flip byte "+strconv.Itoa(off))
		}
		for n := 0; i == 0 && n < len(orig); n++ {
			mfs.files[name] = orig[:n]
			check(name, "cut to "+strconv.Itoa(n)+" bytes")
		}
		mfs.files[name] = orig
	}
	if _, err := Verify(context.Background(), dir, VerifyOptions{Key: f.vk, PublicKey: pk, FS: mfs}); err != nil {
		t.Errorf("Verify of the unedited log in memory = %v", err)
	}
	mustVerify(t, dir, f.vk)
}
