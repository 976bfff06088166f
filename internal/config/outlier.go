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
// ejected at once (one may always be, the last never is).
//
// Every Interval, an endpoint that failed at least
// FailurePercentageThreshold percent of its calls since the last time is
// ejected the same way, when it made FailurePercentageRequestVolume calls
// or more and so did FailurePercentageMinimumHosts endpoints of its version
// (itself included), with the chance EnforcingFailurePercentage percent.
//
// Envoy's defaults, except enforcing_failure_percentage: 100, not 0 (see
// docs/config.md).
type OutlierDetection struct {
	// ConsecutiveFailures: 1 or more; 0 turns ejection on consecutive
	// failures off.
	ConsecutiveFailures int
	// BaseEjectionTime is more than 0; MaxEjectionTime at least as long.
	BaseEjectionTime, MaxEjectionTime time.Duration
	// MaxEjectionPercent is 1 to 100.
	MaxEjectionPercent int

	// Interval is more than 0.
	Interval time.Duration
	// FailurePercentageThreshold is 1 to 100.
	FailurePercentageThreshold int
	// FailurePercentageMinimumHosts and FailurePercentageRequestVolume
	// are 1 or more.
	FailurePercentageMinimumHosts, FailurePercentageRequestVolume int
	// EnforcingFailurePercentage is 0 (off) to 100.
	EnforcingFailurePercentage int
}

// DefaultOutlierDetection returns the defaults of outlier_detection's
// keys.
func DefaultOutlierDetection() OutlierDetection {
	return OutlierDetection{
		ConsecutiveFailures: 5,
		BaseEjectionTime:    30 * time.Second,
		MaxEjectionTime:     300 * time.Second,
		MaxEjectionPercent:  10,

		Interval:                       10 * time.Second,
		FailurePercentageThreshold:     85,
		FailurePercentageMinimumHosts:  5,
		FailurePercentageRequestVolume: 50,
		EnforcingFailurePercentage:     100,
	}
}

var outlierKeys = []string{
	"consecutive_failures", "base_ejection_time", "max_ejection_time", "max_ejection_percent",
	"interval", "failure_percentage_threshold", "failure_percentage_minimum_hosts",
	"failure_percentage_request_volume", "enforcing_failure_percentage",
}

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
		case "interval":
			o.Interval = d.duration(v, path, o.Interval)
		case "failure_percentage_threshold":
			o.FailurePercentageThreshold = d.int(v, path, o.FailurePercentageThreshold)
		case "failure_percentage_minimum_hosts":
			o.FailurePercentageMinimumHosts = d.int(v, path, o.FailurePercentageMinimumHosts)
		case "failure_percentage_request_volume":
			o.FailurePercentageRequestVolume = d.int(v, path, o.FailurePercentageRequestVolume)
		case "enforcing_failure_percentage":
			o.EnforcingFailurePercentage = d.int(v, path, o.EnforcingFailurePercentage)
		}
	})
}

func (c *checker) outlier(o OutlierDetection, path string) {
	if o == (OutlierDetection{}) {
		return // the defaults
	}
	if o.ConsecutiveFailures < 0 {
		c.errorf(path+".consecutive_failures", "%d is negative; must be 1 or more, or 0 to turn ejection on consecutive failures off", o.ConsecutiveFailures)
	}
	c.positive(path+".base_ejection_time", o.BaseEjectionTime)
	if o.MaxEjectionTime < o.BaseEjectionTime {
		c.errorf(path+".max_ejection_time", "%v is shorter than base_ejection_time (%v); must be at least as long", o.MaxEjectionTime, o.BaseEjectionTime)
	}
	if p := o.MaxEjectionPercent; p < 1 || p > 100 {
		c.errorf(path+".max_ejection_percent", "%d is not a percentage; must be 1 to 100", p)
	}
	c.failurePercentage(o, path)
}

func (c *checker) failurePercentage(o OutlierDetection, path string) {
	c.positive(path+".interval", o.Interval)
	if p := o.FailurePercentageThreshold; p < 1 || p > 100 {
		c.errorf(path+".failure_percentage_threshold", "%d is not a percentage; must be 1 to 100", p)
	}
	if n := o.FailurePercentageMinimumHosts; n < 1 {
		c.errorf(path+".failure_percentage_minimum_hosts", "%d is too few; must be 1 or more", n)
	}
	if n := o.FailurePercentageRequestVolume; n < 1 {
		c.errorf(path+".failure_percentage_request_volume", "%d is too few; must be 1 or more", n)
	}
	if p := o.EnforcingFailurePercentage; p < 0 || p > 100 {
		c.errorf(path+".enforcing_failure_percentage", "%d is not a percentage; must be 0 (off) to 100", p)
	}
}
