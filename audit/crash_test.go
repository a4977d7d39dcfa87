package audit

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

const crashChildEnv = "AUDIT_CRASH_CHILD_DIR"

// crashChild appends from four goroutines until killed, printing "D <n>"
// after each durable Append returns.
func crashChild(dir string, base int64) {
	l, err := Open(dir, Options{Service: "crash", FsyncInterval: 5 * time.Millisecond})
	if err != nil {
		fmt.Fprintln(os.Stderr, "child open:", err)
		os.Exit(3)
	}
	var mu sync.Mutex
	out := os.Stdout
	out.WriteString("R\n")
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int64(0); ; i++ {
				n := base + int64(g)*100000 + i
				sev := SeverityInfo
				if i%3 == 0 {
					sev = SeverityCritical
				}
				r, err := l.Append(context.Background(), Event{Type: "crash_event", Severity: sev,
					Fields: []Field{Int("n", n), String("pad", "0123456789abcdef0123456789abcdef")}})
				if err != nil {
					fmt.Fprintln(os.Stderr, "child append:", err)
					os.Exit(4)
				}
				if r.Durable {
					mu.Lock()
					out.WriteString("D " + strconv.FormatInt(n, 10) + "\n")
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
}

func TestCrashSIGKILL(t *testing.T) {
	if dir := os.Getenv(crashChildEnv); dir != "" {
		base, _ := strconv.ParseInt(os.Getenv(crashChildEnv+"_BASE"), 10, 64)
		crashChild(dir, base)
		return
	}
	rounds := 50
	if testing.Short() {
		rounds = 8
	}
	dir := t.TempDir() + "/log"
	vk, err := Init(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 1))
	acked := map[int64]bool{}
	for round := range rounds {
		cmd := exec.Command(os.Args[0], "-test.run=^TestCrashSIGKILL$")
		cmd.Env = append(os.Environ(), crashChildEnv+"="+dir, crashChildEnv+"_BASE="+strconv.Itoa((round+1)*1000000))
		cmd.Stderr = os.Stderr
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		ready := make(chan struct{})
		lines := make(chan []int64, 1)
		go func() {
			var got []int64
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				s := sc.Text()
				if s == "R" {
					close(ready)
					continue
				}
				if len(s) > 2 && s[0] == 'D' {
					n, err := strconv.ParseInt(s[2:], 10, 64)
					if err == nil {
						got = append(got, n)
					}
				}
			}
			lines <- got
		}()
		select {
		case <-ready:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			t.Fatalf("round %d: child never became ready", round)
		}
		time.Sleep(time.Duration(2+rng.IntN(40)) * time.Millisecond) // the random crash moment, not synchronization
		cmd.Process.Signal(syscall.SIGKILL)
		got := <-lines
		err = cmd.Wait()
		if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() {
			t.Fatalf("round %d: child exited by itself: %v", round, err)
		}
		for _, n := range got {
			acked[n] = true
		}
		l, err := Open(dir, Options{})
		if err != nil {
			t.Fatalf("round %d: Open after SIGKILL = %v", round, err)
		}
		if err := l.Close(context.Background()); err != nil {
			t.Fatalf("round %d: Close = %v", round, err)
		}
		if _, err := Verify(context.Background(), dir, VerifyOptions{Key: vk}); err != nil {
			t.Fatalf("round %d: Verify after SIGKILL = %v", round, err)
		}
	}
	present := map[int64]bool{}
	err = Query(context.Background(), dir, Filter{Types: []string{"crash_event"}}, ReadOptions{}, func(r *Record) error {
		f, _ := r.Field("n")
		present[f.Int64()] = true
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	missing := 0
	for n := range acked {
		if !present[n] {
			missing++
		}
	}
	if missing > 0 || len(acked) == 0 {
		t.Fatalf("%d of %d acknowledged durable records missing after %d crashes", missing, len(acked), rounds)
	}
	t.Logf("%d rounds, %d acknowledged durable records all present, %d records in all", rounds, len(acked), len(present))
}
