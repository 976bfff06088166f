package config

import (
	"time"

	"go.yaml.in/yaml/v3"
)

// OutlierDetection is the file's outlier_detection: the sidecar ejects an
// endpoint whose calls on the data path (batches and pass-through) fail
// ConsecutiveFailures times in a row — no answer, a timeout or a 5xx — for
// BaseEjectionTime × its ejections, at most MaxEjectionTime, whatever its
// probes say; at most MaxEjectionPercent of a version's endpoints are
// ejected at once (one may always be, the last never is). Envoy's defaults.
type OutlierDetection struct {
	// ConsecutiveFailures: 1 or more; 0 turns outlier detection off.
	ConsecutiveFailures int
	// BaseEjectionTime is more than 0; MaxEjectionTime at least as long.
	BaseEjectionTime, MaxEjectionTime time.Duration
	// MaxEjectionPercent is 1 to 100.
	MaxEjectionPercent int
}

// DefaultOutlierDetection returns the defaults of outlier_detection's
// keys.
func DefaultOutlierDetection() OutlierDetection {
	return OutlierDetection{
		ConsecutiveFailures: 5,
		BaseEjectionTime:    30 * time.Second,
		MaxEjectionTime:     300 * time.Second,
		MaxEjectionPercent:  10,
	}
}

var outlierKeys = []string{"consecutive_failures", "base_ejection_time", "max_ejection_time", "max_ejection_percent"}

func (d *decoder) outlier(n *yaml.Node, path string, o *OutlierDetection) {
	d.mapping(n, path, outlierKeys, func(key string, v *yaml.Node, path string) {
		switch key {
		case "consecutive_failures":
			o.ConsecutiveFailures = d.int(v, path, o.ConsecutiveFailures)
		case "base_ejection_time":
			o.BaseEjectionTime = d.duration(v, path, o.BaseEjectionTime)
		case "max_ejection_time":
			o.MaxEjectionTime = d.duration(v, path, o.MaxEjectionTime)
		case "max_ejection_percent":
			o.MaxEjectionPercent = d.int(v, path, o.MaxEjectionPercent)
		}
	})
}

func (c *checker) outlier(o OutlierDetection, path string) {
	if o == (OutlierDetection{}) {
		return // the defaults
	}
	if o.ConsecutiveFailures < 0 {
		c.errorf(path+".consecutive_failures", "%d is negative; must be 1 or more, or 0 to turn outlier detection off", o.ConsecutiveFailures)
	}
	c.positive(path+".base_ejection_time", o.BaseEjectionTime)
	if o.MaxEjectionTime < o.BaseEjectionTime {
		c.errorf(path+".max_ejection_time", "%v is shorter than base_ejection_time (%v); must be at least as long", o.MaxEjectionTime, o.BaseEjectionTime)
	}
	if p := o.MaxEjectionPercent; p < 1 || p > 100 {
		c.errorf(path+".max_ejection_percent", "%d is not a percentage; must be 1 to 100", p)
	}
}
