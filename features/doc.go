// Package features holds vramseal's Gherkin scenarios: the behaviour of
// the residency manager, its VRAM-only policy, its audit log and its
// narration, written in business language in the *.feature files of this
// directory. The step definitions live in the package's tests; godog runs
// every scenario as a subtest of `go test ./features/`.
//
// Each scenario starts from nothing: its own temporary directory, simulated
// GPUs, audit log, narration capture and manager, torn down when it ends.
package features
