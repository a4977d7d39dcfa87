package replicate

import (
	"context"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/vramseal/vramseal/audit"
)

// perf skips a heavy benchmark unless VRAMSEAL_PERF=1.
func perf(b *testing.B) {
	if os.Getenv("VRAMSEAL_PERF") != "1" {
		b.Skip("set VRAMSEAL_PERF=1 to run the replication benchmarks")
	}
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}

// durableRound appends n records from 8 goroutines and returns records/s
// until Flush says all are durable.
func durableRound(b *testing.B, l *audit.Log, n int) float64 {
	ctx := context.Background()
	start := time.Now()
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range n / 8 {
				if _, err := l.Append(ctx, event(g*n+i)); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := l.Flush(ctx); err != nil {
		b.Fatal(err)
	}
	return float64(n) / time.Since(start).Seconds()
}

func benchLog(b *testing.B, node string) *audit.Log {
	return openLog(b, audit.Options{Node: node, FsyncInterval: -1})
}

// BenchmarkReplication measures, in the same run (medians over the
// rounds): durable throughput of a log with replication on against one
// without (ratio_on_off, the median of the ratios of pairs of rounds run
// one after the other, target >= 0.9; the NATS server runs in this
// process, on the same cores, and the shipper keeps up during a round,
// not after it); records/s reaching the stream on
// loopback from a backlog (stream_records/s, target >= 50k); and the lag
// from Append to the stream's acknowledgement at 10k records/s
// (lag_p99_ms, target < 1000).
func BenchmarkReplication(b *testing.B) {
	perf(b)
	srv := runServer(b, b.TempDir(), 0, nil, nil, "s1")
	conn := ConnOptions{URLs: []string{srv.ClientURL()}}
	// n records per backlog; a durable round appends 2n, a few tenths of
	// a second, in which the shipper (faster than the appends) keeps up.
	const n = 40000
	off, on := benchLog(b, "off"), benchLog(b, "on")
	onShipper := startShipper(b, on, Options{ConnOptions: conn, Node: "on"})
	var offRate, onRate, ratio, streamRate, lagP99 []float64
	round := 0
	for b.Loop() {
		// Pairs of rounds, each pair's ratio on its own: the rate of
		// fsyncs here drifts by 2x over seconds, which a pair shares.
		for range 4 {
			round++
			var offR, onR float64
			// The order alternates, so that neither log always runs on
			// a machine warmed (or loaded) by the other.
			if round%2 == 1 {
				offR, onR = durableRound(b, off, 2*n), durableRound(b, on, 2*n)
			} else {
				onR = durableRound(b, on, 2*n)
				offR = durableRound(b, off, 2*n)
			}
			offRate, onRate, ratio = append(offRate, offR), append(onRate, onR), append(ratio, onR/offR)
			for onShipper.Status().Acked < on.DurableSeq() {
				time.Sleep(time.Millisecond) // the shipper catches up before the next pair
			}
		}

		// A backlog of n durable records, then a shipper: time until the
		// stream has acknowledged them all.
		streamRate = append(streamRate, backlogRate(b, conn, "backlog"+strconv.Itoa(round), n))

		lagP99 = append(lagP99, lagRound(b, conn, "lag"+strconv.Itoa(round)))
	}
	b.Logf("durable records/s per round: off %.0f, on %.0f; ratios %.2f", offRate, onRate, ratio)
	b.ReportMetric(median(offRate), "off_records/s")
	b.ReportMetric(median(onRate), "on_records/s")
	b.ReportMetric(median(ratio), "ratio_on_off")
	b.ReportMetric(median(streamRate), "stream_records/s")
	b.ReportMetric(median(lagP99), "lag_p99_ms")
}

// backlogRate writes a backlog of n durable records, then starts a
// shipper and returns records/s until the stream has acknowledged them
// all.
func backlogRate(b *testing.B, conn ConnOptions, node string, n int) float64 {
	bl := benchLog(b, node)
	durableRound(b, bl, n)
	s, err := New(bl, Options{ConnOptions: conn, Node: node})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer func() { cancel(); s.Close() }()
	start := time.Now()
	go s.Run(ctx)
	for s.Status().Acked < bl.DurableSeq() {
		time.Sleep(time.Millisecond)
	}
	return float64(bl.DurableSeq()) / time.Since(start).Seconds()
}

// lagRound appends 10 records every millisecond (10k/s) for 2 s to a
// replicated log and returns the p99, in ms, of the time from each Append
// to the first moment its record was seen acknowledged by the stream.
func lagRound(b *testing.B, conn ConnOptions, node string) float64 {
	l := benchLog(b, node)
	l.Close(context.Background())
	dir := l.Dir()
	o := audit.Options{Node: node} // the daemon's defaults: fsync every 100 ms
	l, err := audit.Open(dir, o)
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close(context.Background())
	s, err := New(l, Options{ConnOptions: conn, Node: node})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer func() { cancel(); s.Close() }()
	go s.Run(ctx)
	base := l.Stats().LastSeq
	const total = 20000
	appended := make([]time.Time, total)
	acked := make([]time.Time, total)
	stop := make(chan struct{})
	watch := make(chan struct{})
	go func() {
		defer close(watch)
		seen := uint64(0)
		for {
			a := s.Status().Acked
			now := time.Now()
			for ; seen < a-min(a, base) && seen < total; seen++ {
				acked[seen] = now
			}
			if seen == total {
				return
			}
			select {
			case <-stop:
				return
			case <-time.After(200 * time.Microsecond):
			}
		}
	}()
	tick := time.NewTicker(time.Millisecond)
	for i := 0; i < total; i += 10 {
		<-tick.C
		for j := range 10 {
			appended[i+j] = time.Now()
			if _, err := l.Append(ctx, event(i+j)); err != nil {
				b.Fatal(err)
			}
		}
	}
	tick.Stop()
	select {
	case <-watch:
	case <-time.After(30 * time.Second):
		close(stop)
		b.Fatal("the records did not all reach the stream within 30 s")
	}
	lags := make([]float64, total)
	for i := range lags {
		lags[i] = float64(acked[i].Sub(appended[i])) / float64(time.Millisecond)
	}
	slices.Sort(lags)
	return lags[total*99/100]
}
