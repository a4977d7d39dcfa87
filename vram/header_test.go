package vram

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/vramseal/vramseal/tensor"
)

// fixtureDir returns testdata/models at the repository's root (the
// real-format model fixtures).
func fixtureDir(t *testing.T) string {
	t.Helper()
	p, err := filepath.Abs(filepath.Join("..", "testdata", "models"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("model fixtures: %v", err)
	}
	return p
}

func TestSealKeepsTheTensorMap(t *testing.T) {
	m, _ := newTestManager(t, 1, 1<<24)
	path := filepath.Join(fixtureDir(t), "tiny-llama", "model-00001-of-00002.safetensors")
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	want, err := tensor.ReadSafetensors(bytes.NewReader(raw), int64(len(raw)))
	if err != nil {
		t.Fatal(err)
	}
	// By file (the name asks for safetensors) and by stream (detected),
	// through both copy paths.
	got, err := m.SealFile(context.Background(), path, SealRequest{ShardID: "file"})
	if err != nil {
		t.Fatal(err)
	}
	if got.Format != "safetensors" || len(got.Tensors) == 0 {
		t.Fatalf("SealFile() tensor map = %q with %d tensors", got.Format, len(got.Tensors))
	}
	if diff := cmp.Diff(want.Tensors, got.Tensors); diff != "" {
		t.Errorf("SealFile() tensors differ from the parser's (-want +got):\n%s", diff)
	}
	streamed, err := m.Seal(context.Background(), SealRequest{ShardID: "stream", ModelRef: "m", Size: int64(len(raw)), Data: bytes.NewReader(raw)})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want.Tensors, streamed.Tensors); diff != "" {
		t.Errorf("Seal(bytes.Reader) tensors differ (-want +got):\n%s", diff)
	}
	piped, err := m.Seal(context.Background(), SealRequest{ShardID: "pipe", ModelRef: "m", Size: int64(len(raw)), Data: onlyReader{bytes.NewReader(raw)}})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want.Tensors, piped.Tensors); diff != "" {
		t.Errorf("Seal(reader) tensors differ (-want +got):\n%s", diff)
	}
	raw2, err := m.Seal(context.Background(), SealRequest{ShardID: "raw", ModelRef: "m", Size: int64(len(raw)), Data: bytes.NewReader(raw), Format: FormatRaw})
	if err != nil || raw2.Tensors != nil {
		t.Errorf("Seal(raw) = %d tensors, %v; want none", len(raw2.Tensors), err)
	}
}

// onlyReader hides every method but Read.
type onlyReader struct{ r *bytes.Reader }

func (o onlyReader) Read(p []byte) (int, error) { return o.r.Read(p) }

func TestSealSafetensorsRefusesBadHeaders(t *testing.T) {
	m, _ := newTestManager(t, 1, 1<<24)
	header := []byte(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}`)
	overlap := binary.LittleEndian.AppendUint64(nil, uint64(len(header)))
	overlap = append(append(overlap, header...), make([]byte, 12)...)
	for _, tt := range []struct {
		name string
		data []byte
	}{
		{"overlapping tensors", overlap},
		{"random bytes", randomBytes(3, 5000)},
		{"too short", []byte("abc")},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := m.Seal(context.Background(), SealRequest{ShardID: "s", ModelRef: "m", Size: int64(len(tt.data)), Data: bytes.NewReader(tt.data), Format: FormatSafetensors})
			if !errors.Is(err, ErrInvalidInput) {
				t.Fatalf("Seal(safetensors, %s) = %v, want ErrInvalidInput", tt.name, err)
			}
			// Auto detection seals it without a map.
			info, err := m.Seal(context.Background(), SealRequest{ShardID: "auto", ModelRef: "m", Size: int64(len(tt.data)), Data: bytes.NewReader(tt.data)})
			if err != nil || info.Tensors != nil {
				t.Fatalf("Seal(auto, %s) = %d tensors, %v; want none, nil", tt.name, len(info.Tensors), err)
			}
			if err := m.Release(context.Background(), "auto"); err != nil {
				t.Fatal(err)
			}
		})
	}
	if c, _ := m.Capacity(context.Background(), 0); c.UsedBytes != 0 || c.ReservedBytes != 0 {
		t.Errorf("refused seals left %d used, %d reserved bytes", c.UsedBytes, c.ReservedBytes)
	}
	if _, err := m.Seal(context.Background(), SealRequest{ShardID: "x", ModelRef: "m", Size: 1, Data: bytes.NewReader([]byte{1}), Format: "gguf?"}); !errors.Is(err, ErrInvalidInput) {
		t.Errorf("Seal(unknown format) = %v, want ErrInvalidInput", err)
	}
}
