//go:build race

package packetio

// raceEnabled: the race detector's own allocations make allocation counts meaningless.
const raceEnabled = true
