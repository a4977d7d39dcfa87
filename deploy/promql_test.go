package deploy

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// promqlStrings matches PromQL's string literals; promqlSkip, once they
// are gone, the other parts of an expression that name no metric: label
// matchers, range and subquery brackets, and the label lists of grouping
// and vector-matching clauses.
var (
	promqlStrings = regexp.MustCompile("\"(?:[^\"\\\\]|\\\\.)*\"|'(?:[^'\\\\]|\\\\.)*'|`[^`]*`")
	promqlSkip    = regexp.MustCompile(`\{[^}]*\}|\[[^\]]*\]|\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`)
)

// promqlKeywords are the identifiers PromQL reserves outside function calls.
var promqlKeywords = map[string]bool{
	"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true,
	"and": true, "or": true, "unless": true, "bool": true, "offset": true, "inf": true, "nan": true, "atan2": true,
}

// metricNames returns the metric names a PromQL expression selects: every
// identifier that is not a keyword, a number or duration, a label, or the
// name of a function or aggregation (followed by a parenthesis). It does
// not parse PromQL (promtool does that); it finds names to check.
func metricNames(expr string) []string {
	s := promqlSkip.ReplaceAllString(promqlStrings.ReplaceAllString(expr, `""`), " ")
	var names []string
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c >= '0' && c <= '9' || c == '.':
			j := i
			for j < len(s) && (isIdentByte(s[j]) || s[j] == '.') {
				j++
			}
			i = j
		case isIdentByte(c):
			j := i
			for j < len(s) && isIdentByte(s[j]) {
				j++
			}
			word := s[i:j]
			k := j
			for k < len(s) && (s[k] == ' ' || s[k] == '\t' || s[k] == '\n') {
				k++
			}
			if !promqlKeywords[strings.ToLower(word)] && (k == len(s) || s[k] != '(') {
				names = append(names, word)
			}
			i = j
		default:
			i++
		}
	}
	return names
}

func isIdentByte(c byte) bool {
	return c == '_' || c == ':' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

func TestMetricNames(t *testing.T) {
	for _, tt := range []struct {
		expr string
		want []string
	}{
		{`up{job="vramseal"} == 0`, []string{"up"}},
		{`histogram_quantile(0.99, sum by (mode, le) (rate(vramseal_verify_duration_seconds_bucket{instance=~"a|b"}[5m])))`, []string{"vramseal_verify_duration_seconds_bucket"}},
		{`max by (UUID) (DCGM_FI_DEV_FB_USED) * 1048576 - on (UUID) group_left (gpu) vramseal:x offset 5m`, []string{"DCGM_FI_DEV_FB_USED", "vramseal:x"}},
		{`time() - vramseal_scrub_last_pass_timestamp_seconds > 3 * 3600 and bool 1e3`, []string{"vramseal_scrub_last_pass_timestamp_seconds"}},
		{`sum without (gpu) (a) / ignoring (x) b unless c or d`, []string{"a", "b", "c", "d"}},
		{`count(x{l="sum(y)"})`, []string{"x"}},
		{`x{l="}", m=~"a\"b"} + y`, []string{"x", "y"}},
	} {
		got := metricNames(tt.expr)
		if strings.Join(got, ",") != strings.Join(tt.want, ",") {
			t.Errorf("metricNames(%q) = %q, want %q", tt.expr, got, tt.want)
		}
	}
}

// rulesFile is the part of a Prometheus rules file the tests read.
type rulesFile struct {
	Groups []struct {
		Name     string `yaml:"name"`
		Interval string `yaml:"interval,omitempty"`
		Rules    []struct {
			Record      string            `yaml:"record,omitempty"`
			Alert       string            `yaml:"alert,omitempty"`
			Expr        string            `yaml:"expr"`
			For         string            `yaml:"for,omitempty"`
			Labels      map[string]string `yaml:"labels,omitempty"`
			Annotations map[string]string `yaml:"annotations,omitempty"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

// readRules returns the expressions of the rules file, each under the name
// of its rule, and the names it records.
func readRules(t *testing.T) (exprs map[string]string, recorded map[string]bool) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(rulesDir, "vramseal-rules.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var f rulesFile
	if err := yaml.Unmarshal(b, &f); err != nil {
		t.Fatalf("vramseal-rules.yml: %v", err)
	}
	exprs, recorded = map[string]string{}, map[string]bool{}
	for _, g := range f.Groups {
		for _, r := range g.Rules {
			name := r.Alert
			if r.Record != "" {
				name = r.Record
				recorded[r.Record] = true
			}
			exprs[name] = r.Expr
		}
	}
	if len(exprs) == 0 {
		t.Fatal("vramseal-rules.yml holds no rules")
	}
	return exprs, recorded
}

// checkRulesParse writes exprs as recording rules into a temporary rules
// file and runs promtool check rules on it: promtool's own PromQL parser.
// Rule i is recorded as parse_check:q<i>; a failure lists which query that is.
func checkRulesParse(t *testing.T, exprs map[string]string) {
	t.Helper()
	names := make([]string, 0, len(exprs))
	for n := range exprs {
		names = append(names, n)
	}
	sort.Strings(names)
	type rule struct {
		Record string `yaml:"record"`
		Expr   string `yaml:"expr"`
	}
	type group struct {
		Name  string `yaml:"name"`
		Rules []rule `yaml:"rules"`
	}
	g := group{Name: "parse-check"}
	var index strings.Builder
	for i, n := range names {
		g.Rules = append(g.Rules, rule{Record: fmt.Sprintf("parse_check:q%d", i), Expr: exprs[n]})
		fmt.Fprintf(&index, "parse_check:q%d: %s\n", i, n)
	}
	b, err := yaml.Marshal(map[string][]group{"groups": {g}})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "queries.yml")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(promtool(t), "check", "rules", path).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool check rules on the queries: %v\n%s\nthe queries:\n%s", err, out, index.String())
	}
}

// unknownMetrics returns the metric names exprs select that known does
// not hold, each with the first query that names it.
func unknownMetrics(exprs map[string]string, known func(string) bool) []string {
	seen := map[string]string{}
	for where, e := range exprs {
		for _, m := range metricNames(e) {
			if !known(m) {
				if w, ok := seen[m]; !ok || where < w {
					seen[m] = where
				}
			}
		}
	}
	var out []string
	for m, where := range seen {
		out = append(out, m+" (in "+where+")")
	}
	sort.Strings(out)
	return out
}
