package testenv

import (
	"fmt"
	"net"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

// Server is a server process of a test's own (a broker on a free port, its data in a temporary
// directory), for tests that kill it with kill -9 and start it again. It is killed when the test ends.
type Server struct {
	Port int
	Dir  string
	t    testing.TB
	argv []string
	cmd  *exec.Cmd
}

// StartServer finds bin (on PATH, or at the path given), picks a free port and starts the server
// with the arguments args returns for them, waiting until the port accepts connections.
func StartServer(t testing.TB, bin string, args func(port int, dir string) []string) *Server {
	t.Helper()
	path, err := exec.LookPath(bin)
	if err != nil {
		t.Fatalf("testenv: %s is not installed (this machine kind has it): %v", bin, err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	_ = l.Close()
	dir := t.TempDir()
	s := &Server{Port: port, Dir: dir, t: t, argv: append([]string{path}, args(port, dir)...)}
	s.Start()
	t.Cleanup(s.Kill)
	return s
}

// Start starts the server (again) and waits until it accepts connections, for 30 s at most.
func (s *Server) Start() {
	s.t.Helper()
	s.cmd = exec.Command(s.argv[0], s.argv[1:]...)
	if err := s.cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", s.Port)); err == nil {
			_ = c.Close()
			return
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("testenv: %s did not accept connections on port %d within 30 s", s.argv[0], s.Port)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Kill kills the server with SIGKILL (kill -9) and waits for it to end.
func (s *Server) Kill() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGKILL)
	_, _ = s.cmd.Process.Wait()
	s.cmd = nil
}
