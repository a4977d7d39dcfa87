package narration_test

import (
	"context"
	"flag"
	"io"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/vramseal/vramseal/narration"
)

// The benchmarks come in pairs: narration and a baseline writing the same
// fields in the same run. TestBenchmarkRatios (with -bench-ratios) prints the
// ratios the performance targets are stated in.

const benchHuman = "Sealed model shard 'shard-abc123' in 1.0 MiB VRAM on GPU 0 (2ms)"

var benchTime = time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)

// BenchmarkEmitJSON emits an enabled event with 8 fields (actor, action,
// target, human, correlation ID, duration, device, worker) to a JSON sink
// writing to io.Discard.
func BenchmarkEmitJSON(b *testing.B) {
	n := narration.New(narration.Options{Sinks: []narration.Sink{narration.NewJSONSink(io.Discard)}})
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		n.Emit(ctx, &narration.Event{
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
			Int("gpu", 0).
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
		n.Emit(ctx, &narration.Event{
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
			Int("gpu", 0).
			Str("worker_id", "worker-gpu-0").
			Msg("")
	}
}

// cleanSentence is a 100-byte human sentence with no secret.
const cleanSentence = "Verifies model shard 'shard-abc123' on GPU 0: 1024 chunks of 64 KiB match the sealed tree (42 ms) ok"

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
		b.Run(name, func(b *testing.B) { benchEmitSlog(b, newH()) })
	}
}

func benchEmitSlog(b *testing.B, h slog.Handler) {
	n := narration.New(narration.Options{Sinks: []narration.Sink{narration.NewSlogSink(h)}})
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		n.Emit(ctx, &narration.Event{
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

// BenchmarkSlogLogAttrs is the baseline of BenchmarkEmitSlog: the same
// handler called through slog.Logger.LogAttrs with the same attributes.
func BenchmarkSlogLogAttrs(b *testing.B) {
	for name, newH := range slogHandlers() {
		b.Run(name, func(b *testing.B) { benchSlogLogAttrs(b, newH()) })
	}
}

func benchSlogLogAttrs(b *testing.B, h slog.Handler) {
	l := slog.New(h)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		l.LogAttrs(ctx, slog.LevelInfo, benchHuman,
			slog.String("actor", "vram-residency"),
			slog.String("action", "seal"),
			slog.String("target", "shard-abc123"),
			slog.String("correlation_id", "req-xyz"),
			slog.Duration("duration", 2*time.Millisecond),
			slog.Int("gpu", 0),
			slog.String("worker_id", "worker-gpu-0"),
		)
	}
}

var ratioRounds = flag.Int("ratios", 0, "run TestBenchmarkRatios with this many interleaved rounds")

// TestBenchmarkRatios runs each benchmark and its baseline alternately for
// -ratios rounds (so that load on the machine hits both alike) and prints
// the median ns/op of each, their ratio and the target. It fails if a target
// is missed or an event allocates.
//
//	go test -run TestBenchmarkRatios -ratios 5 ./narration/
func TestBenchmarkRatios(t *testing.T) {
	if *ratioRounds <= 0 {
		t.Skip("run with -ratios N")
	}
	type pair struct {
		name      string
		bench     func(*testing.B)
		baseline  func(*testing.B) // nil: compare with maxExtra instead
		maxRatio  float64
		maxExtraN float64
		zeroAlloc bool
	}
	slogJSON := func(f func(*testing.B, slog.Handler)) func(*testing.B) {
		return func(b *testing.B) { f(b, slog.NewJSONHandler(io.Discard, nil)) }
	}
	pairs := []pair{
		{"enabled 8-field event to discarded JSON sink vs zerolog", BenchmarkEmitJSON, BenchmarkZerologJSON, 1.5, 0, true},
		{"disabled event vs disabled zerolog", BenchmarkEmitDisabled, BenchmarkZerologDisabled, 1.5, 0, true},
		{"scrub clean 100-byte sentence (ns extra)", BenchmarkScrubClean, nil, 0, 200, true},
		{"slog adapter vs LogAttrs, slog.JSONHandler", slogJSON(benchEmitSlog), slogJSON(benchSlogLogAttrs), 1.1, 0, false},
	}
	for _, p := range pairs {
		var ns, base, ratios []float64
		for range *ratioRounds {
			r := testing.Benchmark(p.bench)
			if a := r.AllocsPerOp(); a != 0 && p.zeroAlloc {
				t.Errorf("%s: %d allocs/op, want 0", p.name, a)
			}
			ns = append(ns, float64(r.T)/float64(r.N))
			if p.baseline != nil {
				rb := testing.Benchmark(p.baseline)
				base = append(base, float64(rb.T)/float64(rb.N))
				ratios = append(ratios, ns[len(ns)-1]/base[len(base)-1])
			}
		}
		m := median(ns)
		if p.baseline == nil {
			t.Logf("%-56s %7.1f ns/op (target <= %.0f ns)", p.name, m, p.maxExtraN)
			if m > p.maxExtraN {
				t.Errorf("%s: %.1f ns, want <= %.0f", p.name, m, p.maxExtraN)
			}
			continue
		}
		// The median of per-round ratios: each round runs the pair back to
		// back, so a change of load between rounds cancels out.
		mr := median(ratios)
		t.Logf("%-56s %7.1f vs %7.1f ns/op, median ratio %.2fx (target <= %.1fx)", p.name, m, median(base), mr, p.maxRatio)
		if mr > p.maxRatio {
			t.Errorf("%s: ratio %.2f, want <= %.1f", p.name, mr, p.maxRatio)
		}
	}
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
