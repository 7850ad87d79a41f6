package acceptance_test

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/sluicelog/sluice/bus"
	"github.com/sluicelog/sluice/event"
	"github.com/sluicelog/sluice/internal/testenv"
	"github.com/sluicelog/sluice/subscribers"
	"github.com/sluicelog/sluice/subscribers/blobsink"
	"github.com/sluicelog/sluice/subscribers/blobsink/azurestore"
	"github.com/sluicelog/sluice/subscribers/sinktest"
)

// shortFlush makes the routes write within a fraction of a second, so the test need not wait for
// the default 5 s and 10 s windows.
const shortFlush = `
routes:
  - {name: postgres, sink: postgres, levels: [WARN, ERROR], batch: {max_wait: 300ms}}
  - {name: blob, sink: blob, batch: {max_wait: 500ms}}
`

// The whole pipeline: 1,000 requests of every outcome; warnings and errors become one row each in
// PostgreSQL, every request one line in the Azurite archive.
func TestDemoLogsEveryRequestToPostgresAndBlob(t *testing.T) {
	d := startDemo(t, shortFlush)
	reqs := burst(1000)
	send(t, d.base, reqs)

	eventually(t, 60*time.Second, "400 WARN/ERROR rows and 1000 blob lines", func() bool {
		lines, _ := blobEvents(t, d.azure, d.cont)
		return len(httpRows(t, d.dsn)) >= 400 && len(lines) >= 1000
	})
	time.Sleep(time.Second) // anything extra (a duplicate) would show up now
	lines, blobs := blobEvents(t, d.azure, d.cont)
	checkStored(t, reqs, httpRows(t, d.dsn), lines)
	t.Logf("1000 requests -> %d blobs", blobs)
	if blobs > 100 {
		t.Errorf("%d blobs for 1000 events: the archive is not batching", blobs)
	}
	if code := d.stop(60 * time.Second); code != 0 {
		t.Fatalf("exit code %d after SIGTERM, want 0", code)
	}
}

// SIGTERM right after a burst: the default flush windows (5 s, 10 s) have not passed, and everything
// accepted must still be written before the process exits with 0.
func TestDemoStopRightAfterBurstLosesNothing(t *testing.T) {
	d := startDemo(t, "")
	reqs := burst(1000)
	send(t, d.base, reqs)
	start := time.Now()
	if code := d.stop(60 * time.Second); code != 0 {
		t.Fatalf("exit code %d after SIGTERM, want 0", code)
	}
	t.Logf("shutdown with flush took %v", time.Since(start).Round(time.Millisecond))
	if !strings.Contains(d.stdout.String(), "every accepted event was written") {
		t.Errorf("stdout does not confirm the flush:\n%s", d.stdout)
	}
	lines, _ := blobEvents(t, d.azure, d.cont)
	checkStored(t, reqs, httpRows(t, d.dsn), lines)
}

// With PostgreSQL unreachable the demo still serves, says so, and keeps the archive going; at
// shutdown it reports what it could not write and exits non-zero.
func TestDemoWithoutPostgresKeepsArchiving(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := l.Addr().String()
	l.Close() // nothing listens there now
	d := startDemo(t, shortFlush, "SLUICE_POSTGRES_DSN=postgres://postgres@"+deadAddr+"/postgres?sslmode=disable&connect_timeout=2",
		"SLUICE_SHUTDOWN_TIMEOUT=3s", "SLUICE_BUS_REDELIVERY_DELAY=100ms", "SLUICE_BUS_MAX_REDELIVERY_DELAY=500ms")
	if !strings.Contains(d.stderr.String(), "PostgreSQL is not reachable") {
		t.Errorf("stderr does not say PostgreSQL is unreachable:\n%s", tail(d.stderr.String(), 2000))
	}
	reqs := burst(200)
	send(t, d.base, reqs)
	eventually(t, 60*time.Second, "200 blob lines", func() bool {
		lines, _ := blobEvents(t, d.azure, d.cont)
		return len(lines) >= 200
	})
	lines, _ := blobEvents(t, d.azure, d.cont)
	for _, r := range reqs {
		if len(lines[r.id]) != 1 {
			t.Errorf("%s: %d blob lines, want 1", r.id, len(lines[r.id]))
		}
	}
	code := d.stop(60 * time.Second)
	if code != 1 {
		t.Errorf("exit code %d, want 1: warnings and errors were accepted and not written", code)
	}
	if !strings.Contains(d.stderr.String(), "were not written before shutdown") {
		t.Errorf("stderr does not report what was not written:\n%s", tail(d.stderr.String(), 2000))
	}
}

// A bad value fails at start, before serving, with a message that names the key.
func TestDemoBadConfigFailsNamingTheKey(t *testing.T) {
	cases := []struct {
		name string
		yaml string
		env  []string
		want string
	}{
		{name: "negative batch size", yaml: "routes:\n  - {name: postgres, sink: postgres, batch: {max_events: -10}}\n",
			want: "sluice.yaml:2) = -10: must be positive"}, // routes[0](postgres).batch.max_events (FILE:2)
		{name: "unknown level", yaml: "routes:\n  - {name: postgres, sink: postgres, levels: [WARN, CRITICAL]}\n",
			want: "sluice.yaml:2) = CRITICAL: unknown level"}, // routes[0](postgres).levels (FILE:2)
		{name: "malformed DSN", env: []string{"SLUICE_POSTGRES_DSN=postgres://postgres@127.0.0.1:notaport/x"},
			want: "postgres.dsn (SLUICE_POSTGRES_DSN)"},
		{name: "negative bus bound", env: []string{"SLUICE_BUS_MAX_EVENTS=-1"},
			want: "bus.max_events (SLUICE_BUS_MAX_EVENTS) = -1: must be positive"},
		{name: "not a duration", env: []string{"SLUICE_BREAKER_COOLDOWN=a while"},
			want: `breaker.cooldown (SLUICE_BREAKER_COOLDOWN) = "a while": not a duration`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			args := []string{"demo"}
			if tc.yaml != "" {
				file := filepath.Join(t.TempDir(), "sluice.yaml")
				if err := os.WriteFile(file, []byte(tc.yaml), 0o600); err != nil {
					t.Fatal(err)
				}
				args = append(args, "-config", file)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, sluiceBin, args...)
			cmd.Dir = t.TempDir()
			cmd.Env = append(cleanEnv(), "SLUICE_HTTP_ADDR=127.0.0.1:0")
			cmd.Env = append(cmd.Env, tc.env...)
			out, err := cmd.CombinedOutput()
			if cmd.ProcessState == nil || cmd.ProcessState.ExitCode() != 2 {
				t.Fatalf("exit %v (%v), want code 2; output:\n%s", cmd.ProcessState, err, out)
			}
			if !strings.Contains(string(out), tc.want) {
				t.Fatalf("output does not name the key and value %q:\n%s", tc.want, out)
			}
		})
	}
}

// Replaying a batch (the same messages delivered twice, in another order) leaves one row per event
// and no second blob.
func TestReplayedBatchCreatesNoDuplicates(t *testing.T) {
	ctx := context.Background()
	pool, pg, _ := migratedSink(t)
	store, err := azurestore.Open(ctx, azurestore.Config{ConnectionString: testenv.Azurite(t), Container: testenv.Container(t)})
	if err != nil {
		t.Fatal(err)
	}
	blob, err := blobsink.New(store, blobsink.Config{})
	if err != nil {
		t.Fatal(err)
	}

	const n, chunk = 300, 30
	events := sinktest.Events(n, time.Now().UTC().Truncate(time.Hour).Add(30*time.Minute))
	for _, sink := range []subscribers.Sink{pg, blob} {
		writer, err := subscribers.NewWriter(subscribers.WriterConfig{Route: sink.Name(), Sink: sink})
		if err != nil {
			t.Fatal(err)
		}
		for pass := 0; pass < 2; pass++ { // the second pass is the replay, its events in reverse order
			b, err := bus.New(bus.Config{}, nil)
			if err != nil {
				t.Fatal(err)
			}
			batches, err := subscribers.NewBatchSubscriber(b, subscribers.BatchPolicy{MaxEvents: n, MaxBytes: 64 << 20,
				MaxWait: time.Minute, MaxConcurrentWrites: 1})
			if err != nil {
				t.Fatal(err)
			}
			in, err := batches.Subscribe(ctx, "logs")
			if err != nil {
				t.Fatal(err)
			}
			order := slices.Clone(events)
			if pass == 1 {
				slices.Reverse(order)
			}
			for i := 0; i < n; i += chunk {
				payload, err := event.Encode(order[i : i+chunk]...)
				if err != nil {
					t.Fatal(err)
				}
				if err := b.Publish("logs", message.NewMessage(event.NewID().String(), payload)); err != nil {
					t.Fatal(err)
				}
			}
			msg := <-in
			if err := writer.Handle(msg); err != nil {
				t.Fatalf("%s pass %d: %v", sink.Name(), pass, err)
			}
			msg.Ack()
			if err := b.Drain(ctx); err != nil {
				t.Fatal(err)
			}
			_ = batches.Close()
		}
	}

	var rows, distinct int
	if err := pool.QueryRow(ctx, `SELECT count(*), count(DISTINCT id) FROM application_logs`).Scan(&rows, &distinct); err != nil {
		t.Fatal(err)
	}
	if rows != n || distinct != n {
		t.Errorf("application_logs has %d rows (%d distinct) after a replay, want %d", rows, distinct, n)
	}
	names, err := store.List(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(names) != 1 {
		t.Errorf("%d blobs after a replay of one batch, want 1: %v", len(names), names)
	}
	data, err := store.Get(ctx, names[0])
	if err != nil {
		t.Fatal(err)
	}
	lines, err := blobsink.Decode(data)
	if err != nil || len(lines) != n {
		t.Errorf("the blob has %d lines (%v), want %d", len(lines), err, n)
	}
}
