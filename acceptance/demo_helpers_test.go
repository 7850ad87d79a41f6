package acceptance_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/sluicelog/sluice/event"
	"github.com/sluicelog/sluice/internal/testenv"
)

// sluiceBin is the binary under test, built once by TestMain.
var sluiceBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "sluice-acceptance")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	sluiceBin = filepath.Join(dir, "sluice")
	build := exec.Command("go", "build", "-race", "-o", sluiceBin, "github.com/sluicelog/sluice/cmd/sluice")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build sluice:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// demo is a running `sluice demo` process.
type demo struct {
	t      *testing.T
	cmd    *exec.Cmd
	base   string // http://127.0.0.1:port
	dsn    string
	azure  string // connection string
	cont   string // container
	stdout *syncBuffer
	stderr *syncBuffer
	done   chan struct{}
	err    error
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// startDemo runs `sluice demo` against a fresh database and a fresh Azurite container, with the YAML
// config given (may be empty) and extra SLUICE_ variables, and waits until it serves.
func startDemo(t *testing.T, yaml string, env ...string) *demo {
	t.Helper()
	st := &demo{dsn: testenv.Postgres(t), azure: testenv.Azurite(t), cont: testenv.Container(t)}
	return startSluice(t, st, "demo", yaml, env...)
}

// startSluice runs a sluice command (demo, or worker) against the stores of st (its dsn, azure and
// cont), with the YAML config given (may be empty) and extra SLUICE_ variables, and waits until it
// answers /healthz: the demo on http_addr, a worker on admin_addr.
func startSluice(t *testing.T, st *demo, command, yaml string, env ...string) *demo {
	t.Helper()
	d := &demo{t: t, dsn: st.dsn, azure: st.azure, cont: st.cont,
		stdout: &syncBuffer{}, stderr: &syncBuffer{}, done: make(chan struct{})}
	addr := freePort(t)
	d.base = "http://" + addr
	args := []string{command}
	if yaml != "" {
		file := filepath.Join(t.TempDir(), "sluice.yaml")
		if err := os.WriteFile(file, []byte(yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		args = append(args, "-config", file)
	}
	listen := "SLUICE_HTTP_ADDR="
	if command == "worker" {
		listen = "SLUICE_ADMIN_ADDR="
	}
	d.cmd = exec.Command(sluiceBin, args...)
	d.cmd.Dir = t.TempDir()
	d.cmd.Env = append(cleanEnv(),
		listen+addr,
		"SLUICE_POSTGRES_DSN="+d.dsn,
		"SLUICE_BLOB_CONNECTION_STRING="+d.azure,
		"SLUICE_BLOB_CONTAINER="+d.cont,
	)
	d.cmd.Env = append(d.cmd.Env, env...)
	d.cmd.Stdout, d.cmd.Stderr = d.stdout, d.stderr
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { d.err = d.cmd.Wait(); close(d.done) }()
	t.Cleanup(func() {
		select {
		case <-d.done:
		default:
			_ = d.cmd.Process.Kill()
			<-d.done
		}
		if t.Failed() {
			t.Logf("sluice %s stdout:\n%s\nsluice %s stderr (tail):\n%s", command, d.stdout, command, tail(d.stderr.String(), 4000))
		}
	})
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get(d.base + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return d
			}
		}
		select {
		case <-d.done:
			t.Fatalf("sluice %s exited at start: %v\n%s", command, d.err, d.stderr)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("sluice %s did not serve within 60s\n%s", command, d.stderr)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// cleanEnv is the test's environment without SLUICE_ configuration (a developer's shell may set some).
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SLUICE_") {
			env = append(env, kv)
		}
	}
	return env
}

// stop sends SIGTERM and returns the exit code.
func (d *demo) stop(timeout time.Duration) int {
	d.t.Helper()
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		d.t.Fatal(err)
	}
	select {
	case <-d.done:
	case <-time.After(timeout):
		d.t.Fatalf("sluice %s did not exit within %v of SIGTERM", d.cmd.Args[1], timeout)
	}
	return d.cmd.ProcessState.ExitCode()
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// row is what the tests read back of an application_logs row.
type row struct {
	Level  string
	Kind   string
	Status *int
}

// connect opens a connection to dsn for the test's queries, closed when the test ends; the context
// bounds them.
func connect(t *testing.T, dsn string) (context.Context, *pgx.Conn) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return ctx, conn
}

// httpRows returns the kind=http rows of application_logs by request id (all copies).
func httpRows(t *testing.T, dsn string) map[string][]row {
	t.Helper()
	ctx, conn := connect(t, dsn)
	rows, err := conn.Query(ctx, `SELECT request_id, level, kind, status FROM application_logs WHERE kind = 'http'`)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42P01" { // undefined_table: not migrated yet
		return map[string][]row{}
	}
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]row{}
	for rows.Next() {
		var id string
		var r row
		if err := rows.Scan(&id, &r.Level, &r.Kind, &r.Status); err != nil {
			t.Fatal(err)
		}
		out[id] = append(out[id], r)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// blobEvents reads every blob of the container and returns the http events by request id (all
// copies), and the number of blobs (dead letters included).
func blobEvents(t *testing.T, azure, container string) (map[string][]*event.Event, int) {
	t.Helper()
	events, _, blobs := archive(t, azure, container)
	out := map[string][]*event.Event{}
	for _, e := range events {
		if e.Kind == event.KindHTTP {
			out[e.RequestID] = append(out[e.RequestID], e)
		}
	}
	return out, blobs
}

// request is one request of a burst and what its log must say.
type request struct {
	id     string
	method string
	path   string
	body   string
	status int    // the status the client must get
	level  string // the level its event must have
}

// burst builds n requests: 60% 200 (a third of them POST /echo with a JSON body), 20% 404, 10% 500,
// 10% panics.
func burst(n int) []request {
	reqs := make([]request, n)
	for i := range reqs {
		r := request{id: "acc-" + uuid.NewString()}
		switch i % 10 {
		case 0, 1, 2, 3:
			r.method, r.path, r.status, r.level = http.MethodGet, "/hello", 200, "INFO"
		case 4, 5:
			r.method, r.path, r.status, r.level = http.MethodPost, "/echo", 200, "INFO"
			r.body = fmt.Sprintf(`{"order":%d,"items":["a","b"],"note":"caf\u00e9"}`, i)
		case 6, 7:
			r.method, r.path, r.status, r.level = http.MethodGet, fmt.Sprintf("/missing/%d", i), 404, "WARN"
		case 8:
			r.method, r.path, r.status, r.level = http.MethodGet, "/fail", 500, "ERROR"
		case 9:
			r.method, r.path, r.status, r.level = http.MethodGet, "/panic", 500, "ERROR"
		}
		reqs[i] = r
	}
	return reqs
}

// send runs the requests with a few workers and checks every response status.
func send(t *testing.T, base string, reqs []request) {
	t.Helper()
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
	work := make(chan request)
	errs := make(chan error, len(reqs))
	var wg sync.WaitGroup
	for w := 0; w < 16; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := range work {
				var body *strings.Reader
				if r.body != "" {
					body = strings.NewReader(r.body)
				} else {
					body = strings.NewReader("")
				}
				req, _ := http.NewRequest(r.method, base+r.path, body)
				req.Header.Set("X-Request-ID", r.id)
				if r.body != "" {
					req.Header.Set("Content-Type", "application/json")
				}
				resp, err := client.Do(req)
				if err != nil {
					errs <- fmt.Errorf("%s %s: %w", r.method, r.path, err)
					continue
				}
				resp.Body.Close()
				if resp.StatusCode != r.status {
					errs <- fmt.Errorf("%s %s: status %d, want %d", r.method, r.path, resp.StatusCode, r.status)
				}
				if got := resp.Header.Get("X-Request-ID"); got != r.id {
					errs <- fmt.Errorf("%s %s: X-Request-ID %q, want %q", r.method, r.path, got, r.id)
				}
			}
		}()
	}
	for _, r := range reqs {
		work <- r
	}
	close(work)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		t.FailNow()
	}
}

// checkStored asserts exactly one PostgreSQL row per WARN/ERROR request with its level and status, no
// row for the others, and exactly one blob line per request.
func checkStored(t *testing.T, reqs []request, rows map[string][]row, lines map[string][]*event.Event) {
	t.Helper()
	known := map[string]bool{}
	for _, r := range reqs {
		known[r.id] = true
		got := rows[r.id]
		switch r.level {
		case "INFO":
			if len(got) != 0 {
				t.Errorf("%s %s (%s): %d rows, want none", r.method, r.path, r.id, len(got))
			}
		default:
			if len(got) != 1 {
				t.Errorf("%s %s (%s): %d rows, want 1", r.method, r.path, r.id, len(got))
			} else if got[0].Level != r.level || got[0].Status == nil || *got[0].Status != r.status {
				t.Errorf("%s %s (%s): row level %s status %v, want %s %d", r.method, r.path, r.id, got[0].Level, got[0].Status, r.level, r.status)
			}
		}
		if n := len(lines[r.id]); n != 1 {
			t.Errorf("%s %s (%s): %d blob lines, want 1", r.method, r.path, r.id, n)
		} else if e := lines[r.id][0]; string(e.Level) != r.level || e.Status != r.status {
			t.Errorf("%s %s (%s): blob line level %s status %d, want %s %d", r.method, r.path, r.id, e.Level, e.Status, r.level, r.status)
		}
	}
	for id := range rows {
		if !known[id] {
			t.Errorf("row for a request never sent: %q", id)
		}
	}
}

// eventually polls check until it returns true or the deadline passes.
func eventually(t *testing.T, within time.Duration, what string, check func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !check() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, within)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
