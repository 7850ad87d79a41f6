package bench

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// readMachine describes this machine; what it cannot read stays empty.
func readMachine(ctx context.Context, dsn string) Machine {
	m := Machine{
		CPUs:         runtime.NumCPU(),
		GoVersion:    runtime.Version(),
		OSArch:       runtime.GOOS + "/" + runtime.GOARCH,
		LoadAvgStart: loadAvg(),
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.Lines(string(b)) {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	if kb := procField("/proc/meminfo", "MemTotal"); kb > 0 {
		m.MemTotalBytes = kb << 10
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if conn, err := pgx.Connect(ctx, dsn); err == nil {
		_ = conn.QueryRow(ctx, "SHOW server_version").Scan(&m.PostgresVersion)
		conn.Close(ctx)
	}
	return m
}

// loadAvg returns the 1, 5 and 15 minute load averages.
func loadAvg() []float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return nil
	}
	var out []float64
	for _, f := range strings.Fields(string(b))[:3] {
		v, _ := strconv.ParseFloat(f, 64)
		out = append(out, v)
	}
	return out
}

// procField returns the number of a "Name:   123 kB" line of a /proc file such as /proc/PID/status or
// /proc/meminfo (in kB for memory), or 0.
func procField(path, name string) int64 {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || k != name {
			continue
		}
		f := strings.Fields(v)
		if len(f) == 0 {
			return 0
		}
		n, _ := strconv.ParseInt(f[0], 10, 64)
		return n
	}
	return 0
}

// clockTicks is USER_HZ, the unit of the CPU times in /proc/PID/stat: 100 on every Linux platform Go
// supports.
const clockTicks = 100

// procUsage is a process's CPU time and memory, from /proc.
type procUsage struct {
	CPUSeconds         float64 // user + system
	ChildrenCPUSeconds float64 // user + system of the children it has waited for
	RSSBytes           int64   // VmRSS
	HWMBytes           int64   // VmHWM: the peak RSS
}

// measure is the wall time and the CPU time of a timed part: of this process, and of PostgreSQL.
type measure struct {
	start          time.Time
	self, postgres float64
}

func startMeasure() measure {
	m := measure{self: selfCPUSeconds(), postgres: commandCPUSeconds("postgres")}
	m.start = time.Now()
	return m
}

// cost is what a timed part took.
type cost struct {
	seconds, clientCPU, postgresCPU float64
}

func (m measure) done() cost {
	seconds := time.Since(m.start).Seconds()
	return cost{seconds: seconds, clientCPU: selfCPUSeconds() - m.self, postgresCPU: commandCPUSeconds("postgres") - m.postgres}
}

// selfCPUSeconds is this process's CPU time so far.
func selfCPUSeconds() float64 {
	u, _ := readProcUsage(os.Getpid())
	return u.CPUSeconds
}

// commandCPUSeconds is the CPU time so far of every process whose command is name ("postgres": the
// server and its backends, whoever they serve), with that of their children that have exited (a
// backend whose connection closed is counted in its postmaster's).
func commandCPUSeconds(name string) float64 {
	dirs, _ := filepath.Glob("/proc/[0-9]*/stat")
	var total float64
	for _, path := range dirs {
		stat, err := os.ReadFile(path)
		if err != nil {
			continue
		}
		open, end := bytes.IndexByte(stat, '('), bytes.LastIndexByte(stat, ')')
		if open < 0 || end < open || string(stat[open+1:end]) != name {
			continue
		}
		if pid, err := strconv.Atoi(strings.TrimSpace(string(stat[:open]))); err == nil {
			u, _ := readProcUsage(pid)
			total += u.CPUSeconds + u.ChildrenCPUSeconds
		}
	}
	return total
}

func readProcUsage(pid int) (procUsage, error) {
	var u procUsage
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return u, err
	}
	// pid (comm) state ppid ...: utime, stime, cutime and cstime are fields 14 to 17; comm may hold
	// spaces.
	rest := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
	if len(rest) < 15 {
		return u, fmt.Errorf("/proc/%d/stat: %d fields after the command", pid, len(rest))
	}
	utime, _ := strconv.ParseFloat(rest[11], 64)
	stime, _ := strconv.ParseFloat(rest[12], 64)
	cutime, _ := strconv.ParseFloat(rest[13], 64)
	cstime, _ := strconv.ParseFloat(rest[14], 64)
	u.CPUSeconds = (utime + stime) / clockTicks
	u.ChildrenCPUSeconds = (cutime + cstime) / clockTicks
	status := fmt.Sprintf("/proc/%d/status", pid)
	u.RSSBytes = procField(status, "VmRSS") << 10
	u.HWMBytes = procField(status, "VmHWM") << 10
	return u, nil
}
