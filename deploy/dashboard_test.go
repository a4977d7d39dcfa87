package deploy

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
)

const dashboardPath = "grafana/vramseal-capacity.json"

// minSchemaVersion is the oldest dashboard schema accepted: Grafana 11's.
const minSchemaVersion = 39

// dashboard is the part of Grafana's dashboard JSON the tests check.
type dashboard struct {
	ID            any     `json:"id"`
	UID           string  `json:"uid"`
	Title         string  `json:"title"`
	SchemaVersion int     `json:"schemaVersion"`
	Panels        []panel `json:"panels"`
	Templating    struct {
		List []variable `json:"list"`
	} `json:"templating"`
}

type panel struct {
	ID         int                      `json:"id"`
	Type       string                   `json:"type"`
	Title      string                   `json:"title"`
	Datasource *datasourceRef           `json:"datasource"`
	GridPos    struct{ X, Y, W, H int } `json:"gridPos"`
	Targets    []struct {
		RefID        string         `json:"refId"`
		Expr         string         `json:"expr"`
		LegendFormat string         `json:"legendFormat"`
		Datasource   *datasourceRef `json:"datasource"`
	} `json:"targets"`
	Panels []panel `json:"panels"` // a collapsed row's panels
}

type datasourceRef struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type variable struct {
	Type       string          `json:"type"`
	Name       string          `json:"name"`
	Query      json.RawMessage `json:"query"`
	Datasource *datasourceRef  `json:"datasource"`
}

func readDashboard(t *testing.T) dashboard {
	t.Helper()
	b, err := os.ReadFile(dashboardPath)
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s is not valid JSON: %v", dashboardPath, err)
	}
	return d
}

// allPanels returns the dashboard's panels, a collapsed row's included.
func allPanels(ps []panel) []panel {
	var out []panel
	for _, p := range ps {
		out = append(out, p)
		out = append(out, allPanels(p.Panels)...)
	}
	return out
}

// grafanaBuiltins are the values the queries' Grafana built-in variables
// take in the parse check.
var grafanaBuiltins = map[string]string{"__rate_interval": "5m", "__interval": "1m", "__range": "1h"}

// grafanaVarRE matches $name, ${name}, ${name:format} and [[name]].
var grafanaVarRE = regexp.MustCompile(`\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]`)

// expandVariables replaces Grafana's variables in a query: built-ins by
// typical values, the dashboard's own variables by ".+" (they are only
// used in regular-expression matchers, where that selects everything; used
// anywhere else, the result does not parse). Undefined variables are
// returned as errors.
func expandVariables(q string, defined map[string]bool) (string, []string) {
	var undefined []string
	out := grafanaVarRE.ReplaceAllStringFunc(q, func(m string) string {
		sub := grafanaVarRE.FindStringSubmatch(m)
		name := sub[1] + sub[2] + sub[3]
		if v, ok := grafanaBuiltins[name]; ok {
			return v
		}
		if !defined[name] {
			undefined = append(undefined, name)
		}
		return ".+"
	})
	return out, undefined
}

// labelValuesRE matches a Prometheus variable query label_values(selector, label).
var labelValuesRE = regexp.MustCompile(`^\s*label_values\((.+),\s*(\w+)\s*\)\s*$`)

// dashboardQueries returns every PromQL expression in the dashboard, with
// Grafana's variables expanded, under a name that says where it is.
func dashboardQueries(t *testing.T, d dashboard) map[string]string {
	t.Helper()
	defined := map[string]bool{}
	for _, v := range d.Templating.List {
		defined[v.Name] = true
	}
	queries := map[string]string{}
	add := func(where, q string) {
		e, undefined := expandVariables(q, defined)
		for _, u := range undefined {
			t.Errorf("%s uses the variable $%s, which the dashboard does not define", where, u)
		}
		queries[where] = e
	}
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		var q struct {
			Query string `json:"query"`
		}
		if err := json.Unmarshal(v.Query, &q); err != nil {
			if err := json.Unmarshal(v.Query, &q.Query); err != nil {
				t.Errorf("variable %s: query is neither a string nor an object: %v", v.Name, err)
				continue
			}
		}
		m := labelValuesRE.FindStringSubmatch(q.Query)
		if m == nil {
			t.Errorf("variable %s: query %q is not label_values(selector, label)", v.Name, q.Query)
			continue
		}
		add(fmt.Sprintf("variable %s", v.Name), m[1])
	}
	for _, p := range allPanels(d.Panels) {
		for _, tg := range p.Targets {
			add(fmt.Sprintf("panel %d %q query %s", p.ID, p.Title, tg.RefID), tg.Expr)
		}
	}
	return queries
}

// TestDashboardShape checks the dashboard's structure: an importable
// dashboard of a current schema, a data source variable every panel and
// query uses, a GPU variable on UUID, unique panel IDs on a 24-column grid,
// and every dcgm-exporter query joined with vramseal's series on UUID.
func TestDashboardShape(t *testing.T) {
	d := readDashboard(t)
	if d.ID != nil {
		t.Errorf("dashboard id = %v, want null (Grafana assigns it on import)", d.ID)
	}
	if d.UID == "" || d.Title == "" {
		t.Errorf("dashboard uid %q, title %q: both must be set", d.UID, d.Title)
	}
	if d.SchemaVersion < minSchemaVersion {
		t.Errorf("schemaVersion = %d, want at least %d", d.SchemaVersion, minSchemaVersion)
	}
	var dsVar string
	vars := map[string]variable{}
	for _, v := range d.Templating.List {
		vars[v.Name] = v
		if v.Type == "datasource" {
			var q string
			if err := json.Unmarshal(v.Query, &q); err != nil || q != "prometheus" {
				t.Errorf("data source variable %s: query %s, want \"prometheus\"", v.Name, v.Query)
			}
			dsVar = v.Name
		}
	}
	if dsVar == "" {
		t.Fatal("the dashboard has no data source variable")
	}
	wantDS := "${" + dsVar + "}"
	if v, ok := vars["UUID"]; !ok || v.Type != "query" || !strings.Contains(string(v.Query), ", UUID)") {
		t.Errorf("the dashboard has no query variable UUID over the UUID label (the dcgm-exporter join key)")
	}
	for _, v := range d.Templating.List {
		if v.Type == "query" && (v.Datasource == nil || v.Datasource.UID != wantDS) {
			t.Errorf("variable %s: data source %+v, want uid %s", v.Name, v.Datasource, wantDS)
		}
	}
	ids := map[int]bool{}
	queries := 0
	for _, p := range allPanels(d.Panels) {
		if ids[p.ID] || p.ID == 0 {
			t.Errorf("panel %q: id %d is zero or used twice", p.Title, p.ID)
		}
		ids[p.ID] = true
		if p.GridPos.W <= 0 || p.GridPos.H <= 0 || p.GridPos.X < 0 || p.GridPos.X+p.GridPos.W > 24 {
			t.Errorf("panel %d %q: gridPos %+v is off the 24-column grid", p.ID, p.Title, p.GridPos)
		}
		if p.Type == "row" {
			continue
		}
		if p.Datasource == nil || p.Datasource.UID != wantDS || p.Datasource.Type != "prometheus" {
			t.Errorf("panel %d %q: data source %+v, want prometheus %s", p.ID, p.Title, p.Datasource, wantDS)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %d %q has no query", p.ID, p.Title)
		}
		refs := map[string]bool{}
		for _, tg := range p.Targets {
			queries++
			if tg.RefID == "" || refs[tg.RefID] || strings.TrimSpace(tg.Expr) == "" {
				t.Errorf("panel %d %q: query %q has an empty or repeated refId or no expression", p.ID, p.Title, tg.RefID)
			}
			refs[tg.RefID] = true
			if tg.Datasource == nil || tg.Datasource.UID != wantDS {
				t.Errorf("panel %d %q query %s: data source %+v, want %s", p.ID, p.Title, tg.RefID, tg.Datasource, wantDS)
			}
			if strings.Contains(tg.Expr, "DCGM_") && (!strings.Contains(tg.Expr, "on (UUID)") || !strings.Contains(tg.Expr, "vramseal_")) {
				t.Errorf("panel %d %q query %s: a dcgm-exporter query must join vramseal's series on (UUID): %s", p.ID, p.Title, tg.RefID, tg.Expr)
			}
		}
	}
	if queries == 0 {
		t.Fatal("the dashboard has no queries")
	}
}

// TestDashboardQueriesParse runs promtool's parser on every query of the
// dashboard, its variables' included, with Grafana's variables expanded.
func TestDashboardQueriesParse(t *testing.T) {
	checkRulesParse(t, dashboardQueries(t, readDashboard(t)))
}

// dcgmMetricRE finds the dcgm-exporter metrics listed in deploy/grafana/README.md.
var dcgmMetricRE = regexp.MustCompile("(?m)^\\| `(DCGM_FI_[A-Z0-9_]+)` \\|")

// documentedDCGM returns the dcgm-exporter metrics the dashboard's README
// documents.
func documentedDCGM(t *testing.T) map[string]bool {
	t.Helper()
	readme := readFile(t, filepath.Join("grafana", "README.md"))
	out := map[string]bool{}
	for _, m := range dcgmMetricRE.FindAllStringSubmatch(readme, -1) {
		out[m[1]] = true
	}
	if len(out) == 0 {
		t.Fatal("deploy/grafana/README.md documents no dcgm-exporter metric")
	}
	return out
}

// TestDashboardDCGMMetricsDocumented checks that the dashboard names only
// dcgm-exporter metrics its README documents, and documents none it does
// not use.
func TestDashboardDCGMMetricsDocumented(t *testing.T) {
	documented := documentedDCGM(t)
	used := map[string]bool{}
	for where, q := range dashboardQueries(t, readDashboard(t)) {
		for _, m := range metricNames(q) {
			if !strings.HasPrefix(m, "DCGM_") {
				continue
			}
			used[m] = true
			if !documented[m] {
				t.Errorf("%s names %s, which deploy/grafana/README.md does not document", where, m)
			}
		}
	}
	var unused []string
	for m := range documented {
		if !used[m] {
			unused = append(unused, m)
		}
	}
	sort.Strings(unused)
	if len(unused) > 0 {
		t.Errorf("deploy/grafana/README.md documents dcgm-exporter metrics the dashboard does not use: %s", strings.Join(unused, ", "))
	}
}

func TestExpandVariables(t *testing.T) {
	defined := map[string]bool{"instance": true, "UUID": true}
	for _, tt := range []struct {
		in, want  string
		undefined string
	}{
		{`rate(x{instance=~"$instance"}[$__rate_interval])`, `rate(x{instance=~".+"}[5m])`, ""},
		{`x{UUID=~"${UUID}", a=~"[[instance]]"}`, `x{UUID=~".+", a=~".+"}`, ""},
		{`x{UUID=~"${UUID:regex}"}[$__range]`, `x{UUID=~".+"}[1h]`, ""},
		{`x{gpu=~"$gpu"}`, `x{gpu=~".+"}`, "gpu"},
	} {
		got, undefined := expandVariables(tt.in, defined)
		if got != tt.want || strings.Join(undefined, ",") != tt.undefined {
			t.Errorf("expandVariables(%q) = %q, %q; want %q, %q", tt.in, got, undefined, tt.want, tt.undefined)
		}
	}
}
