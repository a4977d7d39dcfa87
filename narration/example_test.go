package narration_test

import (
	"context"
	"log/slog"
	"os"
	"time"

	"github.com/vramseal/vramseal/narration"
)

func Example() {
	n := narration.New(narration.Options{
		Sinks: []narration.Sink{narration.NewConsoleSink(os.Stdout, narration.ConsoleOptions{})},
		Clock: func() time.Time { return time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC) },
		Actor: "vram-residency",
	})
	ctx := narration.WithCorrelationID(context.Background(), "req-xyz")
	if n.Enabled(slog.LevelInfo, "seal") {
		n.Emit(ctx, &narration.Event{
			Level:    slog.LevelInfo,
			Action:   "seal",
			Target:   "shard-abc123",
			Human:    "Sealed model shard 'shard-abc123' in 1.0 MiB VRAM on GPU 0 (2ms)",
			Duration: 2 * time.Millisecond,
			Device:   narration.GPU(0, ""),
			WorkerID: "worker-gpu-0",
		})
	}
	// Output:
	// 2026-11-26T10:00:00Z INFO vram-residency seal shard-abc123
	//   Sealed model shard 'shard-abc123' in 1.0 MiB VRAM on GPU 0 (2ms)
	//   worker_id=worker-gpu-0 correlation_id=req-xyz gpu=0 duration=2ms
}

func ExampleScrub() {
	s, _ := narration.Scrub("fetch https://bob:hunter2@models.example/m with token=abc123")
	_, _ = os.Stdout.WriteString(s + "\n")
	// Output:
	// fetch https://[REDACTED]@models.example/m with token=[REDACTED]
}
