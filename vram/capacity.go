package vram

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/vramseal/vramseal/narration"
)

// Capacity is one device's memory as the manager sees it.
type Capacity struct {
	Device int
	UUID   string
	// TotalBytes and FreeBytes are what the device reports now.
	TotalBytes int64
	FreeBytes  int64
	// UsedBytes is held by this manager's sealed shards.
	UsedBytes int64
	// ReservedBytes is allocated for seals still in progress.
	ReservedBytes int64
	// HeadroomBytes is kept free by policy.
	HeadroomBytes int64
	// AvailableBytes is the largest shard a new seal could get now:
	// free minus headroom, never negative.
	AvailableBytes int64
	Shards         int
}

// Capacity returns the memory of one device. It is an operation: it is
// narrated (capacity_query, debug level).
func (m *Manager) Capacity(ctx context.Context, device int) (Capacity, error) {
	start := time.Now()
	d, err := m.device(device)
	if err != nil {
		return Capacity{}, m.rejected(ctx, start, "capacity", "", err)
	}
	c, err := m.usage(ctx, d)
	if err != nil {
		return Capacity{}, err
	}
	m.narrate(ctx, slog.LevelDebug, ActionCapacityQuery, fmt.Sprintf("GPU%d", device), d.info, time.Since(start), "", nil, func() string {
		return fmt.Sprintf("GPU %d has %s VRAM available: %s free of %s, %s sealed", device, narration.FormatBytes(c.AvailableBytes), narration.FormatBytes(c.FreeBytes), narration.FormatBytes(c.TotalBytes), narration.FormatBytes(c.UsedBytes))
	}, narration.Bytes("available_bytes", c.AvailableBytes), narration.Bytes("used_bytes", c.UsedBytes))
	return c, nil
}

// Usage reads what [Manager.Capacity] reads without narrating it: for
// monitoring (a metrics scrape every few seconds is not an operation
// worth a narration event per GPU).
func (m *Manager) Usage(ctx context.Context, device int) (Capacity, error) {
	d, err := m.device(device)
	if err != nil {
		return Capacity{}, err
	}
	return m.usage(ctx, d)
}

func (m *Manager) usage(ctx context.Context, d *deviceState) (Capacity, error) {
	device := d.index
	info, err := d.dev.Info(ctx)
	if err != nil {
		return Capacity{}, fmt.Errorf("vram: GPU %d: read free memory: %w", device, err)
	}
	c := Capacity{
		Device:        device,
		UUID:          info.UUID,
		TotalBytes:    clampInt64(info.TotalBytes),
		FreeBytes:     clampInt64(info.FreeBytes),
		HeadroomBytes: m.opts.Headroom,
	}
	c.AvailableBytes = max(c.FreeBytes-c.HeadroomBytes, 0)
	m.mu.Lock()
	c.UsedBytes = d.used
	c.ReservedBytes = d.reserved
	for _, s := range m.shards {
		if s.dev == d {
			c.Shards++
		}
	}
	m.mu.Unlock()
	return c, nil
}

// DeviceCount returns the number of managed devices.
func (m *Manager) DeviceCount() int { return len(m.devices) }

func (m *Manager) device(i int) (*deviceState, error) {
	if i < 0 || i >= len(m.devices) {
		return nil, invalid("GPU %d does not exist (%d devices)", i, len(m.devices))
	}
	return m.devices[i], nil
}

func clampInt64(v uint64) int64 {
	if v > 1<<63-1 {
		return 1<<63 - 1
	}
	return int64(v)
}
