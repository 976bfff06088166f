//go:build !race && unix

package rawconn

const raceEnabled = false
