//go:build !race

package packetio

const raceEnabled = false
