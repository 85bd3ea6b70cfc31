//go:build !unix

package bench

import "time"

// processCPU is not measured here: the figures that use it read 0.
func processCPU() time.Duration { return 0 }

// machineCPU is not measured here.
func machineCPU() (busy, total float64) { return 0, 0 }
