package observability_test

import (
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
)

func TestDashboardReferencesExistingMetrics(t *testing.T) {
	raw, err := os.ReadFile("grafana-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash dashboard
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("grafana-dashboard.json: %v", err)
	}
	dash.check(t)

	exprs, err := dash.queries()
	if err != nil {
		t.Fatal(err)
	}
	st := startStack(t)
	st.exercise(t)
	exist := map[string]bool{}
	for _, fams := range st.scrapeAll(t) {
		for name := range fams.seriesNames() {
			exist[name] = true
		}
	}

	used := map[string]bool{}
	for _, e := range exprs {
		names, err := metricNames(e.expr)
		if err != nil {
			t.Errorf("%s: %v", e.where, err)
			continue
		}
		if len(names) == 0 && !e.template {
			t.Errorf("%s: %q references no metric", e.where, e.expr)
		}
		for _, n := range names {
			used[n] = true
			if !exist[n] {
				t.Errorf("%s: %s is not exported by the sidecar, the runtime or the control plane (query %q)", e.where, n, e.expr)
			}
		}
	}
	// The panels the issue asks for: rows/s, p99, mean batch rows, queue
	// depth, cache hit ratio, endpoint weights, NACKs, shed, upstream errors.
	for _, n := range []string{
		"batchmesh_requests_total", "batchmesh_request_duration_seconds_bucket",
		"batchmesh_batch_rows_sum", "batchmesh_batch_rows_count", "batchmesh_queue_depth",
		"batchmesh_cache_hits_total", "batchmesh_cache_misses_total", "batchmesh_endpoint_weight",
		"batchmesh_xds_nacks_total", "batchmesh_shed_total", "batchmesh_upstream_requests_total",
	} {
		if !used[n] {
			t.Errorf("no panel queries %s", n)
		}
	}
}

// dashboard is the part of a Grafana dashboard model the test reads.
type dashboard struct {
	UID           string  `json:"uid"`
	Title         string  `json:"title"`
	SchemaVersion int     `json:"schemaVersion"`
	Panels        []panel `json:"panels"`
	Templating    struct {
		List []struct {
			Name  string          `json:"name"`
			Type  string          `json:"type"`
			Query json.RawMessage `json:"query"`
		} `json:"list"`
	} `json:"templating"`
}

type panel struct {
	ID         int         `json:"id"`
	Type       string      `json:"type"`
	Title      string      `json:"title"`
	Datasource *datasource `json:"datasource"`
	Targets    []struct {
		RefID      string      `json:"refId"`
		Expr       string      `json:"expr"`
		Datasource *datasource `json:"datasource"`
	} `json:"targets"`
	Panels []panel `json:"panels"` // a collapsed row's
}

type datasource struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

// dsVar is the dashboard's data source variable; every query goes through
// it so that the dashboard imports into any Grafana.
const dsVar = "${DS_PROMETHEUS}"

// check tests the dashboard's shape: Grafana 10/11 schema, the data source
// variable, unique panel ids, every query through the variable.
func (d *dashboard) check(t *testing.T) {
	t.Helper()
	if d.UID == "" || d.Title == "" {
		t.Errorf("uid %q, title %q: both must be set", d.UID, d.Title)
	}
	if d.SchemaVersion < 36 {
		t.Errorf("schemaVersion %d: want 36 or later (Grafana 9+ data source references)", d.SchemaVersion)
	}
	var hasDS bool
	for _, v := range d.Templating.List {
		if "${"+v.Name+"}" == dsVar {
			hasDS = v.Type == "datasource" && string(v.Query) == `"prometheus"`
		}
	}
	if !hasDS {
		t.Errorf("no templating variable DS_PROMETHEUS of type datasource querying prometheus")
	}
	ids := map[int]string{}
	var walk func(ps []panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			if prev, dup := ids[p.ID]; dup || p.ID == 0 {
				t.Errorf("panel %q: id %d is missing or also used by %q", p.Title, p.ID, prev)
			}
			ids[p.ID] = p.Title
			walk(p.Panels)
			if p.Type == "row" {
				continue
			}
			if p.Datasource == nil || p.Datasource.Type != "prometheus" || p.Datasource.UID != dsVar {
				t.Errorf("panel %q: datasource %+v, want prometheus %s", p.Title, p.Datasource, dsVar)
			}
			if len(p.Targets) == 0 {
				t.Errorf("panel %q has no query", p.Title)
			}
			for _, q := range p.Targets {
				if q.Datasource != nil && q.Datasource.UID != dsVar {
					t.Errorf("panel %q query %s: datasource %+v, want %s", p.Title, q.RefID, q.Datasource, dsVar)
				}
			}
		}
	}
	walk(d.Panels)
}

// query is one PromQL expression of the dashboard.
type query struct {
	where, expr string
	template    bool // a variable's query, which may name no metric
}

// queries returns every panel target's expression, and the PromQL inside
// the query variables' label_values(…) and query_result(…).
func (d *dashboard) queries() ([]query, error) {
	var out []query
	var walk func(ps []panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			for _, q := range p.Targets {
				out = append(out, query{where: fmt.Sprintf("panel %q query %s", p.Title, q.RefID), expr: q.Expr})
			}
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		var q string
		if err := json.Unmarshal(v.Query, &q); err != nil {
			var obj struct {
				Query string `json:"query"`
			}
			if err := json.Unmarshal(v.Query, &obj); err != nil {
				return nil, fmt.Errorf("variable %s: query is neither a string nor {query: …}: %s", v.Name, v.Query)
			}
			q = obj.Query
		}
		expr, err := templateExpr(q)
		if err != nil {
			return nil, fmt.Errorf("variable %s: %w", v.Name, err)
		}
		out = append(out, query{where: "variable " + v.Name, expr: expr, template: true})
	}
	return out, nil
}

var (
	labelValuesRE = regexp.MustCompile(`^\s*label_values\(\s*(.*?)\s*,\s*[A-Za-z_][A-Za-z0-9_]*\s*\)\s*$`)
	oneArgRE      = regexp.MustCompile(`^\s*(?:label_values|label_names)\(\s*[A-Za-z_]*\s*\)\s*$`)
	queryResultRE = regexp.MustCompile(`^\s*query_result\(\s*(.*)\s*\)\s*$`)
)

// templateExpr returns the PromQL of a Grafana Prometheus variable query:
// the selector of label_values(SELECTOR, LABEL), the expression of
// query_result(EXPR), or "" for label_values(LABEL) and label_names().
func templateExpr(q string) (string, error) {
	if m := labelValuesRE.FindStringSubmatch(q); m != nil {
		return m[1], nil
	}
	if m := queryResultRE.FindStringSubmatch(q); m != nil {
		return m[1], nil
	}
	if oneArgRE.MatchString(q) {
		return "", nil
	}
	return "", fmt.Errorf("unrecognised variable query %q", q)
}

// PromQL words that are not metric names: aggregation operators, keywords
// and the literals inf and nan.
var (
	aggregators = []string{"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
		"bottomk", "topk", "quantile", "limitk", "limit_ratio"}
	keywords = []string{"by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool",
		"and", "or", "unless", "atan2", "inf", "nan"}
	// labelLists take a parenthesised list of label names.
	labelLists  = []string{"by", "without", "on", "ignoring", "group_left", "group_right"}
	nameMatchRE = regexp.MustCompile(`__name__\s*=\s*"([^"]*)"`)
)

// metricNames returns the metric names an expression selects, sorted and
// unique: identifiers followed by a label matcher ({…}), a range ([…]) or
// nothing, and the values of __name__="…" matchers; not functions,
// operators, keywords, label names of by/without/on/ignoring/group_*, or
// strings. Grafana variables ($x, ${x}, $__rate_interval) stand for
// numbers or durations.
func metricNames(expr string) ([]string, error) {
	s := grafanaVarRE.ReplaceAllString(expr, "1")
	var names []string
	i := 0
	for i < len(s) {
		c := s[i]
		switch {
		case c == '"' || c == '\'' || c == '`':
			end, err := skipString(s, i)
			if err != nil {
				return nil, err
			}
			i = end
		case c == '{':
			end, err := closing(s, i, '{', '}')
			if err != nil {
				return nil, err
			}
			for _, m := range nameMatchRE.FindAllStringSubmatch(s[i:end], -1) {
				names = append(names, m[1])
			}
			i = end
		case c == '[':
			end, err := closing(s, i, '[', ']')
			if err != nil {
				return nil, err
			}
			i = end
		case isDigit(c) || c == '.' && i+1 < len(s) && isDigit(s[i+1]):
			for i < len(s) && (isIdent(s[i]) || s[i] == '.') {
				i++ // a number or a duration such as 5m
			}
		case isIdentStart(c):
			start := i
			for i < len(s) && isIdent(s[i]) {
				i++
			}
			word := s[start:i]
			next := skipSpace(s, i)
			switch {
			case slices.Contains(labelLists, word) && next < len(s) && s[next] == '(':
				end, err := closing(s, next, '(', ')')
				if err != nil {
					return nil, err
				}
				i = end
			case slices.Contains(aggregators, word) || slices.Contains(keywords, word):
			case next < len(s) && s[next] == '(':
				// a function call
			default:
				names = append(names, word)
			}
		default:
			i++
		}
	}
	slices.Sort(names)
	return slices.Compact(names), nil
}

var grafanaVarRE = regexp.MustCompile(`\$\{[^}]*\}|\$[A-Za-z_][A-Za-z0-9_]*`)

func isDigit(c byte) bool { return '0' <= c && c <= '9' }
func isIdentStart(c byte) bool {
	return c == '_' || c == ':' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z'
}
func isIdent(c byte) bool { return isIdentStart(c) || isDigit(c) }

func skipSpace(s string, i int) int {
	for i < len(s) && strings.IndexByte(" \t\r\n", s[i]) >= 0 {
		i++
	}
	return i
}

// skipString returns the index just past the string literal at s[i].
func skipString(s string, i int) (int, error) {
	q := s[i]
	for j := i + 1; j < len(s); j++ {
		switch {
		case s[j] == '\\' && q != '`':
			j++
		case s[j] == q:
			return j + 1, nil
		}
	}
	return 0, fmt.Errorf("unterminated string at offset %d of %q", i, s)
}

// closing returns the index just past the bracket that closes s[i] (open),
// skipping strings.
func closing(s string, i int, open, close byte) (int, error) {
	depth := 0
	for j := i; j < len(s); j++ {
		switch s[j] {
		case '"', '\'', '`':
			end, err := skipString(s, j)
			if err != nil {
				return 0, err
			}
			j = end - 1
		case open:
			depth++
		case close:
			depth--
			if depth == 0 {
				return j + 1, nil
			}
		}
	}
	return 0, fmt.Errorf("unbalanced %c at offset %d of %q", open, i, s)
}

func TestMetricNamesOfPromQL(t *testing.T) {
	tests := []struct {
		expr string
		want []string
	}{
		{expr: `up`, want: []string{"up"}},
		{expr: `sum by (le, model) (rate(a_bucket{model=~"x"}[1m]))`, want: []string{"a_bucket"}},
		{expr: `histogram_quantile(0.99, sum(rate(g_bucket[$__rate_interval])) by (le))`, want: []string{"g_bucket"}},
		{expr: `a / ignoring(code) group_left(version) b`, want: []string{"a", "b"}},
		{expr: `k unless on (model) l or m`, want: []string{"k", "l", "m"}},
		{expr: `{__name__="c", job="x"}`, want: []string{"c"}},
		{expr: `rate(d[5m] offset 1h)`, want: []string{"d"}},
		{expr: `max without (instance) (e) > bool 0`, want: []string{"e"}},
		{expr: `label_replace(f, "dst", "$1", "src", "(.*)")`, want: []string{"f"}},
		{expr: `topk(5, h) * 1e3`, want: []string{"h"}},
		{expr: `1 - sum(i) / sum(j{model="sum by (x) y"})`, want: []string{"i", "j"}},
		{expr: `sum by (model) (n{model=~"${model}"}) / count(n:recorded)`, want: []string{"n", "n:recorded"}},
		{expr: `max_over_time(o[5m:30s]) > .5`, want: []string{"o"}},
		{expr: `vector(1)`, want: nil},
	}
	for _, tt := range tests {
		got, err := metricNames(tt.expr)
		if err != nil {
			t.Errorf("metricNames(%q): %v", tt.expr, err)
			continue
		}
		if !slices.Equal(got, tt.want) {
			t.Errorf("metricNames(%q) = %q, want %q", tt.expr, got, tt.want)
		}
	}
	for _, bad := range []string{`a{b="c"`, `rate(a[5m)`, `a{b="c}`} {
		if _, err := metricNames(bad); err == nil {
			t.Errorf("metricNames(%q): no error", bad)
		}
	}
}
