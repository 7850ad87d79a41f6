package acceptance_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/sluicelog/sluice/config"
	"github.com/sluicelog/sluice/event"
	"github.com/sluicelog/sluice/internal/brokerclean"
	"github.com/sluicelog/sluice/internal/testenv"
)

// The scale-out tests: a web node (sluice demo) forwards its events to a broker, and two `sluice
// worker` processes write them to PostgreSQL and Azurite. One worker is killed with SIGKILL in the
// middle of 20,000 requests and restarted; for the brokers that keep their data on disk the broker
// itself is killed for 5 s too. Afterwards every WARN/ERROR event is one row, every event one archive
// line, and no event id is stored twice, in rows or across blobs.

// scaleRequests is how many requests each scale-out test sends (the figure).
const scaleRequests = 20000

// busUnderTest is one broker driver and how a test reaches (and, for some, kills) its broker.
type busUnderTest struct {
	driver string
	// url returns bus.url for the test, and the broker process when the test runs its own (nil: the
	// machine's service, which the test must not kill).
	url func(t *testing.T, d *demo) (string, killable)
}

// killable is a broker process of the test's own: Kill sends SIGKILL, Start starts it again on the
// same address and data directory.
type killable interface {
	Kill()
	Start()
}

var busesUnderTest = []busUnderTest{
	{"kafka", func(t *testing.T, _ *demo) (string, killable) {
		k := testenv.Kafka(t, testenv.KafkaOptions{})
		return k.Addr(), k
	}},
	{"redis", func(*testing.T, *demo) (string, killable) { return "redis://127.0.0.1:6379/0", nil }},
	{"amqp", func(t *testing.T, _ *demo) (string, killable) {
		r := rabbitProc(t)
		return "amqp://guest:guest@" + r.addr + "/", r
	}},
	{"nats", func(t *testing.T, _ *demo) (string, killable) {
		n := natsProc(t)
		return "nats://" + n.addr, n
	}},
	{"postgres", func(_ *testing.T, d *demo) (string, killable) { return d.dsn, nil }},
}

// brokerProc is a broker process of the test's own: killed with SIGKILL and started again on the
// same address and data directory.
type brokerProc struct {
	t    *testing.T
	addr string
	argv []string
	env  []string // added to the test's environment
	cmd  *exec.Cmd
	out  *syncBuffer
}

func startBroker(t *testing.T, addr string, argv ...string) *brokerProc {
	return startBrokerEnv(t, addr, nil, argv...)
}

func startBrokerEnv(t *testing.T, addr string, env []string, argv ...string) *brokerProc {
	p := &brokerProc{t: t, addr: addr, argv: argv, env: env, out: &syncBuffer{}}
	p.Start()
	t.Cleanup(func() {
		p.Kill()
		if t.Failed() {
			t.Logf("%s output (tail):\n%s", filepath.Base(argv[0]), tail(p.out.String(), 3000))
		}
	})
	return p
}

// Start starts the process and waits until it accepts connections.
func (p *brokerProc) Start() {
	p.t.Helper()
	p.cmd = exec.Command(p.argv[0], p.argv[1:]...)
	p.cmd.Env = append(os.Environ(), p.env...)
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // Kill kills the whole group (a script's broker child too)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		p.t.Fatal(err)
	}
	deadline := time.Now().Add(3 * time.Minute) // a RabbitMQ node on a busy machine takes its time
	for {
		c, err := net.DialTimeout("tcp", p.addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("%s does not answer on %s within 3 minutes:\n%s", p.argv[0], p.addr, p.out)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Kill kills the process and its children with SIGKILL.
func (p *brokerProc) Kill() {
	if p.cmd != nil && p.cmd.Process != nil {
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		_ = p.cmd.Wait()
		p.cmd = nil
	}
}

// natsProc runs a NATS server with JetStream on file storage of the test's own.
func natsProc(t *testing.T) *brokerProc {
	addr := freePort(t)
	_, port, _ := net.SplitHostPort(addr)
	return startBroker(t, addr, "nats-server", "-a", "127.0.0.1", "-p", port, "-js", "-sd", t.TempDir())
}

// rabbitProc runs a RabbitMQ node of the test's own (its own name, ports and data directory, no
// plugins), so that the test can kill it without touching the machine's node that other tests use.
func rabbitProc(t *testing.T) *brokerProc {
	addr, dist := freePort(t), freePort(t)
	_, port, _ := net.SplitHostPort(addr)
	_, distPort, _ := net.SplitHostPort(dist)
	dir := t.TempDir()
	return startBrokerEnv(t, addr, []string{
		"RABBITMQ_NODENAME=sluiceacc" + port + "@localhost",
		"RABBITMQ_NODE_IP_ADDRESS=127.0.0.1",
		"RABBITMQ_NODE_PORT=" + port,
		"RABBITMQ_DIST_PORT=" + distPort,
		"RABBITMQ_MNESIA_BASE=" + filepath.Join(dir, "mnesia"),
		"RABBITMQ_LOG_BASE=" + filepath.Join(dir, "log"),
		"RABBITMQ_ENABLED_PLUGINS_FILE=" + filepath.Join(dir, "enabled_plugins"),
		"RABBITMQ_CONFIG_FILE=" + filepath.Join(dir, "rabbitmq"), // none: the defaults
	}, "/usr/lib/rabbitmq/bin/rabbitmq-server")
}

// waitWritten waits until PostgreSQL holds rows WARN/ERROR requests (polled often: a count is
// cheap) and the archive holds requests archived requests (polled every few seconds: each look
// downloads every blob).
func waitWritten(t *testing.T, dsn, azure, container string, rows, requests int) {
	t.Helper()
	eventually(t, 5*time.Minute, fmt.Sprintf("%d WARN/ERROR rows", rows), func() bool { return len(httpRows(t, dsn)) >= rows })
	deadline := time.Now().Add(5 * time.Minute)
	for {
		lines, _ := blobEvents(t, azure, container)
		if len(lines) >= requests {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d requests archived within 5 minutes of the rows", len(lines), requests)
		}
		time.Sleep(3 * time.Second)
	}
}

// kill9 kills the process with SIGKILL: it writes nothing more and acknowledges nothing more.
func (d *demo) kill9() {
	_ = d.cmd.Process.Signal(syscall.SIGKILL)
	<-d.done
}

// scaleEnv is the bus configuration of a scale-out test: its own topic and groups, small forward
// chunks that linger briefly (so that a kill lands on chunks in flight), and batches written fast.
func scaleEnv(t *testing.T, driver, url string) []string { return busEnv(t, driver, url, newBusID()) }

// newBusID names a test's topic and groups.
func newBusID() string { return strings.ReplaceAll(uuid.NewString()[:8], "-", "") }

// busEnv is scaleEnv with the topic and groups of id: a web node behind a proxy and a worker that
// reaches the broker directly share them. When the test ends, the topic and its groups are removed
// from the broker at url (a long-lived one, this machine's Redis, keeps them otherwise).
func busEnv(t *testing.T, driver, url, id string) []string {
	topic, group := "sluice_acc_"+id, "acc_"+id
	t.Cleanup(func() { // after the processes' (registered later): nothing reads or writes the topic then
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		var groups []string // a group per route of the demo's
		for _, r := range config.DefaultRoutes() {
			groups = append(groups, group+"."+r.Name)
		}
		if err := brokerclean.Topic(ctx, driver, url, topic, groups); err != nil {
			t.Logf("%s: topic %s left on the broker at %s: %v", driver, topic, url, err)
		}
	})
	return []string{
		"SLUICE_BUS_DRIVER=" + driver,
		"SLUICE_BUS_URL=" + url,
		"SLUICE_BUS_TOPIC=" + topic,
		"SLUICE_BUS_GROUP=" + group,
		"SLUICE_BUS_FORWARD_CHUNK_MAX_EVENTS=200",
		"SLUICE_BUS_FORWARD_CHUNK_LINGER=200ms",
		"SLUICE_BUS_FORWARD_BREAKER_COOLDOWN=1s",
		"SLUICE_BUS_REDELIVERY_DELAY=100ms",
		"SLUICE_BUS_MAX_REDELIVERY_DELAY=1s",
		"SLUICE_BUS_MAX_EVENTS=50000",
	}
}

// TestScaleOut runs the drivers two at a time (go test's -parallel is GOMAXPROCS): much of each run
// is waiting (a dead worker's chunks handed over, the broker down for 5 s). The outage tests, which
// mostly wait through an outage of a proxy of their own, are parallel too and share those two slots.
func TestScaleOut(t *testing.T) {
	for _, b := range busesUnderTest {
		t.Run(b.driver, func(t *testing.T) {
			t.Parallel()
			scaleOut(t, b)
		})
	}
}

func scaleOut(t *testing.T, b busUnderTest) {
	st := &demo{dsn: testenv.Postgres(t), azure: testenv.Azurite(t), cont: testenv.Container(t)}
	url, broker := b.url(t, st)
	env := scaleEnv(t, b.driver, url)
	web := startSluice(t, st, "demo", "", env...)
	w1, w2 := startSluice(t, st, "worker", "", env...), startSluice(t, st, "worker", "", env...)
	reqs := burst(scaleRequests)
	third := len(reqs) / 3
	send(t, web.base, reqs[:third])
	w1.kill9()
	t.Logf("%s: worker 1 killed with SIGKILL after %d requests", b.driver, third)
	if broker != nil {
		broker.Kill()
		t.Logf("%s: the broker killed with SIGKILL for 5 s", b.driver)
	}
	send(t, web.base, reqs[third:2*third])
	if broker != nil {
		time.Sleep(5 * time.Second) // the broker stays down for 5 s, as the issue says
		broker.Start()
	}
	w1 = startSluice(t, st, "worker", "", env...)
	send(t, web.base, reqs[2*third:])
	if code := web.stop(90 * time.Second); code != 0 {
		t.Fatalf("the web node exited %d: it did not forward everything it accepted\n%s", code, tail(web.stderr.String(), 3000))
	}
	// The web node forwarded every event to the broker: the workers write them all.
	want := 0
	for _, r := range reqs {
		if r.level != "INFO" {
			want++
		}
	}
	waitWritten(t, web.dsn, web.azure, web.cont, want, len(reqs))
	// Let a redelivery that is still due arrive before the count is final.
	time.Sleep(2 * time.Second)
	rows, lines := httpRows(t, web.dsn), map[string][]*event.Event(nil)
	lines, _ = blobEvents(t, web.azure, web.cont)
	checkStored(t, reqs, rows, lines)
	events, letters, blobs := archive(t, web.azure, web.cont)
	seen := map[uuid.UUID]int{}
	for _, e := range events {
		seen[e.ID]++
	}
	dups := 0
	for _, n := range seen {
		if n > 1 {
			dups++
		}
	}
	if dups > 0 || len(letters) > 0 {
		t.Errorf("%d event ids archived more than once, %d dead letters", dups, len(letters))
	}
	t.Logf("%s: %d requests, %d rows, %d archived events in %d blobs, 0 duplicates", b.driver, len(reqs), want, len(events), blobs)
	for _, w := range []*demo{w1, w2} {
		if code := w.stop(60 * time.Second); code != 0 {
			t.Errorf("a worker exited %d on SIGTERM", code)
		}
	}
}

// The broker is unreachable for 10 s under 200 requests/s: the web node keeps serving (its latency is
// logged before, during and after, not asserted), its chunks wait in its bus and go out when the broker
// is back, and every accepted event is written, or counted as dropped: exactly.
func TestBrokerOutage(t *testing.T) {
	t.Parallel() // mostly waiting: it runs beside the scale-out tests (see TestScaleOut)
	const (
		rate   = 200
		before = 5 * time.Second
		outage = 10 * time.Second
		after  = 5 * time.Second
	)
	st := &demo{dsn: testenv.Postgres(t), azure: testenv.Azurite(t), cont: testenv.Container(t)}
	proxy := newProxy(t, "127.0.0.1:6379")
	id := newBusID()
	web := startSluice(t, st, "demo", "", busEnv(t, "redis", "redis://"+proxy.Addr()+"/0", id)...)
	worker := startSluice(t, st, "worker", "", busEnv(t, "redis", "redis://127.0.0.1:6379/0", id)...)
	reqs := burst(int((time.Second+before+outage+after).Seconds())*rate + rate)
	smp := startSampler(t, web.base)
	lg := startLoad(t, web.base, reqs, rate)
	waitFor(time.Second)
	lg.setPhase(phaseBefore)
	waitFor(before)
	proxy.Cut()
	lg.setPhase(phaseDuring)
	waitFor(outage)
	during := smp.last()
	proxy.Restore()
	lg.setPhase(phaseAfter)
	waitFor(after)
	lg.stop()
	t.Logf("latency before the outage: %v", lg.stats(phaseBefore))
	t.Logf("latency during the outage: %v", lg.stats(phaseDuring))
	t.Logf("latency after the outage:  %v", lg.stats(phaseAfter))
	t.Logf("at the end of the outage: queue depth %v, breaker %v", during.get("sluice_queue_depth"),
		during.get("sluice_breaker_state", "route", "broker"))
	if during.get("sluice_queue_depth") == 0 {
		t.Errorf("nothing waited in the web node's bus during the outage: was the broker cut?")
	}
	final := smp.stop()
	dropped := 0.0
	for _, reason := range []string{"queue_full", "too_large", "closed"} {
		dropped += final.get("sluice_events_dropped_total", "reason", reason)
	}
	if code := web.stop(90 * time.Second); code != 0 {
		t.Fatalf("the web node exited %d: it did not forward everything it accepted", code)
	}
	sent := lg.sent()
	want := 0
	for _, r := range sent {
		if r.level != "INFO" {
			want++
		}
	}
	waitWritten(t, st.dsn, st.azure, st.cont, want, len(sent))
	// The bus (50,000 events) outlasts a 10 s outage at 200 requests/s: nothing is dropped, and every
	// accepted event is written once.
	if dropped != 0 {
		t.Errorf("%v events dropped; accepted = written + dropped must hold with 0 drops here", dropped)
	}
	lines, _ := blobEvents(t, st.azure, st.cont)
	checkStored(t, sent, httpRows(t, st.dsn), lines)
	t.Logf("%d requests during a %v broker outage: %d rows, %d archived, %v dropped", len(sent), outage, want, len(lines), dropped)
	if code := worker.stop(60 * time.Second); code != 0 {
		t.Errorf("the worker exited %d on SIGTERM", code)
	}
}
