package testenv

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// KafkaOptions configure the Kafka-protocol broker that Kafka starts.
type KafkaOptions struct {
	// Partitions is the partition count of a topic created without one (and of Topics); 0 means 10.
	Partitions int
	// Topics are created at start.
	Topics []string
	// AutoCreateTopics creates a topic when a client asks for its metadata (what a stock Watermill
	// publisher, which declares nothing, needs).
	AutoCreateTopics bool
}

// KafkaProc is a Kafka-protocol broker (franz-go's kfake, built from internal/kfake) running as a
// process of its own on 127.0.0.1, with a data directory that keeps its topics, records, consumer
// groups and committed offsets across Kill and Start. Kafka stops it when the test ends; a program
// that starts one with StartKafka stops it with Close.
type KafkaProc struct {
	t       testing.TB // nil when started by StartKafka: Kill and Start then panic on a failure
	bin     string
	args    []string
	addr    string
	logPath string

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{} // closed when cmd has exited
}

var kfakeBuild struct {
	once sync.Once
	bin  string
	err  error
}

// Kafka builds kfake (once per test binary; Go's build cache makes it quick after the first time),
// starts it on a free port and returns it once it accepts connections.
func Kafka(t testing.TB, o KafkaOptions) *KafkaProc {
	t.Helper()
	k, err := StartKafka(o, t.TempDir())
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	k.t = t
	t.Cleanup(k.Close)
	return k
}

// StartKafka is Kafka for a program that is not a test (the benchmark harness): kfake keeps its data
// and log in dir, and runs until Close. The working directory must be inside sluice's checkout,
// where internal/kfake is built from.
func StartKafka(o KafkaOptions, dir string) (*KafkaProc, error) {
	kfakeBuild.once.Do(func() { kfakeBuild.bin, kfakeBuild.err = buildKfake() })
	if kfakeBuild.err != nil {
		return nil, fmt.Errorf("build internal/kfake: %w", kfakeBuild.err)
	}
	port, err := freePort()
	if err != nil {
		return nil, fmt.Errorf("find a free port for kfake: %w", err)
	}
	k := &KafkaProc{bin: kfakeBuild.bin, addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
		logPath: filepath.Join(dir, "kfake.log"),
		args:    []string{"-port", strconv.Itoa(port), "-data-dir", filepath.Join(dir, "data")}}
	if o.Partitions > 0 {
		k.args = append(k.args, "-partitions", strconv.Itoa(o.Partitions))
	}
	if len(o.Topics) > 0 {
		k.args = append(k.args, "-topics", strings.Join(o.Topics, ","))
	}
	if o.AutoCreateTopics {
		k.args = append(k.args, "-auto-create-topics")
	}
	if err := k.start(); err != nil {
		return nil, err
	}
	return k, nil
}

// Addr is the broker's host:port (what bus.url holds), the same across Kill and Start.
func (k *KafkaProc) Addr() string { return k.addr }

// Kill kills the broker with SIGKILL (a crash: nothing is flushed by the process) and waits until it
// is gone. Killing a broker that is not running does nothing.
func (k *KafkaProc) Kill() {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.cmd == nil {
		return
	}
	_ = k.cmd.Process.Signal(syscall.SIGKILL)
	<-k.exited
	k.cmd = nil
}

// Start starts the broker again, on the same port and data directory, and returns once it accepts
// connections; it fails the test when it cannot within 30 s. Starting a running broker does nothing.
func (k *KafkaProc) Start() {
	if k.t != nil {
		k.t.Helper()
	}
	if err := k.start(); err != nil {
		if k.t == nil {
			panic("testenv: " + err.Error())
		}
		k.t.Fatalf("testenv: %v", err)
	}
}

// start is Start that returns its failure.
func (k *KafkaProc) start() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.cmd != nil {
		return nil
	}
	// The port may still be held for an instant by the killed process's socket: try again for a while.
	var err error
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		if err = k.startOnce(); err == nil || time.Now().After(deadline) {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("start kfake on %s: %w", k.addr, err)
	}
	return nil
}

// startOnce starts the process and waits for its ready line; on failure the process is gone.
func (k *KafkaProc) startOnce() error {
	logf, err := os.OpenFile(k.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(k.bin, k.args...)
	cmd.Stderr = logf
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan struct{})
	ready := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if addr, ok := strings.CutPrefix(sc.Text(), "kfake ready "); ok {
				ready <- addr
			}
		}
	}()
	go func() { _ = cmd.Wait(); close(exited) }()
	select {
	case addr := <-ready:
		if addr != k.addr {
			_ = cmd.Process.Kill()
			<-exited
			return fmt.Errorf("kfake listens on %s, want %s", addr, k.addr)
		}
		k.cmd, k.exited = cmd, exited
		return nil
	case <-exited:
		return fmt.Errorf("kfake exited at start (%s): %s", cmd.ProcessState, k.logTail())
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		<-exited
		return fmt.Errorf("kfake did not say it was ready within 30 s: %s", k.logTail())
	}
}

// Close stops the broker with SIGTERM (SIGKILL after 10 s). Kafka calls it when the test ends.
func (k *KafkaProc) Close() {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.cmd == nil {
		return
	}
	_ = k.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-k.exited:
	case <-time.After(10 * time.Second):
		_ = k.cmd.Process.Kill()
		<-k.exited
	}
	k.cmd = nil
}

func (k *KafkaProc) logTail() string {
	b, _ := os.ReadFile(k.logPath)
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return strings.TrimSpace(string(b))
}

// buildKfake builds internal/kfake into a directory named after its sources' hash, so that test
// binaries running at once share one build and a changed source gets a new one.
func buildKfake() (string, error) {
	root, err := repoRoot()
	if err != nil {
		return "", err
	}
	src := filepath.Join(root, "internal", "kfake")
	h := sha256.New()
	for _, name := range []string{"main.go", "go.mod", "go.sum"} {
		b, err := os.ReadFile(filepath.Join(src, name))
		if err != nil {
			return "", err
		}
		h.Write(b)
	}
	bin := filepath.Join(os.TempDir(), "sluice-kfake-"+hex.EncodeToString(h.Sum(nil))[:16], "kfake")
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	if err := os.MkdirAll(filepath.Dir(bin), 0o755); err != nil {
		return "", err
	}
	tmp := fmt.Sprintf("%s.%d", bin, os.Getpid())
	cmd := exec.Command("go", "build", "-C", src, "-o", tmp, ".")
	cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=readonly")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build -C %s: %v\n%s", src, err, out)
	}
	return bin, os.Rename(tmp, bin)
}

// repoRoot is the directory of sluice's go.mod, found upwards from the test's working directory.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && bytes.HasPrefix(b, []byte("module github.com/sluicelog/sluice\n")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod of module github.com/sluicelog/sluice above the working directory")
		}
		dir = parent
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
