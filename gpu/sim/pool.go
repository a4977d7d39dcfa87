package sim

import (
	"math"
	"runtime"
	"runtime/metrics"
	"sync/atomic"
	"time"
)

// The helpers of LeafHashes.
//
// A hash call that uses several cores shares its batches with helper
// goroutines. Starting a goroutine on an idle core means waking that core,
// and on a virtual machine the wake takes from tens to hundreds of
// microseconds: as long as the 16 samples of an execute gate take to hash,
// so that without help the caller's core would hash most of a gate alone.
// So when calls come close together (within the spin window,
// [DefaultSpin], of the previous one's end: an engine calling the gate
// back to back), a helper that has finished stays on its core, polling for
// the next call, for up to the spin window. While it polls it lets any
// other thread waiting for its core run first (sched_yield, every 64
// polls): the consumer's process answering the gate must not wait for
// the poller's time slice to end. It gives the core up when other
// goroutines of this process have waited [yieldAfter] for one, and when a
// call comes that has all the helpers it can use. The most it costs is one spin
// window of each helper's core after the last call of a close sequence.
//
// The caller starts its helpers all the same: one that finds the call
// taken by polling helpers ends at once, and a polling helper that has
// lost its core to another process does not keep the call from getting
// help (once a helper has joined a call, the call waits for it to finish
// the batch it took). A device whose Spin is negative leaves no helper
// polling after its calls; helpers polling after other devices' calls
// may still join them.

// A job is one hash call's work, shared by its caller and its helpers.
type job struct {
	work func() // takes batches until none is left
	want int32  // helpers the job can use
	// taken counts the places claimed (at most want succeed).
	taken atomic.Int32
	// state is closedBit once the caller has finished, plus the helpers
	// working on the job.
	state atomic.Int64
	done  chan struct{} // closed by the last helper to leave a closed job
}

const closedBit = 1 << 62

// yieldAfter is how long a polling helper lets other goroutines wait for
// a core before it gives its own up.
const yieldAfter = 200 * time.Microsecond

// join adds a helper to j unless the caller has finished or the job has
// all the helpers it can use.
func (j *job) join() bool {
	if j.taken.Add(1) > j.want {
		return false
	}
	for {
		s := j.state.Load()
		if s&closedBit != 0 {
			return false
		}
		if j.state.CompareAndSwap(s, s+1) {
			return true
		}
	}
}

func (j *job) leave() {
	if j.state.Add(-1) == closedBit {
		close(j.done)
	}
}

// finish closes j to new helpers and waits for those on it.
func (j *job) finish() {
	if j.state.Or(closedBit)&^closedBit != 0 {
		<-j.done
	}
}

// pool is the process's helpers: cores are shared by every device.
var pool struct {
	current atomic.Pointer[job] // the latest job, for polling helpers
	polled  atomic.Uint64       // jobs joined by a polling helper
	lastEnd atomic.Int64        // when the last job ended, in ns since clockBase
	// The count of goroutines waiting for a core, sampled at most every
	// sampleEvery by one of the polling helpers for all of them: reading
	// it takes the scheduler's lock.
	waiting   atomic.Bool
	sampledAt atomic.Int64
	sampling  atomic.Bool
	runnable  [1]metrics.Sample // used only by the helper holding sampling
}

// sampleEvery bounds how often the polling helpers read the scheduler's
// count of waiting goroutines.
const sampleEvery = 20 * time.Microsecond

func init() {
	pool.runnable[0].Name = "/sched/goroutines/runnable:goroutines"
	pool.lastEnd.Store(math.MinInt64 / 2) // no job yet: the first is not close to one
}

var clockBase = time.Now()

func nanotime() int64 { return int64(time.Since(clockBase)) }

// othersWaiting reports whether goroutines were waiting for a core at the
// latest sample, taking a new one when that is older than sampleEvery.
func othersWaiting(now int64) bool {
	if now-pool.sampledAt.Load() >= int64(sampleEvery) && pool.sampling.CompareAndSwap(false, true) {
		metrics.Read(pool.runnable[:])
		v := pool.runnable[0].Value
		pool.waiting.Store(v.Kind() == metrics.KindUint64 && v.Uint64() > 0)
		pool.sampledAt.Store(now)
		pool.sampling.Store(false)
	}
	return pool.waiting.Load()
}

// run does j's work on the calling goroutine and on up to helpers others,
// and returns once all of it is done. The helpers poll for up to spin
// after it when the job started within spin of the previous one's end.
func run(j *job, helpers int, spin time.Duration) {
	j.want = int32(helpers)
	j.done = make(chan struct{})
	// With one P a polling helper would only keep the caller from it.
	dense := spin > 0 && nanotime()-pool.lastEnd.Load() < int64(spin) && runtime.GOMAXPROCS(0) > 1
	pool.current.Store(j)
	for range helpers {
		go func() {
			if j.join() {
				helper(j, dense, spin)
			}
		}()
	}
	j.work()
	j.finish()
	pool.current.CompareAndSwap(j, nil)
	pool.lastEnd.Store(nanotime())
}

// helper works on j, then, if poll is set, on the jobs that come within
// spin of its last one.
func helper(j *job, poll bool, spin time.Duration) {
	for j != nil {
		j.work()
		j.leave()
		if !poll {
			return
		}
		j = next(j, spin)
	}
}

// next polls for a job other than last to join, for up to spin. It
// returns nil when none comes, when other goroutines have waited
// yieldAfter for a core, or when a job comes that needs no more helpers.
func next(last *job, spin time.Duration) *job {
	deadline := nanotime() + int64(spin)
	var waiting int64 // since when others have been waiting, 0: they are not
	for i := 0; ; i++ {
		if c := pool.current.Load(); c != nil && c != last {
			if c.join() {
				pool.polled.Add(1)
				return c
			}
			return nil // it has all its helpers: the cores are busy
		}
		if i%64 == 63 {
			t := nanotime()
			if t > deadline {
				return nil
			}
			yieldThread()
			// Goroutines that wait for a core while another core is
			// free are about to run there; ones that are still waiting
			// a moment later need this one.
			switch {
			case !othersWaiting(t):
				waiting = 0
			case waiting == 0:
				waiting = t
			case t-waiting > int64(yieldAfter):
				return nil
			}
		}
	}
}
