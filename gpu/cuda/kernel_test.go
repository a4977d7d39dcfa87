package cuda

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestEmbeddedPTX checks the shape of the shipped kernel: PTX ISA and
// target old enough for Ampere and Hopper drivers, the entry point and
// parameters that launch passes, and no local-memory spills (the SHA-256
// state and schedule must stay in registers).
func TestEmbeddedPTX(t *testing.T) {
	for _, want := range []string{".version 7.0\n", ".target sm_80\n", ".address_size 64\n", ".visible .entry leafhash("} {
		if !strings.Contains(leafhashPTX, want) {
			t.Errorf("leafhash.ptx lacks %q", want)
		}
	}
	if n := len(regexp.MustCompile(`\.param \.u64 leafhash_param_\d`).FindAllString(leafhashPTX, -1)); n != 6 {
		t.Errorf("leafhash has %d u64 parameters, want 6", n)
	}
	if strings.Contains(leafhashPTX, ".local") {
		t.Errorf("leafhash.ptx uses local memory; keep the hash state in registers")
	}
}

// TestPTXUpToDate regenerates the PTX with the compiler gen.sh names and
// compares it with the embedded one. It runs only where that compiler
// (Debian 12's clang 14) is installed, since other versions emit other PTX.
func TestPTXUpToDate(t *testing.T) {
	out, err := exec.Command("clang", "--version").Output()
	if err != nil || !bytes.Contains(out, []byte("clang version 14.")) {
		t.Skip("clang 14 not installed (apt-get install clang on Debian 12); skipping PTX regeneration")
	}
	ptx := filepath.Join(t.TempDir(), "leafhash.ptx")
	cmd := exec.Command("clang", "-O3", "-x", "cuda", "--cuda-device-only", "--cuda-gpu-arch=sm_80",
		"-nocudainc", "-nocudalib", "-S", "-o", ptx, "kernel/leafhash.cu")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("clang: %v\n%s", err, b)
	}
	got, err := os.ReadFile(ptx)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != leafhashPTX {
		t.Errorf("kernel/leafhash.ptx is stale: run gpu/cuda/kernel/gen.sh")
	}
}
