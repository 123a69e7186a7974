//go:build !race

package completion

// raceEnabled reports whether the test binary runs with the race detector,
// which multiplies the memory a process holds (big-entries allows for it).
const raceEnabled = false
