//go:build race && unix

package rawconn

// The race detector learns of ordering through I/O from the net package's
// own reads and writes (each write releases, each read acquires, one
// shared point). Calls made directly would hide that ordering and report
// races that the kernel orders, so a race-enabled build uses the net
// package's calls; rawconn's own tests turn the direct path back on.
const raceEnabled = true
