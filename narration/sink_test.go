package narration_test

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/slogtest"
	"time"

	"github.com/vramseal/vramseal/narration"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// goldenEvents cover every field, an empty event, and hostile text.
func goldenEvents() []narration.Event {
	return []narration.Event{
		{
			Time: t0, Level: slog.LevelInfo, Actor: "vram-residency", Action: "seal", Target: "shard-abc123",
			Human:         "Sealed model shard 'shard-abc123' in 1.0 MiB VRAM on GPU 0 (2ms)",
			CorrelationID: "req-xyz", Duration: 2 * time.Millisecond, Device: narration.GPU(0, ""), WorkerID: "worker-gpu-0",
		},
		{
			Time: t0.Add(1500 * time.Microsecond), Level: slog.LevelError, Actor: "vram-residency", Action: "verify", Target: "shard-abc123",
			Human:         "Finds 2 of 1024 chunks of shard 'shard-abc123' changed on GPU 1; stops worker",
			CorrelationID: "req-1", TraceID: "4bf92f3577b34da6a3ce929d0e0e4736", SpanID: "00f067aa0ba902b7",
			Duration: 41500 * time.Microsecond, Device: narration.GPU(1, "GPU-5fa1c3d2-0000-4000-8000-000000000001"),
			WorkerID: "worker-gpu-1", ErrorKind: "integrity", Error: "vram: chunks 3, 7 differ from the seal",
			Attrs: narration.Attrs{narration.Bytes("shard_bytes", 1<<26), narration.Int("bad_chunks", 2),
				narration.Bool("sampled", false), narration.Dur("hash_ms", 40*time.Millisecond)},
		},
		{Time: t0, Level: slog.LevelDebug},
		{
			Time: t0, Level: slog.LevelWarn + 2, Actor: "evil actor", Action: "seal\nINFO forged", Target: "\x1b[31mred\x1b[0m",
			Human:    "line one\nline two \x1b[2J \u202eevil\\ \xff",
			WorkerID: "w=1", Attrs: narration.Attrs{narration.Str("note", `say "hi"`), narration.Str("empty", "")},
		},
	}
}

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("output differs from %s (run go test -update if the change is intended)\ngot:\n%s\nwant:\n%s", path, got, want)
	}
}

func render(t *testing.T, s narration.Sink) {
	t.Helper()
	for _, e := range goldenEvents() {
		if err := s.Handle(context.Background(), e); err != nil {
			t.Fatalf("Handle: %v", err)
		}
	}
}

func TestJSONSinkGolden(t *testing.T) {
	var b bytes.Buffer
	render(t, narration.NewJSONSink(&b))
	golden(t, "json.golden", b.Bytes())
	for i, line := range strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Errorf("line %d is not JSON: %v\n%s", i+1, err, line)
		}
	}
}

func TestConsoleSinkGolden(t *testing.T) {
	for _, tt := range []struct {
		name  string
		color bool
	}{{"console.golden", false}, {"console-color.golden", true}} {
		t.Run(tt.name, func(t *testing.T) {
			var b bytes.Buffer
			render(t, narration.NewConsoleSink(&b, narration.ConsoleOptions{Color: tt.color}))
			golden(t, tt.name, b.Bytes())
			if !tt.color && strings.Contains(b.String(), "\x1b") {
				t.Errorf("plain console output holds an escape character")
			}
			// Only the sink's own line breaks: 3 per event with fields, 2 without.
			if got := strings.Count(b.String(), "\n"); got != 3+3+1+3 {
				t.Errorf("console output has %d lines, want 10:\n%s", got, b.String())
			}
		})
	}
}

func TestSlogSinkGolden(t *testing.T) {
	var b bytes.Buffer
	render(t, narration.NewSlogSink(slog.NewJSONHandler(&b, &slog.HandlerOptions{Level: slog.LevelDebug})))
	golden(t, "slog.golden", b.Bytes())
}

func TestUseColor(t *testing.T) {
	var b bytes.Buffer
	if narration.UseColor(&b, "") {
		t.Errorf("UseColor(buffer) = true, want false")
	}
	f, err := os.CreateTemp(t.TempDir(), "out")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if narration.UseColor(f, "") {
		t.Errorf("UseColor(regular file) = true, want false")
	}
	if tty, err := os.OpenFile("/dev/tty", os.O_WRONLY, 0); err == nil {
		defer tty.Close()
		if !narration.UseColor(tty, "") || narration.UseColor(tty, "1") {
			t.Errorf("UseColor(tty, NO_COLOR unset / set) wrong")
		}
	}
}

type ctxKey struct{}

// ctxHandler records the context it is given.
type ctxHandler struct {
	slog.Handler
	got *context.Context
}

func (h ctxHandler) Handle(ctx context.Context, r slog.Record) error {
	*h.got = ctx
	return h.Handler.Handle(ctx, r)
}

func TestSlogSinkPassesContext(t *testing.T) {
	var got context.Context
	var b bytes.Buffer
	n := narration.New(narration.Options{Sinks: []narration.Sink{
		narration.NewSlogSink(ctxHandler{slog.NewJSONHandler(&b, nil), &got}),
	}})
	ctx := context.WithValue(context.Background(), ctxKey{}, "v")
	n.Emit(ctx, &narration.Event{Action: "seal"})
	if got == nil || got.Value(ctxKey{}) != "v" {
		t.Errorf("handler got context %v, want the one given to Emit", got)
	}
	n.Emit(narration.WithCorrelationID(ctx, "r"), &narration.Event{Level: slog.LevelDebug}) // disabled in handler
	if strings.Count(b.String(), "\n") != 1 {
		t.Errorf("disabled level reached the handler:\n%s", b.String())
	}
}

// TestSlogSinkConformance runs testing/slogtest against a slog.Handler that
// turns each record into an event (groups as dotted keys) and sends it
// through a Narrator and SlogSink to slog's JSON handler. It shows that the
// adapter passes time, level, message and attributes through unchanged.
func TestSlogSinkConformance(t *testing.T) {
	var buf bytes.Buffer
	newHandler := func(t *testing.T) slog.Handler {
		buf.Reset()
		n := narration.New(narration.Options{
			Level: slog.LevelDebug,
			// A zero record time must reach the handler as zero.
			Clock: func() time.Time { return time.Time{} },
			Sinks: []narration.Sink{narration.NewSlogSink(slog.NewJSONHandler(&buf, nil))},
		})
		return &bridge{n: n}
	}
	result := func(t *testing.T) map[string]any {
		var m map[string]any
		if err := json.Unmarshal(buf.Bytes(), &m); err != nil {
			t.Fatalf("%v: %s", err, buf.Bytes())
		}
		return nest(m)
	}
	slogtest.Run(t, newHandler, result)
}

// bridge is a slog.Handler that emits records as narration events. Attribute
// values become strings or integers; groups become dotted key prefixes.
type bridge struct {
	n      *narration.Narrator
	prefix string
	attrs  []narration.Attr
}

func (b *bridge) Enabled(_ context.Context, l slog.Level) bool { return b.n.Enabled(l, "") }

func (b *bridge) Handle(ctx context.Context, r slog.Record) error {
	e := narration.Event{Time: r.Time, Level: r.Level, Human: r.Message}
	attrs := append([]narration.Attr(nil), b.attrs...)
	r.Attrs(func(a slog.Attr) bool {
		attrs = flatten(attrs, b.prefix, a)
		return true
	})
	copy(e.Attrs[:], attrs)
	b.n.Emit(ctx, &e)
	return nil
}

func (b *bridge) WithAttrs(as []slog.Attr) slog.Handler {
	c := *b
	c.attrs = append([]narration.Attr(nil), b.attrs...)
	for _, a := range as {
		c.attrs = flatten(c.attrs, b.prefix, a)
	}
	return &c
}

func (b *bridge) WithGroup(name string) slog.Handler {
	c := *b
	c.prefix = b.prefix + name + "."
	return &c
}

func flatten(out []narration.Attr, prefix string, a slog.Attr) []narration.Attr {
	v := a.Value.Resolve()
	if v.Kind() == slog.KindGroup {
		p := prefix
		if a.Key != "" {
			p += a.Key + "."
		}
		for _, g := range v.Group() {
			out = flatten(out, p, g)
		}
		return out
	}
	if a.Key == "" {
		return out
	}
	if v.Kind() == slog.KindInt64 {
		return append(out, narration.Int(prefix+a.Key, v.Int64()))
	}
	return append(out, narration.Str(prefix+a.Key, v.String()))
}

// nest turns dotted keys back into nested maps, as slogtest expects groups.
func nest(m map[string]any) map[string]any {
	out := map[string]any{}
	for k, v := range m {
		parts := strings.Split(k, ".")
		cur := out
		for _, p := range parts[:len(parts)-1] {
			next, ok := cur[p].(map[string]any)
			if !ok {
				next = map[string]any{}
				cur[p] = next
			}
			cur = next
		}
		cur[parts[len(parts)-1]] = v
	}
	return out
}
