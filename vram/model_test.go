package vram

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"
	"time"
)

// gatedReader blocks its first Read until open is closed.
type gatedReader struct {
	r    io.Reader
	open chan struct{}
}

func (g *gatedReader) Read(p []byte) (int, error) {
	<-g.open
	return g.r.Read(p)
}

func bytesFile(name string, data []byte, gate chan struct{}) ModelFile {
	return ModelFile{Name: name, Size: int64(len(data)), Format: FormatRaw, Open: func() (io.ReadCloser, error) {
		var r io.Reader = bytes.NewReader(data)
		if gate != nil {
			r = &gatedReader{r: r, open: gate}
		}
		return io.NopCloser(r), nil
	}}
}

// A model's shards are not listed, verifiable or attachable until every
// file is sealed; a rejected model leaves nothing behind.
func TestModelShardsStagedUntilPublished(t *testing.T) {
	m, _ := newTestManager(t, 1, 1<<20)
	gate := make(chan struct{})
	req := ModelRequest{ID: "m", Parallel: 2, Files: []ModelFile{
		bytesFile("a", randomBytes(1, 4*testChunk), nil),
		bytesFile("b", randomBytes(2, 4*testChunk), gate),
	}}
	done := make(chan error, 1)
	go func() {
		_, err := m.SealModel(context.Background(), req)
		done <- err
	}()
	// Wait until the first file is sealed (staged) while the second waits.
	for {
		m.mu.Lock()
		n := len(m.staged)
		m.mu.Unlock()
		if n == 1 {
			break
		}
		select {
		case err := <-done:
			t.Fatalf("SealModel ended early: %v", err)
		case <-time.After(time.Millisecond):
		}
	}
	if got := m.Shards(); len(got) != 0 {
		t.Errorf("Shards during the seal = %d, want none listed", len(got))
	}
	if _, _, err := m.Attach(context.Background(), "m-0", testHolder); !errors.Is(err, ErrNotFound) {
		t.Errorf("Attach of a staged shard = %v, want ErrNotFound", err)
	}
	if _, err := m.Verify(context.Background(), "m-0", Full); !errors.Is(err, ErrNotFound) {
		t.Errorf("Verify of a staged shard = %v, want ErrNotFound", err)
	}
	if err := m.Release(context.Background(), "m-0"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Release of a staged shard = %v, want ErrNotFound", err)
	}
	if _, err := m.Seal(context.Background(), SealRequest{ShardID: "m-0", ModelRef: "x", Size: 1, Data: bytes.NewReader([]byte{1})}); !errors.Is(err, ErrExists) {
		t.Errorf("Seal of a staged shard's ID = %v, want ErrExists", err)
	}
	close(gate)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := m.Shards(); len(got) != 2 {
		t.Errorf("Shards after the seal = %d, want 2", len(got))
	}
}

func TestReleaseModelAllOrNothing(t *testing.T) {
	m, _ := newTestManager(t, 1, 1<<20)
	req := ModelRequest{ID: "m", Files: []ModelFile{
		bytesFile("a", randomBytes(1, 4*testChunk), nil),
		bytesFile("b", randomBytes(2, 4*testChunk), nil),
	}}
	if _, err := m.SealModel(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	l, _ := attach(t, m, "m-1", testHolder)
	var iu *InUseError
	if err := m.ReleaseModel(context.Background(), "m", false); !errors.As(err, &iu) || iu.ShardID != "m-1" {
		t.Fatalf("ReleaseModel of an attached model = %v, want in use by m-1", err)
	}
	if got := m.Shards(); len(got) != 2 {
		t.Errorf("%d shards left after a refused release, want both", len(got))
	}
	if err := l.Detach(context.Background(), "detach"); err != nil {
		t.Fatal(err)
	}
	if err := m.ReleaseModel(context.Background(), "m", false); err != nil {
		t.Fatal(err)
	}
	if got := m.Shards(); len(got) != 0 {
		t.Errorf("%d shards left after release", len(got))
	}
	if _, err := m.Model("m"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Model after release = %v", err)
	}
}
