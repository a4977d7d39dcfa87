//go:build !linux

package sim

// yieldThread does nothing where sched_yield is not at hand.
func yieldThread() {}
