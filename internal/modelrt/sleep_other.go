//go:build !unix

package modelrt

import "time"

// fineSleep falls back to a Go timer where there is no nanosleep.
func fineSleep(d time.Duration) { time.Sleep(d) }
