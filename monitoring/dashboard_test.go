package monitoring

import (
	"encoding/json"
	"os"
	"testing"
)

// The datasource every panel and target must use: the dashboard's template variable, so that
// the dashboard imports into any Grafana whatever its Prometheus is called.
const datasourceVariable = "${datasource}"

type datasourceRef struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type dashboard struct {
	UID        string  `json:"uid"`
	Title      string  `json:"title"`
	Panels     []panel `json:"panels"`
	Templating struct {
		List []struct {
			Name       string         `json:"name"`
			Type       string         `json:"type"`
			Query      variableQuery  `json:"query"`
			Datasource *datasourceRef `json:"datasource"`
		} `json:"list"`
	} `json:"templating"`
}

type panel struct {
	ID         int            `json:"id"`
	Type       string         `json:"type"`
	Title      string         `json:"title"`
	Datasource *datasourceRef `json:"datasource"`
	Panels     []panel        `json:"panels"` // a collapsed row's panels
	Targets    []struct {
		RefID      string         `json:"refId"`
		Expr       string         `json:"expr"`
		Datasource *datasourceRef `json:"datasource"`
	} `json:"targets"`
}

// variableQuery is a query variable's query: an object {"query": ...} in current Grafana, a
// plain string in dashboards from older versions; both are read.
type variableQuery struct{ Query string }

func (q *variableQuery) UnmarshalJSON(b []byte) error {
	if err := json.Unmarshal(b, &q.Query); err == nil {
		return nil
	}
	var obj struct {
		Query string `json:"query"`
	}
	if err := json.Unmarshal(b, &obj); err != nil {
		return err
	}
	q.Query = obj.Query
	return nil
}

// readDashboard decodes dashboard.json strictly and flattens collapsed rows into the panel list.
func readDashboard(t *testing.T) dashboard {
	t.Helper()
	b, err := os.ReadFile("dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	if !json.Valid(b) {
		t.Fatal("dashboard.json is not valid JSON")
	}
	var d dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("dashboard.json: %v", err)
	}
	var flat []panel
	for _, p := range d.Panels {
		flat = append(flat, p)
		flat = append(flat, p.Panels...)
	}
	d.Panels = flat
	return d
}

func TestDashboardShape(t *testing.T) {
	d := readDashboard(t)
	if d.UID == "" || d.Title == "" {
		t.Errorf("dashboard needs a uid and a title (uid %q, title %q)", d.UID, d.Title)
	}
	var hasDatasource bool
	for _, v := range d.Templating.List {
		if v.Name == "datasource" && v.Type == "datasource" && v.Query.Query == "prometheus" {
			hasDatasource = true
		}
		if v.Type == "query" && (v.Datasource == nil || v.Datasource.UID != datasourceVariable) {
			t.Errorf("variable %s: datasource %+v, want uid %s", v.Name, v.Datasource, datasourceVariable)
		}
	}
	if !hasDatasource {
		t.Errorf("no template variable datasource of type datasource (query prometheus)")
	}
	ids := map[int]string{}
	var graphs int
	for _, p := range d.Panels {
		if prev, dup := ids[p.ID]; dup || p.ID == 0 {
			t.Errorf("panel %q: id %d is zero or also panel %q's", p.Title, p.ID, prev)
		}
		ids[p.ID] = p.Title
		if p.Type == "row" {
			continue
		}
		graphs++
		if p.Title == "" {
			t.Errorf("panel %d has no title", p.ID)
		}
		if p.Datasource == nil || p.Datasource.UID != datasourceVariable || p.Datasource.Type != "prometheus" {
			t.Errorf("panel %d (%s): datasource %+v, want prometheus %s", p.ID, p.Title, p.Datasource, datasourceVariable)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %d (%s) queries nothing", p.ID, p.Title)
		}
		refs := map[string]bool{}
		for _, tg := range p.Targets {
			if tg.Datasource == nil || tg.Datasource.UID != datasourceVariable {
				t.Errorf("panel %d (%s) target %s: datasource %+v, want %s", p.ID, p.Title, tg.RefID, tg.Datasource, datasourceVariable)
			}
			if tg.RefID == "" || refs[tg.RefID] {
				t.Errorf("panel %d (%s): target refId %q is empty or repeated", p.ID, p.Title, tg.RefID)
			}
			refs[tg.RefID] = true
			if tg.Expr == "" {
				t.Errorf("panel %d (%s) target %s has no expression", p.ID, p.Title, tg.RefID)
			}
		}
	}
	if graphs == 0 {
		t.Error("dashboard has no panels")
	}
}

// TestDashboardQueries parses every panel query with Prometheus's parser and checks that each
// metric it reads is registered by the plugins the binary is built from.
func TestDashboardQueries(t *testing.T) {
	queries := dashboardQueries(t)
	if len(queries) == 0 {
		t.Fatal("no queries in dashboard.json")
	}
	checkRegistered(t, queries)
}

// checkRegistered fails for every metric a query reads that no collector of this process
// describes (and that Prometheus does not make itself).
func checkRegistered(t *testing.T, queries []query) {
	t.Helper()
	for _, q := range queries {
		if len(q.metrics) == 0 {
			t.Errorf("%s: %q reads no metric", q.source, q.expr)
		}
		for _, m := range q.metrics {
			if !madeByPrometheus[m] && !registeredFamily(t, m) {
				t.Errorf("%s reads %s, which nothing we build exports", q.source, m)
			}
		}
	}
}
