package narration_test

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/vramseal/vramseal/narration"
)

// The benchmarks come in pairs: narration and a baseline writing the same
// fields in the same run. TestBenchmarkRatios (with -bench-ratios) prints the
// ratios the performance targets are stated in.

const benchHuman = "Sealed model shard 'shard-abc123' in 1 MB VRAM on GPU 0 (2 ms)"

var benchTime = time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)

func benchEvent(level slog.Level) narration.Event {
	return narration.Event{
		Time:          benchTime,
		Level:         level,
		Actor:         "vram-residency",
		Action:        "seal",
		Target:        "shard-abc123",
		Human:         benchHuman,
		CorrelationID: "req-xyz",
		Duration:      2 * time.Millisecond,
		Device:        narration.GPU(0, ""),
		WorkerID:      "worker-gpu-0",
	}
}

// BenchmarkEmitJSON emits an enabled event with 8 fields (actor, action,
// target, human, correlation ID, duration, device, worker) to a JSON sink
// writing to io.Discard.
func BenchmarkEmitJSON(b *testing.B) {
	n := narration.New(narration.Options{Sinks: []narration.Sink{narration.NewJSONSink(io.Discard)}})
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		n.Emit(ctx, narration.Event{
			Time:          benchTime,
			Level:         slog.LevelInfo,
			Actor:         "vram-residency",
			Action:        "seal",
			Target:        "shard-abc123",
			Human:         benchHuman,
			CorrelationID: "req-xyz",
			Duration:      2 * time.Millisecond,
			Device:        narration.GPU(0, ""),
			WorkerID:      "worker-gpu-0",
		})
	}
}

// BenchmarkZerologJSON is the baseline of BenchmarkEmitJSON: zerolog writing
// the same fields, time and level to io.Discard.
func BenchmarkZerologJSON(b *testing.B) {
	l := zerolog.New(io.Discard)
	b.ReportAllocs()
	for b.Loop() {
		l.Info().
			Time("time", benchTime).
			Str("actor", "vram-residency").
			Str("action", "seal").
			Str("target", "shard-abc123").
			Str("human", benchHuman).
			Str("correlation_id", "req-xyz").
			Float64("duration_ms", 2).
			Int("device_index", 0).
			Str("worker_id", "worker-gpu-0").
			Msg("")
	}
}

// BenchmarkEmitDisabled emits the event of BenchmarkEmitJSON below the
// minimum level.
func BenchmarkEmitDisabled(b *testing.B) {
	n := narration.New(narration.Options{
		Level: slog.LevelInfo,
		Sinks: []narration.Sink{narration.NewJSONSink(io.Discard)},
	})
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		n.Emit(ctx, narration.Event{
			Time:          benchTime,
			Level:         slog.LevelDebug,
			Actor:         "vram-residency",
			Action:        "seal",
			Target:        "shard-abc123",
			Human:         benchHuman,
			CorrelationID: "req-xyz",
			Duration:      2 * time.Millisecond,
			Device:        narration.GPU(0, ""),
			WorkerID:      "worker-gpu-0",
		})
	}
}

// BenchmarkZerologDisabled is the baseline of BenchmarkEmitDisabled.
func BenchmarkZerologDisabled(b *testing.B) {
	l := zerolog.New(io.Discard).Level(zerolog.InfoLevel)
	b.ReportAllocs()
	for b.Loop() {
		l.Debug().
			Time("time", benchTime).
			Str("actor", "vram-residency").
			Str("action", "seal").
			Str("target", "shard-abc123").
			Str("human", benchHuman).
			Str("correlation_id", "req-xyz").
			Float64("duration_ms", 2).
			Int("device_index", 0).
			Str("worker_id", "worker-gpu-0").
			Msg("")
	}
}

// cleanSentence is a 100-byte human sentence with no secret.
const cleanSentence = "Verifies model shard 'shard-abc123' on GPU 0: 1024 chunks of 64 KiB match the sealed tree (42 ms) ok."

var sinkScrub string

// BenchmarkScrubClean scrubs a clean 100-byte sentence.
func BenchmarkScrubClean(b *testing.B) {
	if len(cleanSentence) != 100 {
		b.Fatalf("len(cleanSentence) = %d, want 100", len(cleanSentence))
	}
	b.SetBytes(int64(len(cleanSentence)))
	b.ReportAllocs()
	for b.Loop() {
		sinkScrub, _ = narration.Scrub(cleanSentence)
	}
}

// countHandler is a slog.Handler that does the least work a real handler
// does: it reads every attribute.
type countHandler struct{ n int }

func (h *countHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *countHandler) Handle(_ context.Context, r slog.Record) error {
	r.Attrs(func(a slog.Attr) bool { h.n += len(a.Key); return true })
	return nil
}
func (h *countHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *countHandler) WithGroup(string) slog.Handler      { return h }

func slogHandlers() map[string]func() slog.Handler {
	return map[string]func() slog.Handler{
		"JSONHandler": func() slog.Handler { return slog.NewJSONHandler(io.Discard, nil) },
		"nop":         func() slog.Handler { return &countHandler{} },
	}
}

// BenchmarkEmitSlog emits the event of BenchmarkEmitJSON through SlogSink.
func BenchmarkEmitSlog(b *testing.B) {
	for name, newH := range slogHandlers() {
		b.Run(name, func(b *testing.B) {
			n := narration.New(narration.Options{Sinks: []narration.Sink{narration.NewSlogSink(newH())}})
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				n.Emit(ctx, narration.Event{
					Time:          benchTime,
					Level:         slog.LevelInfo,
					Actor:         "vram-residency",
					Action:        "seal",
					Target:        "shard-abc123",
					Human:         benchHuman,
					CorrelationID: "req-xyz",
					Duration:      2 * time.Millisecond,
					Device:        narration.GPU(0, ""),
					WorkerID:      "worker-gpu-0",
				})
			}
		})
	}
}

// BenchmarkSlogLogAttrs is the baseline of BenchmarkEmitSlog: the same
// handler called through slog.Logger.LogAttrs with the same attributes.
func BenchmarkSlogLogAttrs(b *testing.B) {
	for name, newH := range slogHandlers() {
		b.Run(name, func(b *testing.B) {
			l := slog.New(newH())
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				l.LogAttrs(ctx, slog.LevelInfo, benchHuman,
					slog.String("actor", "vram-residency"),
					slog.String("action", "seal"),
					slog.String("target", "shard-abc123"),
					slog.String("correlation_id", "req-xyz"),
					slog.Duration("duration", 2*time.Millisecond),
					slog.Int("device_index", 0),
					slog.String("worker_id", "worker-gpu-0"),
				)
			}
		})
	}
}
