// Package profiling owns the CPU and heap profiles that sluice's commands write on request (sluice demo
// -cpuprofile/-memprofile, sluice-bench -cpuprofile).
package profiling

import (
	"errors"
	"os"
	"runtime"
	"runtime/pprof"
)

// WithCPU runs run, profiling the CPU into file when file is not empty.
func WithCPU(file string, run func() error) error {
	if file == "" {
		return run()
	}
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return err
	}
	err = run()
	pprof.StopCPUProfile()
	return errors.Join(err, f.Close())
}

// WriteHeap writes a heap profile to file, after a collection (the profile shows the heap as of the
// last one).
func WriteHeap(file string) error {
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	runtime.GC()
	return errors.Join(pprof.WriteHeapProfile(f), f.Close())
}
