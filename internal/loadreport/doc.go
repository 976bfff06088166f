// Package loadreport parses the ORCA endpoint-load-metrics header that
// model runtimes return (TEXT form) and aggregates, per endpoint of each
// cluster, what the sidecar saw since the last report: batches, rows,
// errors, latency and the runtime's last reported utilization and rate.
// The sidecar's LRS client (package xdsclient) drains an Aggregator every
// load-reporting interval.
package loadreport
