//go:build race

package proxy

// raceEnabled: the race detector slows every goroutine several times over,
// unevenly, so latency-bound assertions (the overload test's deadlines)
// mean nothing under it.
const raceEnabled = true
