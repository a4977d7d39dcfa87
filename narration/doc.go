// Package narration records what a program does for the people who run and
// develop it: structured events with a one-sentence human summary, carried
// through requests by correlation IDs, scrubbed of secrets, and written as
// console text for people and JSON lines for machines. It is built beside
// log/slog and can feed any [slog.Handler] through [SlogSink].
//
// Narration is not an audit log: sinks may fail or be slow and events are
// then lost (and counted); durable, tamper-evident records belong to package
// audit.
//
// # Events
//
// An [Event] has a fixed schema and is handed to [Narrator.Emit] by pointer;
// Emit neither changes nor keeps it. A [Narrator] filters it by level and
// action before anything else happens ([Narrator.Enabled]), then fills what
// the event leaves empty: the time from its clock, the actor from its
// options, the correlation ID and the trace context from the context. It
// scrubs secrets from the human sentence and the error text
// ([Scrub]), cuts the human sentence to [MaxHumanRunes] runes, and hands the
// event to each sink. No sink and no test capture ever sees the event
// before scrubbing. A nil *Narrator discards everything.
//
// # JSON lines
//
// [JSONSink] writes one JSON object (RFC 8259) per event followed by "\n",
// in UTF-8, with strings escaped so that the line holds no raw control
// character. Members appear in this order; all but time and level are left
// out when empty, zero or unset:
//
//	time            string, RFC 3339 in UTC with up to 9 fraction digits
//	level           string: DEBUG, INFO, WARN, ERROR, or a level between them
//	                written as slog does ("INFO+2")
//	actor           string
//	action          string
//	target          string
//	human           string, at most 100 runes
//	correlation_id  string
//	trace_id        string, 32 lower-case hex digits
//	span_id         string, 16 lower-case hex digits
//	duration_ms     number, milliseconds with fraction
//	gpu             integer, the GPU's index, present when the device is set
//	gpu_uuid        string
//	worker_id       string
//	error_kind      string
//	error           string
//	<attrs>         one member per attribute, in order: integers and byte
//	                counts as integers, strings as strings, booleans as
//	                true/false, durations as numbers of milliseconds
//
// Example:
//
//	{"time":"2026-11-26T10:00:00Z","level":"INFO","actor":"vram-residency","action":"seal","target":"shard-abc123","human":"Sealed model shard 'shard-abc123' in 1.0 MiB VRAM on GPU 0 (2ms)","correlation_id":"req-xyz","duration_ms":2,"gpu":0,"worker_id":"worker-gpu-0","bytes":1048576}
//
// # Console
//
// [ConsoleSink] writes two or three lines per event:
//
//	2026-11-26T10:00:00Z INFO vram-residency seal shard-abc123
//	  Sealed model shard 'shard-abc123' in 1.0 MiB VRAM on GPU 0 (2ms)
//	  worker_id=worker-gpu-0 correlation_id=req-xyz gpu=0 duration=2ms bytes=1.0MiB
//
// The first line holds the time (RFC 3339, UTC, seconds), the level, the
// actor, the action and the target ("-" when empty). The second holds the
// human sentence and is left out when empty. The third holds the other
// fields as key=value pairs, worker_id first and then in the order of the
// JSON output, and is left out when there are none. It is for people: the
// duration is written duration=<d> and duration attributes as
// [FormatDuration] writes them ("850µs", "12.3ms", "1.52s"), byte counts as
// [FormatBytes] writes them without the space ("1.0MiB"); the JSON output
// keeps the exact numbers. A value that is not one printable token is
// written Go quoted; unprintable runes in the human sentence are written as
// Go escapes.
//
// # Correlation
//
// [Middleware] gives every HTTP request a valid correlation ID (from
// X-Correlation-ID, X-Request-ID or a W3C traceparent header, or freshly
// generated) and echoes it in X-Correlation-ID; [RoundTripper] sends it on
// outgoing requests. [ValidCorrelationID] states what an ID may hold.
//
// Package narrationtest captures events in tests.
package narration
