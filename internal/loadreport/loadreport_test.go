package loadreport

import (
	"sync"
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	r, err := Parse("TEXT application_utilization=0.2500, rps_fractional=12.50, named_metrics.queue_depth=3")
	if err != nil {
		t.Fatal(err)
	}
	if r.Utilization != 0.25 || r.RPS != 12.5 || r.Named["queue_depth"] != 3 {
		t.Errorf("got %+v", r)
	}
	r, err = Parse("TEXT cpu_utilization=0.5")
	if err != nil || r.Utilization != 0.5 || r.RPS != -1 || r.Named != nil {
		t.Errorf("cpu fallback: %+v, %v", r, err)
	}
	if r, err := Parse("TEXT"); err != nil || r.Utilization != -1 {
		t.Errorf("empty report: %+v, %v", r, err)
	}
	for _, bad := range []string{"", "JSON {}", "TEXTX a=1", "TEXT a", "TEXT rps_fractional=-1", "TEXT application_utilization=NaN", "TEXT a=Inf", "TEXT a=x"} {
		if _, err := Parse(bad); err == nil {
			t.Errorf("Parse(%q): no error", bad)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add("TEXT application_utilization=0.2500, rps_fractional=12.50, named_metrics.queue_depth=3")
	f.Add("TEXT cpu_utilization=1")
	f.Add("TEXT ,,, a=1")
	f.Fuzz(func(t *testing.T, h string) {
		r, err := Parse(h)
		if err != nil {
			return
		}
		if r.Utilization < -1 || r.RPS < -1 {
			t.Errorf("%q: negative values %+v", h, r)
		}
		for k, v := range r.Named {
			if v < 0 {
				t.Errorf("%q: named %q = %v", h, k, v)
			}
		}
	})
}

func TestAggregator(t *testing.T) {
	a := New()
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 100 {
				a.Record("c", "b:1", 4, time.Millisecond, false, "TEXT application_utilization=0.5, rps_fractional=10")
			}
		})
	}
	wg.Wait()
	a.Record("c", "a:1", 0, 2*time.Millisecond, true, "garbage")
	got := a.Take()
	if len(got) != 2 || got[0].Endpoint != "a:1" || got[1].Endpoint != "b:1" {
		t.Fatalf("got %+v", got)
	}
	if e := got[0]; e.Errors != 1 || e.Batches != 0 || e.UtilSamples != 0 || e.Utilization != -1 || e.LatencySum != 2*time.Millisecond {
		t.Errorf("a: %+v", e)
	}
	if b := got[1]; b.Batches != 400 || b.Rows != 1600 || b.UtilSamples != 400 || b.UtilSum != 200 || b.RPSSum != 4000 || b.Utilization != 0.5 || b.RPS != 10 || b.LatencySum != 400*time.Millisecond {
		t.Errorf("b: %+v", b)
	}
	if got := a.Take(); len(got) != 0 {
		t.Errorf("second Take: %+v", got)
	}
	var nilAgg *Aggregator
	nilAgg.Record("c", "x", 1, 0, false, "")
	if nilAgg.Take() != nil {
		t.Error("nil Take")
	}
}
