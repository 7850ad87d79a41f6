package bench

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// kfakeProc is a Kafka-protocol broker (franz-go's kfake, built from the checkout's internal/kfake, a
// module of its own) running as a process of its own for one measurement, on a free port, with a data
// directory (as the kafka driver's tests run it): the bus scenario's Kafka.
type kfakeProc struct {
	addr   string
	dir    string
	cmd    *exec.Cmd
	exited chan struct{}
}

// startKfake builds internal/kfake and starts it, and returns once it accepts connections.
func startKfake(ctx context.Context) (*kfakeProc, error) {
	dir, err := os.MkdirTemp("", "sluice-bench-kfake")
	if err != nil {
		return nil, err
	}
	k := &kfakeProc{dir: dir, exited: make(chan struct{})}
	fail := func(err error) (*kfakeProc, error) {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("kfake: %w", err)
	}
	out, err := exec.CommandContext(ctx, "go", "list", "-m", "-f", "{{.Dir}}", "github.com/sluicelog/sluice").Output()
	if err != nil {
		return fail(fmt.Errorf("find the sluice module: %w", err))
	}
	src := filepath.Join(strings.TrimSpace(string(out)), "internal", "kfake")
	bin := filepath.Join(dir, "kfake")
	build := exec.CommandContext(ctx, "go", "build", "-C", src, "-o", bin, ".")
	build.Env = append(os.Environ(), "GOWORK=off")
	if out, err := build.CombinedOutput(); err != nil {
		return fail(fmt.Errorf("go build -C %s: %v\n%s", src, err, out))
	}
	k.cmd = exec.Command(bin, "-port", "0", "-data-dir", filepath.Join(dir, "data"))
	stdout, err := k.cmd.StdoutPipe()
	if err != nil {
		return fail(err)
	}
	log, err := os.Create(filepath.Join(dir, "kfake.log"))
	if err != nil {
		return fail(err)
	}
	defer log.Close()
	k.cmd.Stderr = log
	if err := k.cmd.Start(); err != nil {
		return fail(err)
	}
	ready := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if addr, ok := strings.CutPrefix(sc.Text(), "kfake ready "); ok {
				ready <- addr
			}
		}
	}()
	go func() { _ = k.cmd.Wait(); close(k.exited) }()
	select {
	case k.addr = <-ready:
		return k, nil
	case <-k.exited:
		b, _ := os.ReadFile(filepath.Join(dir, "kfake.log"))
		return fail(fmt.Errorf("exited at start (%s): %s", k.cmd.ProcessState, b))
	case <-time.After(30 * time.Second):
		k.stop()
		return nil, fmt.Errorf("kfake did not say it was ready within 30 s")
	}
}

// stop stops kfake (SIGTERM, SIGKILL after 10 s) and removes its directory.
func (k *kfakeProc) stop() {
	_ = k.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-k.exited:
	case <-time.After(10 * time.Second):
		_ = k.cmd.Process.Kill()
		<-k.exited
	}
	os.RemoveAll(k.dir)
}
