package sim_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"strconv"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/vramseal/vramseal/gpu"
	"github.com/vramseal/vramseal/gpu/sim"
)

// protectedShare allocates size bytes, writes data, protects and exports.
func protectedShare(t *testing.T, d *sim.Device, data []byte) (gpu.Buffer, gpu.Share) {
	t.Helper()
	ctx := context.Background()
	b, err := d.Alloc(ctx, int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Free(context.Background(), b) })
	if err := d.Write(ctx, b, 0, data); err != nil {
		t.Fatal(err)
	}
	if err := d.Protect(ctx, b); err != nil {
		t.Fatal(err)
	}
	sh, err := d.Export(ctx, b)
	if err != nil {
		t.Fatalf("Export() error = %v", err)
	}
	t.Cleanup(func() { sh.File.Close() })
	return b, sh
}

func TestExportMapsTheSealedBytesReadOnly(t *testing.T) {
	devs, err := sim.New(sim.Options{Capacity: 1 << 24})
	if err != nil {
		t.Fatal(err)
	}
	d := devs[0]
	data := bytes.Repeat([]byte("vramseal"), 300_001)
	b, sh := protectedShare(t, d, data)
	if sh.Kind != gpu.ShareMemfd || sh.Granularity != int64(os.Getpagesize()) {
		t.Errorf("Export() = kind %q, granularity %d; want %q, the page size", sh.Kind, sh.Granularity, gpu.ShareMemfd)
	}
	fd := int(sh.File.Fd())
	m, err := unix.Mmap(fd, 0, int(sh.MapSize), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatalf("mmap(PROT_READ) of the share: %v", err)
	}
	defer unix.Munmap(m)
	if !bytes.Equal(m[:len(data)], data) {
		t.Fatal("mapped share differs from the written bytes")
	}
	if tail := m[len(data):]; !bytes.Equal(tail, make([]byte, len(tail))) {
		t.Error("mapping past the shard's end is not zero")
	}
	// No writable mapping: not through the descriptor handed out, not
	// through the file reopened for writing, not with write(2).
	if w, err := unix.Mmap(fd, 0, int(sh.MapSize), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED); err == nil {
		unix.Munmap(w)
		t.Error("mmap(PROT_WRITE, MAP_SHARED) of the share succeeded")
	}
	if err := unix.Mprotect(m, unix.PROT_READ|unix.PROT_WRITE); err == nil {
		t.Error("mprotect(PROT_WRITE) of the read-only mapping succeeded")
	}
	rw, err := unix.Open("/proc/self/fd/"+strconv.Itoa(fd), unix.O_RDWR, 0)
	if err == nil {
		defer unix.Close(rw)
		if _, err := unix.Pwrite(rw, []byte{1}, 0); err == nil {
			t.Error("pwrite through the reopened share succeeded")
		}
		if w, err := unix.Mmap(rw, 0, int(sh.MapSize), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED); err == nil {
			unix.Munmap(w)
			t.Error("writable mapping of the reopened share succeeded")
		}
		if err := unix.Ftruncate(rw, 0); err == nil {
			t.Error("shrinking the share succeeded")
		}
	}
	// The device's fault injection still reaches the consumer's view: the
	// gate exists to catch exactly this.
	if err := d.FlipBits(b, 5, 0x01); err != nil {
		t.Fatalf("FlipBits(protected) error = %v", err)
	}
	if m[5] != data[5]^0x01 {
		t.Errorf("after FlipBits the mapping holds %#x at 5, want %#x", m[5], data[5]^0x01)
	}
	if err := d.Write(context.Background(), b, 0, []byte{0}); !errors.Is(err, gpu.ErrReadOnly) {
		t.Errorf("Write(protected) error = %v, want %v", err, gpu.ErrReadOnly)
	}
}

func TestShareOutlivesFree(t *testing.T) {
	devs, err := sim.New(sim.Options{Capacity: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	d := devs[0]
	data := []byte("still mapped after free")
	b, sh := protectedShare(t, d, data)
	m, err := unix.Mmap(int(sh.File.Fd()), 0, int(sh.MapSize), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(m)
	if err := d.Free(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	if info, _ := d.Info(context.Background()); info.FreeBytes != 1<<20 {
		t.Errorf("FreeBytes after Free = %d, want %d", info.FreeBytes, 1<<20)
	}
	if !bytes.Equal(m[:len(data)], data) {
		t.Error("a consumer's mapping changed when the device freed the buffer")
	}
}
