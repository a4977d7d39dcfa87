// Package deploy holds the deployment files: Prometheus rules, the Grafana
// dashboard, the systemd unit and the Kubernetes manifest (the Dockerfile
// is at the repository's root). Its tests check them against the daemon.
package deploy

import (
	"bufio"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/vramseal/vramseal/internal/daemontest"
)

const rulesDir = "prometheus"

// promtool returns the promtool binary, or skips the test when it is
// missing and VRAMSEAL_REQUIRE_PROMTOOL is unset (CI sets it, so there a
// missing promtool fails the test).
func promtool(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("VRAMSEAL_REQUIRE_PROMTOOL") != "" {
			t.Fatalf("promtool not found and VRAMSEAL_REQUIRE_PROMTOOL is set: install Debian's prometheus package")
		}
		t.Skip("promtool not found (Debian package prometheus); set VRAMSEAL_REQUIRE_PROMTOOL=1 to make this a failure")
	}
	return p
}

func runPromtool(t *testing.T, args ...string) {
	t.Helper()
	cmd := exec.Command(promtool(t), args...)
	cmd.Dir = rulesDir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// TestRulesParse runs promtool's own parser and rule checks on the rules.
func TestRulesParse(t *testing.T) {
	runPromtool(t, "check", "rules", "vramseal-rules.yml")
}

// TestRulesUnitTests runs the alert unit tests: every alert firing and not.
func TestRulesUnitTests(t *testing.T) {
	runPromtool(t, "test", "rules", "vramseal-rules_test.yml")
}

// TestEveryAlertHasATest checks that each alert in the rules appears in the
// unit tests and has a runbook section in the README.
func TestEveryAlertHasATest(t *testing.T) {
	rules := readFile(t, filepath.Join(rulesDir, "vramseal-rules.yml"))
	tests := readFile(t, filepath.Join(rulesDir, "vramseal-rules_test.yml"))
	readme := readFile(t, filepath.Join(rulesDir, "README.md"))
	alerts := regexp.MustCompile(`(?m)^\s*- alert:\s*(\S+)`).FindAllStringSubmatch(rules, -1)
	if len(alerts) == 0 {
		t.Fatal("no alerts found in the rules file")
	}
	for _, a := range alerts {
		name := a[1]
		if !strings.Contains(tests, "alertname: "+name) {
			t.Errorf("alert %s has no unit test (alertname: %s) in vramseal-rules_test.yml", name, name)
		}
		if !strings.Contains(readme, name) {
			t.Errorf("alert %s has no runbook section in deploy/prometheus/README.md", name)
		}
	}
}

// TestRulesExpressionsParse parses every rule's expression on its own,
// through the same check as the dashboard's queries.
func TestRulesExpressionsParse(t *testing.T) {
	exprs, _ := readRules(t)
	checkRulesParse(t, exprs)
}

// TestQueriesNameExportedMetrics starts a daemon with a bearer token, as
// the deployment files run it, and checks against it: every vramseal_
// metric the rules and the dashboard select is one a live scrape exports
// (histograms through their _bucket, _sum and _count series), every other
// name is a recording rule, Prometheus's up (rules only) or a documented
// dcgm-exporter metric (dashboard only); the probe paths of the Kubernetes
// manifest answer 200 without the token; and promtool check metrics is
// clean on the scrape.
func TestQueriesNameExportedMetrics(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and starts the daemon")
	}
	bin := daemontest.Build(t, "../cmd/vramseal")
	token := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(token, []byte(strings.Repeat("deploy-test-", 4)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	d := daemontest.Start(t, bin, "serve", "--listen", "127.0.0.1:0", "--device", "sim", "--sim-capacity", "64MiB",
		"--data-dir", t.TempDir(), "--token-file", token, "--scrub-rate", "1GiB", "--scrub-interval", "100ms")
	base := "http://" + d.Addr
	// Series with labels appear once observed: seal and verify a shard,
	// and wait for a scrub pass.
	model := filepath.Join(t.TempDir(), "model.bin")
	if err := os.WriteFile(model, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	client := []string{"--addr=" + base, "--token-file=" + token}
	for _, args := range [][]string{{"shard", "add", model, "--shard-id", "m0", "--model-ref", "org/m"}, {"shard", "verify", "m0", "--full"}} {
		args = append(args, client...)
		if out, err := exec.Command(bin, args...).CombinedOutput(); err != nil {
			t.Fatalf("vramseal %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	tok := strings.TrimSpace(readFile(t, token))
	var exported map[string]bool
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		exported = scrape(t, base+"/metrics", tok)
		if exported["vramseal_scrub_last_pass_timestamp_seconds"] || time.Now().After(deadline) {
			break
		}
	}
	if len(exported) == 0 {
		t.Fatal("the daemon's /metrics exports no vramseal_ series")
	}

	rules, recorded := readRules(t)
	if missing := unknownMetrics(rules, func(m string) bool { return exported[m] || recorded[m] || m == "up" }); len(missing) > 0 {
		t.Errorf("the rules name metrics the daemon does not export: %s", strings.Join(missing, ", "))
	}
	dcgm := documentedDCGM(t)
	if missing := unknownMetrics(dashboardQueries(t, readDashboard(t)), func(m string) bool { return exported[m] || dcgm[m] }); len(missing) > 0 {
		t.Errorf("the dashboard names metrics the daemon does not export (and dcgm-exporter metrics deploy/grafana/README.md does not document): %s", strings.Join(missing, ", "))
	}

	for _, path := range probePaths(t) {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s without the token = HTTP %d, want 200: a probe of the Kubernetes manifest fails", path, resp.StatusCode)
		}
	}
	runPromtoolStdin(t, exportedText(t, base+"/metrics", tok))
}

// dcgmLabelLint is promtool's complaint about the UUID and modelName
// labels, which the GPU metrics keep on purpose: they are dcgm-exporter's
// label names, so the daemon's series join with its series on UUID.
const dcgmLabelLint = "label names should be written in 'snake_case' not 'camelCase'"

// runPromtoolStdin lints a scrape with promtool check metrics: clean but
// for the documented dcgm-exporter label names.
func runPromtoolStdin(t *testing.T, scrape string) {
	t.Helper()
	cmd := exec.Command(promtool(t), "check", "metrics")
	cmd.Stdin = strings.NewReader(scrape)
	out, err := cmd.CombinedOutput()
	if err == nil {
		return
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if !strings.HasSuffix(line, dcgmLabelLint) {
			t.Errorf("promtool check metrics on a live scrape: %v\n%s", err, out)
			return
		}
	}
}

// exportedText returns a scrape of url, sent with the bearer token.
func exportedText(t *testing.T, url, token string) string {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("scrape %s: %v", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape %s: HTTP %d", url, resp.StatusCode)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("scrape %s: %v", url, err)
	}
	return string(b)
}

// scrape returns the names of the vramseal_ series in the daemon's
// exposition (with a histogram's _bucket, _sum and _count as they appear).
func scrape(t *testing.T, url, token string) map[string]bool {
	t.Helper()
	names := map[string]bool{}
	sc := bufio.NewScanner(strings.NewReader(exportedText(t, url, token)))
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name := line
		if i := strings.IndexAny(line, "{ "); i >= 0 {
			name = line[:i]
		}
		if strings.HasPrefix(name, "vramseal_") {
			names[name] = true
		}
	}
	return names
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
