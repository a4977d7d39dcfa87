package model_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vramseal/vramseal/audit"
	"github.com/vramseal/vramseal/gpu"
	"github.com/vramseal/vramseal/gpu/sim"
	"github.com/vramseal/vramseal/model"
	"github.com/vramseal/vramseal/provenance"
	"github.com/vramseal/vramseal/vram"
)

const fixtures = "../testdata/models"

// env is a manager on simulated GPUs with a real audit log.
type env struct {
	m    *vram.Manager
	devs []*sim.Device
	log  *audit.Log
	dir  string
	key  *audit.VerificationKey
}

func newEnv(t *testing.T, devices int, capacity int64) *env {
	t.Helper()
	e := &env{dir: filepath.Join(t.TempDir(), "audit")}
	opts := audit.Options{Service: "vramseal", Worker: "worker-test"}
	var err error
	if e.key, err = audit.Init(e.dir, opts); err != nil {
		t.Fatal(err)
	}
	if e.log, err = audit.Open(e.dir, opts); err != nil {
		t.Fatal(err)
	}
	e.devs, err = sim.New(sim.Options{Devices: devices, Capacity: capacity})
	if err != nil {
		t.Fatal(err)
	}
	var gd []gpu.Device
	for _, d := range e.devs {
		gd = append(gd, d)
	}
	if e.m, err = vram.New(context.Background(), vram.Options{Devices: gd, Audit: e.log, ChunkSize: 4096}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		e.m.Close(context.Background())
		e.log.Close(context.Background())
	})
	return e
}

// events returns the types of the audit records so far, and checks that
// the log verifies.
func (e *env) events(t *testing.T) []string {
	t.Helper()
	if err := e.log.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	var out []string
	err := audit.Query(context.Background(), e.dir, audit.Filter{}, audit.ReadOptions{}, func(r *audit.Record) error {
		out = append(out, r.Type)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := audit.Verify(context.Background(), e.dir, audit.VerifyOptions{Key: e.key}); err != nil {
		t.Fatalf("audit log does not verify: %v", err)
	}
	return out
}

func (e *env) nothingResident(t *testing.T) {
	t.Helper()
	if got := e.m.Shards(); len(got) != 0 {
		t.Errorf("%d shards resident, want none", len(got))
	}
	if got := e.m.Models(); len(got) != 0 {
		t.Errorf("%d models resident, want none", len(got))
	}
	for i := range e.devs {
		c, err := e.m.Capacity(context.Background(), i)
		if err != nil {
			t.Fatal(err)
		}
		if c.UsedBytes != 0 || c.ReservedBytes != 0 {
			t.Errorf("GPU %d: used %d reserved %d bytes, want 0", i, c.UsedBytes, c.ReservedBytes)
		}
	}
}

// copyDir copies a fixture directory into a temporary one and returns
// the parent (the model root) and the model's name in it.
func copyTree(t *testing.T, src string) string {
	t.Helper()
	root := t.TempDir()
	dst := filepath.Join(root, filepath.Base(src))
	if err := os.CopyFS(dst, os.DirFS(src)); err != nil {
		t.Fatal(err)
	}
	return root
}

func openRoot(t *testing.T, dir string) *os.Root {
	t.Helper()
	r, err := os.OpenRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func openLayout(t *testing.T, root *os.Root, rel string) *model.Layout {
	t.Helper()
	l, err := model.Open(root, rel)
	if err != nil {
		t.Fatalf("Open(%s) = %v", rel, err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func readFile(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func signature(t *testing.T, sig string) *model.Expectation {
	t.Helper()
	e, err := model.ExpectSignature(readFile(t, filepath.Join(fixtures, sig)), readFile(t, filepath.Join(fixtures, "fixture-key.pub")))
	if err != nil {
		t.Fatalf("ExpectSignature(%s) = %v", sig, err)
	}
	return e
}

func TestDirectoryLayout(t *testing.T) {
	l := openLayout(t, openRoot(t, fixtures), "tiny-llama")
	var names []string
	for _, w := range l.Weights {
		names = append(names, w.Name+":"+w.Format)
	}
	if got, want := strings.Join(names, ","), "model-00001-of-00002.safetensors:safetensors,model-00002-of-00002.safetensors:safetensors"; got != want {
		t.Errorf("weights = %s, want %s", got, want)
	}
	if got, want := strings.Join(l.Others, ","), "config.json,model.safetensors.index.json"; got != want {
		t.Errorf("others = %s, want %s", got, want)
	}
	if !l.Dir || l.DefaultID() != "tiny-llama" {
		t.Errorf("Dir %v, DefaultID %q", l.Dir, l.DefaultID())
	}
}

func TestSignedModelSeals(t *testing.T) {
	e := newEnv(t, 2, 64<<20)
	l := openLayout(t, openRoot(t, fixtures), "tiny-llama")
	exp := signature(t, "tiny-llama.sig")
	if err := l.Check(exp); err != nil {
		t.Fatal(err)
	}
	mi, err := e.m.SealModel(context.Background(), l.Request("tiny", "", exp, nil))
	if err != nil {
		t.Fatal(err)
	}
	if len(mi.Shards) != 2 || !mi.Provenance.Verified || mi.Provenance.Method != provenance.MethodSignature || mi.Provenance.SignedName != "tiny-llama" {
		t.Fatalf("model = %+v", mi)
	}
	gpus := map[int]bool{}
	for i, s := range mi.Shards {
		want := sha256.Sum256(readFile(t, filepath.Join(fixtures, "tiny-llama", l.Weights[i].Name)))
		if s.Seal.Digest != want || s.Seal.ShardID != fmt.Sprintf("tiny-%d", i) || s.Seal.ShardIndex != i || s.Seal.ShardCount != 2 {
			t.Errorf("shard %d: %s digest %s index %d/%d", i, s.Seal.ShardID, s.Seal.Digest, s.Seal.ShardIndex, s.Seal.ShardCount)
		}
		if s.Format != "safetensors" || len(s.Tensors) == 0 {
			t.Errorf("shard %d has no tensor map", i)
		}
		gpus[s.Seal.DeviceIndex] = true
	}
	if len(gpus) != 2 {
		t.Errorf("placement by free memory used GPUs %v, want both", gpus)
	}
	types := e.events(t)
	last := types[len(types)-1]
	if last != vram.EventModelSealed || strings.Count(strings.Join(types, ","), vram.EventSealed) != 2 {
		t.Errorf("events = %v, want two vram_sealed then model_sealed", types)
	}
	if _, err := e.m.VerifyModel(context.Background(), "tiny", vram.Full); err != nil {
		t.Fatal(err)
	}
	if _, err := e.m.SealModel(context.Background(), l.Request("tiny", "", exp, nil)); !errors.Is(err, vram.ErrExists) {
		t.Errorf("second seal of model tiny = %v, want ErrExists", err)
	}
	if err := e.m.ReleaseModel(context.Background(), "tiny", false); err != nil {
		t.Fatal(err)
	}
	e.nothingResident(t)
}

func TestSingleFileSignature(t *testing.T) {
	e := newEnv(t, 1, 64<<20)
	l := openLayout(t, openRoot(t, fixtures), "single.safetensors")
	if l.Dir || len(l.Weights) != 1 || l.Weights[0].Resource != provenance.SingleFile || l.DefaultID() != "single" {
		t.Fatalf("layout = %+v", l)
	}
	exp := signature(t, "single.safetensors.sig")
	if err := l.Check(exp); err != nil {
		t.Fatal(err)
	}
	if _, err := e.m.SealModel(context.Background(), l.Request(l.DefaultID(), "", exp, nil)); err != nil {
		t.Fatal(err)
	}
}

// rejected checks that a model add failed as an integrity failure naming
// file, left nothing resident, and was audited.
func (e *env) rejected(t *testing.T, err error, file string) {
	t.Helper()
	var fe *vram.ModelFileError
	if !errors.As(err, &fe) || fe.File != file || !provenance.IsIntegrity(err) {
		t.Fatalf("err = %v, want an integrity failure of %s", err, file)
	}
	e.nothingResident(t)
	types := e.events(t)
	if types[len(types)-1] != vram.EventModelRejected {
		t.Errorf("last event %s, want model_rejected", types[len(types)-1])
	}
}

func TestTamperedWeightIsRejectedAfterTheCopy(t *testing.T) {
	root := copyTree(t, filepath.Join(fixtures, "tiny-llama"))
	p := filepath.Join(root, "tiny-llama", "model-00002-of-00002.safetensors")
	b := readFile(t, p)
	b[len(b)-1] ^= 1
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, 1, 64<<20)
	l := openLayout(t, openRoot(t, root), "tiny-llama")
	exp := signature(t, "tiny-llama.sig")
	if err := l.Check(exp); err != nil {
		t.Fatalf("Check = %v; the weights are checked during the seal, not before", err)
	}
	_, err := e.m.SealModel(context.Background(), l.Request("tiny", "", exp, nil))
	var me *provenance.MismatchError
	if !errors.As(err, &me) || me.Expected == me.Actual || me.Actual != hex.EncodeToString(sha256Of(b)) {
		t.Fatalf("err = %v, want a mismatch with the tampered file's digest", err)
	}
	e.rejected(t, err, "model-00002-of-00002.safetensors")
}

func sha256Of(b []byte) []byte { s := sha256.Sum256(b); return s[:] }

func TestWrongKeyAndTamperedConfig(t *testing.T) {
	_, err := model.ExpectSignature(readFile(t, filepath.Join(fixtures, "tiny-llama.other-key.sig")), readFile(t, filepath.Join(fixtures, "fixture-key.pub")))
	var se *provenance.SignatureError
	if !errors.As(err, &se) {
		t.Errorf("other key: err = %v, want *SignatureError", err)
	}
	bundle := readFile(t, filepath.Join(fixtures, "tiny-llama.sig"))
	if _, err := model.ExpectSignature(bundle[:len(bundle)/2], readFile(t, filepath.Join(fixtures, "fixture-key.pub"))); !errors.Is(err, provenance.ErrMalformed) {
		t.Errorf("truncated bundle: err = %v, want ErrMalformed", err)
	}

	root := copyTree(t, filepath.Join(fixtures, "tiny-llama"))
	if err := os.WriteFile(filepath.Join(root, "tiny-llama", "config.json"), []byte(`{"changed":true}`), 0o644); err != nil {
		t.Fatal(err)
	}
	l := openLayout(t, openRoot(t, root), "tiny-llama")
	var me *provenance.MismatchError
	if err := l.Check(signature(t, "tiny-llama.sig")); !errors.As(err, &me) || me.File != "config.json" {
		t.Errorf("changed config: err = %v, want a mismatch of config.json", err)
	}
	// A signature of another model covers none of these files.
	if err := l.Check(signature(t, "single.safetensors.sig")); !errors.Is(err, provenance.ErrNotCovered) {
		t.Errorf("signature of another model: err = %v, want ErrNotCovered", err)
	}
}

func TestSignedFileMissing(t *testing.T) {
	root := copyTree(t, filepath.Join(fixtures, "tiny-llama"))
	if err := os.Remove(filepath.Join(root, "tiny-llama", "config.json")); err != nil {
		t.Fatal(err)
	}
	l := openLayout(t, openRoot(t, root), "tiny-llama")
	err := l.Check(signature(t, "tiny-llama.sig"))
	if !errors.Is(err, vram.ErrInvalidInput) || !strings.Contains(err.Error(), `"config.json"`) {
		t.Errorf("err = %v, want the missing config.json named", err)
	}
}

// A FIFO where a signed file should be is skipped, so the signature's
// file is missing: an error, never a hang.
func TestFIFOInModelDirectory(t *testing.T) {
	root := copyTree(t, filepath.Join(fixtures, "tiny-llama"))
	cfg := filepath.Join(root, "tiny-llama", "config.json")
	if err := os.Remove(cfg); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(cfg, 0o644); err != nil {
		t.Fatal(err)
	}
	l := openLayout(t, openRoot(t, root), "tiny-llama")
	done := make(chan error, 1)
	go func() { done <- l.Check(signature(t, "tiny-llama.sig")) }()
	select {
	case err := <-done:
		if !errors.Is(err, vram.ErrInvalidInput) || !strings.Contains(err.Error(), "config.json") {
			t.Errorf("Check = %v, want config.json missing", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Check blocked on a FIFO")
	}
	if _, err := provenance.HashFile(filepath.Join(root, "tiny-llama"), "config.json"); !errors.Is(err, provenance.ErrMalformed) {
		t.Errorf("HashFile of a FIFO = %v, want refused", err)
	}
}

func TestExpectDigests(t *testing.T) {
	dir := filepath.Join(fixtures, "tiny-llama")
	var sums bytes.Buffer
	for _, n := range []string{"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"} {
		fmt.Fprintf(&sums, "%x  %s\n", sha256Of(readFile(t, filepath.Join(dir, n))), n)
	}
	e := newEnv(t, 1, 64<<20)
	l := openLayout(t, openRoot(t, fixtures), "tiny-llama")
	exp, err := l.ExpectDigests(bytes.NewReader(sums.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Check(exp); err != nil {
		t.Fatal(err)
	}
	mi, err := e.m.SealModel(context.Background(), l.Request("tiny", "", exp, []int{0}))
	if err != nil || mi.Provenance.Method != provenance.MethodDigests {
		t.Fatalf("SealModel = %+v, %v", mi.Provenance, err)
	}

	// One weight file left out of the digests: refused before any seal.
	first, _, _ := strings.Cut(sums.String(), "\n")
	exp, err = l.ExpectDigests(strings.NewReader(first + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Check(exp); !errors.Is(err, provenance.ErrNotCovered) || !strings.Contains(err.Error(), "model-00002") {
		t.Errorf("uncovered weight: err = %v", err)
	}

	// --expect-sha256 is for one file.
	if _, err := l.ExpectSHA256(strings.Repeat("ab", 32)); !errors.Is(err, vram.ErrInvalidInput) {
		t.Errorf("--expect-sha256 on a directory of two: err = %v", err)
	}
	sl := openLayout(t, openRoot(t, fixtures), "single.safetensors")
	exp, err = sl.ExpectSHA256(strings.Repeat("ab", 32))
	if err != nil {
		t.Fatal(err)
	}
	_, err = e.m.SealModel(context.Background(), sl.Request("single", "", exp, nil))
	var me *provenance.MismatchError
	if !errors.As(err, &me) || me.File != provenance.SingleFile {
		t.Fatalf("wrong --expect-sha256: err = %v", err)
	}
	if got := len(e.m.Models()); got != 1 {
		t.Errorf("%d models after the failed one, want the first still resident", got)
	}
}

func TestGGUFTensorMapNamesCorruptedTensor(t *testing.T) {
	e := newEnv(t, 1, 64<<20)
	l := openLayout(t, openRoot(t, fixtures), "tiny.gguf")
	if len(l.Weights) != 1 || l.Weights[0].Tensors == nil || len(l.Weights[0].Tensors.Tensors) != 9 {
		t.Fatalf("layout = %+v", l.Weights)
	}
	mi, err := e.m.SealModel(context.Background(), l.Request("tiny", "", nil, nil))
	if err != nil {
		t.Fatal(err)
	}
	tt := l.Weights[0].Tensors.Tensors[4]
	buf, dev, err := e.m.Buffer(mi.Shards[0].Seal.ShardID)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.devs[dev].FlipBits(buf, tt.Offset+1, 0x10); err != nil {
		t.Fatal(err)
	}
	_, err = e.m.VerifyModel(context.Background(), "tiny", vram.Full)
	var ie *vram.IntegrityError
	if !errors.As(err, &ie) {
		t.Fatalf("verify = %v, want an integrity error", err)
	}
	if len(ie.Tensors) == 0 || !strings.Contains(strings.Join(ie.Tensors, ";"), tt.Name+" ("+tt.DType) || !strings.Contains(err.Error(), tt.Name) {
		t.Errorf("tensors = %q, error %q: want %s named", ie.Tensors, err, tt.Name)
	}
	e.events(t)
	var recorded string
	err = audit.Query(context.Background(), e.dir, audit.Filter{}, audit.ReadOptions{}, func(r *audit.Record) error {
		if f, ok := r.Field("tensors"); ok && r.Type == vram.EventVerificationFailed {
			recorded = f.StringValue()
		}
		return nil
	})
	if err != nil || !strings.Contains(recorded, tt.Name) {
		t.Errorf("seal_verification_failed tensors = %q (%v), want %s", recorded, err, tt.Name)
	}
}

func TestSplitGGUF(t *testing.T) {
	root := t.TempDir()
	g := readFile(t, filepath.Join(fixtures, "tiny.gguf"))
	for i := 1; i <= 3; i++ {
		if err := os.WriteFile(filepath.Join(root, fmt.Sprintf("m-%05d-of-00003.gguf", i)), g, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	l := openLayout(t, openRoot(t, root), "m-00002-of-00003.gguf")
	if len(l.Weights) != 3 || l.Weights[0].Name != "m-00001-of-00003.gguf" || l.DefaultID() != "m" {
		t.Fatalf("weights = %+v, id %s", l.Weights, l.DefaultID())
	}
	if err := os.Remove(filepath.Join(root, "m-00003-of-00003.gguf")); err != nil {
		t.Fatal(err)
	}
	if _, err := model.Open(openRoot(t, root), "m-00001-of-00003.gguf"); !errors.Is(err, vram.ErrInvalidInput) || !strings.Contains(err.Error(), "part 3 of 3") {
		t.Errorf("missing part: err = %v", err)
	}
	// A split file of one part is checked by its own name.
	if err := os.WriteFile(filepath.Join(root, "one-00001-of-00001.gguf"), g, 0o644); err != nil {
		t.Fatal(err)
	}
	one := openLayout(t, openRoot(t, root), "one-00001-of-00001.gguf")
	exp, err := one.ExpectDigests(strings.NewReader(fmt.Sprintf("%x  one-00001-of-00001.gguf\n", sha256Of(g))))
	if err != nil {
		t.Fatal(err)
	}
	if err := one.Check(exp); err != nil {
		t.Errorf("digests of a one-part split GGUF: %v", err)
	}
}

func TestBadModels(t *testing.T) {
	root := t.TempDir()
	mk := func(rel, content string) {
		t.Helper()
		p := filepath.Join(root, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(filepath.Join(root, "empty"), 0o755); err != nil {
		t.Fatal(err)
	}
	mk("noweights/config.json", "{}")
	mk("badindex/model.safetensors.index.json", `{"weight_map":{"a":"../outside.safetensors"}}`)
	mk("missing/model.safetensors.index.json", `{"weight_map":{"a":"model-1.safetensors"}}`)
	mk("badheader/model.safetensors", "\x08\x00\x00\x00\x00\x00\x00\x00notjson!")
	mk("badgguf/model.gguf", "GGUF\x03\x00\x00\x00garbage")
	mk("zero/model.safetensors", "")
	mk("outside.safetensors", "x")
	if err := os.MkdirAll(filepath.Join(root, "escape"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(root, "outside.safetensors"), filepath.Join(root, "escape", "model.safetensors")); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(root, "fifo"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(filepath.Join(root, "fifo", "model.safetensors"), 0o644); err != nil {
		t.Fatal(err)
	}
	mr, err := os.OpenRoot(filepath.Join(root, "escape"))
	if err != nil {
		t.Fatal(err)
	}
	defer mr.Close()
	r := openRoot(t, root)
	for _, tc := range []struct{ rel, want string }{
		{"empty", "no *.safetensors or *.gguf"},
		{"noweights", "no *.safetensors or *.gguf"},
		{"badindex", "not a .safetensors file inside the directory"},
		{"missing", `lists "model-1.safetensors", which is not in the model directory`},
		{"badgguf", "model.gguf"},
		{"zero", "is empty"},
		{"escape", "outside the model directory"},
		{"fifo", "not a regular file"},
		{"nothere", "does not exist"},
		{"../x", "outside the model directory"},
	} {
		_, err := model.Open(r, tc.rel)
		if !errors.Is(err, vram.ErrInvalidInput) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Open(%s) = %v, want %q", tc.rel, err, tc.want)
		}
	}
	// A safetensors file whose header is bad is refused by the seal, and
	// nothing stays resident.
	e := newEnv(t, 1, 64<<20)
	l := openLayout(t, r, "badheader")
	_, err = e.m.SealModel(context.Background(), l.Request("bad", "", nil, nil))
	if !errors.Is(err, vram.ErrInvalidInput) || !strings.Contains(err.Error(), "model.safetensors") {
		t.Errorf("bad header: err = %v", err)
	}
	e.nothingResident(t)
	e.events(t)
}

func TestAllOrNothingOnCapacity(t *testing.T) {
	// The two files fit one at a time but not together.
	e := newEnv(t, 1, 400<<10)
	l := openLayout(t, openRoot(t, fixtures), "tiny-llama")
	_, err := e.m.SealModel(context.Background(), l.Request("tiny", "", nil, nil))
	if !errors.Is(err, vram.ErrInsufficientVRAM) {
		t.Fatalf("err = %v, want insufficient VRAM", err)
	}
	var fe *vram.ModelFileError
	if !errors.As(err, &fe) {
		t.Errorf("err %v names no file", err)
	}
	e.nothingResident(t)
	types := strings.Join(e.events(t), ",")
	if !strings.HasSuffix(types, vram.EventModelRejected) {
		t.Errorf("events = %s, want model_rejected last", types)
	}
}

func TestFileChangedAfterLayout(t *testing.T) {
	root := copyTree(t, filepath.Join(fixtures, "tiny-llama"))
	e := newEnv(t, 1, 64<<20)
	l := openLayout(t, openRoot(t, root), "tiny-llama")
	f, err := os.OpenFile(filepath.Join(root, "tiny-llama", "model-00001-of-00002.safetensors"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Write([]byte("more"))
	f.Close()
	_, err = e.m.SealModel(context.Background(), l.Request("tiny", "", nil, nil))
	if !errors.Is(err, vram.ErrInvalidInput) || !strings.Contains(err.Error(), "changed while the model was loaded") {
		t.Errorf("err = %v", err)
	}
	e.nothingResident(t)
}

// A GGUF file whose header changes after its tensor table was read is
// refused: the map always describes the sealed bytes.
func TestGGUFHeaderChangedAfterLayout(t *testing.T) {
	root := t.TempDir()
	g := readFile(t, filepath.Join(fixtures, "tiny.gguf"))
	p := filepath.Join(root, "tiny.gguf")
	if err := os.WriteFile(p, g, 0o644); err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, 1, 64<<20)
	l := openLayout(t, openRoot(t, root), "tiny.gguf")
	g[40] ^= 0x20 // inside the metadata, same size
	if err := os.WriteFile(p, g, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := e.m.SealModel(context.Background(), l.Request("tiny", "", nil, nil))
	if !errors.Is(err, vram.ErrInvalidInput) || !strings.Contains(err.Error(), "GGUF header changed") {
		t.Errorf("err = %v, want the changed header refused", err)
	}
	e.nothingResident(t)
}
