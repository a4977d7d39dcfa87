package audit

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"
)

func benchEvent(i int) Event {
	return Event{Type: "shard_verified", Severity: SeverityInfo, CorrelationID: "0af7651916cd43dd8448eb211c80319c",
		Fields: []Field{String("shard_id", "llama-3-70b/3"), Int("chunks", 4096), Bytes("size", 17179869184),
			Digest("root", [32]byte{byte(i)}), Bool("ok", true)}}
}

// naiveWrite is the baseline: one write and one fsync per record.
func naiveWrite(b *testing.B, dir string, line []byte, n int) time.Duration {
	f, err := os.OpenFile(filepath.Join(dir, "naive.ndjson"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	start := time.Now()
	for range n {
		if _, err := f.Write(line); err != nil {
			b.Fatal(err)
		}
		if err := f.Sync(); err != nil {
			b.Fatal(err)
		}
	}
	return time.Since(start)
}

// BenchmarkDurableThroughput compares, in the same run and directory, 8
// concurrent appenders with group commit (every batch fsynced, timed until
// Flush returns: all records durable) against the naive loop.
func BenchmarkDurableThroughput(b *testing.B) {
	dir := b.TempDir()
	line := make([]byte, 0, 600)
	{
		e := benchEvent(0)
		body := appendBody(nil, &e, appendFixed(nil, "vramseal", "node", "w"))
		var k [32]byte
		s := sealer{ver: formatVersion, logID: "0123456789abcdef", mac: newMAC(&k)}
		line = s.appendLine(line, 1, time.Now(), body, &genesis)
	}
	o := Options{FsyncInterval: -1, QueueSize: 8192, Service: "vramseal"}
	if _, err := Init(filepath.Join(dir, "log"), o); err != nil {
		b.Fatal(err)
	}
	l, err := Open(filepath.Join(dir, "log"), o)
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close(context.Background())
	const perRound, naivePerRound = 40000, 300
	var naive, group time.Duration
	var naiveN, groupN int
	ctx := context.Background()
	b.SetBytes(int64(len(line)) * perRound)
	for b.Loop() {
		naive += naiveWrite(b, dir, line, naivePerRound)
		naiveN += naivePerRound
		start := time.Now()
		var wg sync.WaitGroup
		for g := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range perRound / 8 {
					if _, err := l.Append(ctx, benchEvent(g+i)); err != nil {
						b.Error(err)
						return
					}
				}
			}()
		}
		wg.Wait()
		if err := l.Flush(ctx); err != nil {
			b.Fatal(err)
		}
		group += time.Since(start)
		groupN += perRound
	}
	naiveRate := float64(naiveN) / naive.Seconds()
	groupRate := float64(groupN) / group.Seconds()
	s := l.Stats()
	b.ReportMetric(naiveRate, "naive-rec/s")
	b.ReportMetric(groupRate, "group-rec/s")
	b.ReportMetric(groupRate/naiveRate, "x-naive")
	b.ReportMetric(float64(s.Written)/float64(max(s.Syncs, 1)), "rec/fsync")
}

func percentile(d []time.Duration, p float64) time.Duration {
	slices.Sort(d)
	return d[min(len(d)-1, int(float64(len(d))*p))]
}

// BenchmarkAppendQueued measures the latency of a non-critical Append
// (validation, encoding, enqueue), below the queue's capacity.
func BenchmarkAppendQueued(b *testing.B) {
	_, _, l := newLog(b, Options{QueueSize: 1 << 16})
	defer l.Close(context.Background())
	ctx := context.Background()
	lat := make([]time.Duration, 0, 1<<20)
	i := 0
	for b.Loop() {
		e := benchEvent(i)
		start := time.Now()
		if _, err := l.Append(ctx, e); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(start))
		i++
		if i%8192 == 0 {
			b.StopTimer()
			l.Flush(ctx) // keep the queue below capacity: this measures queuing, not backpressure
			b.StartTimer()
		}
	}
	b.ReportMetric(float64(percentile(lat, 0.50).Nanoseconds()), "p50-ns")
	b.ReportMetric(float64(percentile(lat, 0.99).Nanoseconds()), "p99-ns")
}

// BenchmarkAppendCritical measures a durable Append against a bare
// write+fsync of a record-sized line on the same disk, in the same run.
func BenchmarkAppendCritical(b *testing.B) {
	dir, _, l := newLog(b, Options{})
	defer l.Close(context.Background())
	ctx := context.Background()
	f, err := os.OpenFile(filepath.Join(filepath.Dir(dir), "fsync.bin"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	line := make([]byte, 560)
	var crit, fsync []time.Duration
	i := 0
	for b.Loop() {
		start := time.Now()
		f.Write(line)
		f.Sync()
		fsync = append(fsync, time.Since(start))
		e := benchEvent(i)
		e.Severity = SeverityCritical
		start = time.Now()
		if _, err := l.Append(ctx, e); err != nil {
			b.Fatal(err)
		}
		crit = append(crit, time.Since(start))
		i++
	}
	b.ReportMetric(float64(percentile(fsync, 0.50).Microseconds()), "fsync-p50-us")
	b.ReportMetric(float64(percentile(fsync, 0.99).Microseconds()), "fsync-p99-us")
	b.ReportMetric(float64(percentile(crit, 0.50).Microseconds()), "critical-p50-us")
	b.ReportMetric(float64(percentile(crit, 0.99).Microseconds()), "critical-p99-us")
}

// BenchmarkVerify measures streaming verification with MACs of 200,000
// records; run with -cpu 1 for the one-core figure. Building the log is
// not timed (b.Loop starts the timer).
func BenchmarkVerify(b *testing.B) {
	var v struct {
		dir     string
		vk      *VerificationKey
		records int
		bytes   int64
	}
	v.dir = filepath.Join(b.TempDir(), "log")
	o := Options{QueueSize: 1 << 14, SegmentMaxBytes: 32 << 20}
	var err error
	if v.vk, err = Init(v.dir, o); err != nil {
		b.Fatal(err)
	}
	l, err := Open(v.dir, o)
	if err != nil {
		b.Fatal(err)
	}
	v.records = 200000
	for i := range v.records {
		if _, err := l.Append(context.Background(), benchEvent(i)); err != nil {
			b.Fatal(err)
		}
	}
	l.Close(context.Background())
	m, _ := loadManifest(OSFS{}, v.dir)
	for _, s := range m.Segments {
		fi, _ := os.Stat(filepath.Join(v.dir, s.Name))
		v.bytes += fi.Size()
	}
	pk := l.PublicKey()
	b.SetBytes(v.bytes)
	var total, public time.Duration
	n := 0
	for b.Loop() {
		start := time.Now()
		rep, err := Verify(context.Background(), v.dir, VerifyOptions{Key: v.vk})
		if err != nil || rep.Records != uint64(v.records) {
			b.Fatalf("Verify = %+v, %v", rep, err)
		}
		total += time.Since(start)
		start = time.Now()
		rep, err = Verify(context.Background(), v.dir, VerifyOptions{PublicKey: pk})
		if err != nil || rep.Records != uint64(v.records) || rep.SignedSize != uint64(v.records) {
			b.Fatalf("Verify(public key) = %+v, %v", rep, err)
		}
		public += time.Since(start)
		n++
	}
	b.ReportMetric(float64(v.records*n)/total.Seconds(), "rec/s")
	b.ReportMetric(float64(v.records*n)/public.Seconds(), "public-key-rec/s")
}

// BenchmarkCheckInclusion measures checking one inclusion proof offline
// in a log of 100,000 records (signature, record parse, audit path).
func BenchmarkCheckInclusion(b *testing.B) {
	dir, _, l := newLog(b, Options{QueueSize: 1 << 14})
	for i := range 100000 {
		if _, err := l.Append(context.Background(), benchEvent(i)); err != nil {
			b.Fatal(err)
		}
	}
	pk := l.PublicKey()
	l.Close(context.Background())
	p, err := ProveInclusion(context.Background(), dir, 54321, 0, ReadOptions{})
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, _, err := CheckInclusion(p, pk, nil); err != nil {
			b.Fatal(err)
		}
	}
}
