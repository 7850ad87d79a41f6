package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// The request logging modes of the demo (its -logging flag).
const (
	LoggingSluice = "sluice"
	LoggingOff    = "off"
	LoggingEcho   = "echo"
	// LoggingEchoFile is Echo's RequestLogger writing a JSON line per request to RequestLogFile through
	// a buffered writer, for a sidecar (Vector, Fluent Bit) to tail and ship.
	LoggingEchoFile = "echo-file"
)

// RequestLogFile is where the demo with -logging echo-file writes its request log: in its data
// directory (where its blobs go by default), relative to its working directory.
var RequestLogFile = filepath.Join("sluice-data", "requests.ndjson")

// server is a `sluice demo` process.
type server struct {
	cmd  *exec.Cmd
	base string // http://127.0.0.1:PORT
	log  string // its stderr
	done chan struct{}
	err  error // of Wait, once done is closed
}

// startServer runs `bin demo -logging mode` listening on a free loopback port, with the SLUICE_*
// variables of env (later maps win) and none inherited, its output in dir, and waits until /healthz
// answers. With a
// profileDir the demo writes its CPU and heap profiles there, named after label, when it stops.
func startServer(ctx context.Context, bin, mode, label, dir, profileDir string, env ...map[string]string) (*server, error) {
	s := &server{log: filepath.Join(dir, "demo-"+label+".log"), done: make(chan struct{})}
	logFile, err := os.Create(s.log)
	if err != nil {
		return nil, err
	}
	defer logFile.Close() // the child has its own descriptor
	args := []string{"demo", "-logging", mode}
	if profileDir != "" {
		args = append(args, "-cpuprofile", filepath.Join(profileDir, "demo-"+label+".cpu.pprof"),
			"-memprofile", filepath.Join(profileDir, "demo-"+label+".heap.pprof"))
	}
	s.cmd = exec.Command(bin, args...)
	s.cmd.Dir = dir
	s.cmd.Stderr = logFile
	s.cmd.Env = append(inheritedEnv(), "SLUICE_HTTP_ADDR=127.0.0.1:0", "SLUICE_SERVICE=bench-"+mode)
	for _, e := range env {
		for k, v := range e {
			s.cmd.Env = append(s.cmd.Env, k+"="+v)
		}
	}
	// Not StdoutPipe: its reader must not be read after Wait, which runs concurrently here.
	stdout, stdoutW := io.Pipe()
	s.cmd.Stdout = stdoutW
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s demo: %w", bin, err)
	}
	go func() {
		s.err = s.cmd.Wait()
		stdoutW.Close()
		close(s.done)
	}()
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if _, rest, ok := strings.Cut(sc.Text(), "listening on http://"); ok {
				select {
				case addr <- strings.Fields(rest)[0]:
				default:
				}
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
	}()
	fail := func(err error) (*server, error) {
		s.kill()
		return nil, fmt.Errorf("%w; the demo's log: %s", err, s.logTail())
	}
	select {
	case a := <-addr:
		s.base = "http://" + a
	case <-s.done:
		return fail(fmt.Errorf("sluice demo exited: %v", s.err))
	case <-time.After(60 * time.Second):
		return fail(errors.New("sluice demo did not listen within 60 s"))
	case <-ctx.Done():
		return fail(ctx.Err())
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if resp, err := http.Get(s.base + "/healthz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return s, nil
			}
		}
		if time.Now().After(deadline) {
			return fail(errors.New("/healthz did not answer 200 within 30 s"))
		}
	}
}

// inheritedEnv is this process's environment without any SLUICE_ variable: the demo refuses unknown
// ones, and a configuration of the user's must not change what is measured.
func inheritedEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SLUICE_") {
			env = append(env, kv)
		}
	}
	return env
}

func (s *server) pid() int { return s.cmd.Process.Pid }

func (s *server) usage() (procUsage, error) { return readProcUsage(s.pid()) }

// metrics scrapes the server's /metrics.
func (s *server) metrics(ctx context.Context) (metrics, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.base+"/metrics", nil)
	if err != nil {
		return metrics{}, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return metrics{}, err
	}
	defer resp.Body.Close()
	return parseMetrics(resp.Body)
}

// stop sends SIGTERM (the demo shuts down in order and flushes), and kills the process if it has not
// exited within wait. It returns the demo's own error, if it exited with one.
func (s *server) stop(wait time.Duration) error {
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
		if s.err != nil {
			return fmt.Errorf("sluice demo: %w; its log: %s", s.err, s.logTail())
		}
		return nil
	case <-time.After(wait):
		s.kill()
		return fmt.Errorf("sluice demo did not stop within %v of SIGTERM; killed", wait)
	}
}

func (s *server) kill() {
	_ = s.cmd.Process.Kill()
	<-s.done
}

// logTail returns the end of the demo's log.
func (s *server) logTail() string {
	b, _ := os.ReadFile(s.log)
	const n = 2000
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return strings.TrimSpace(string(b))
}
