package amqp

import (
	"context"
	"io"
	"net"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/sluicelog/sluice/brokers/brokertest"
)

// proxy forwards TCP connections to RabbitMQ until cut, which drops every connection at once: what a
// kill -9 of a worker (its sockets closed by the kernel) or of the broker looks like to the other side.
type proxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	conns  []net.Conn
	down   bool
}

func newProxy(t *testing.T, target string) *proxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, target: target}
	t.Cleanup(func() { _ = ln.Close(); p.cut(false) })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.mu.Lock()
			if p.down {
				p.mu.Unlock()
				_ = c.Close()
				continue
			}
			up, err := net.Dial("tcp", target)
			if err != nil {
				p.mu.Unlock()
				_ = c.Close()
				continue
			}
			p.conns = append(p.conns, c, up)
			p.mu.Unlock()
			go func() { _, _ = io.Copy(up, c); _ = up.Close() }()
			go func() { _, _ = io.Copy(c, up); _ = c.Close() }()
		}
	}()
	return p
}

// cut closes every connection through the proxy; while down it refuses new ones.
func (p *proxy) cut(down bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = down
	for _, c := range p.conns {
		_ = c.Close()
	}
	p.conns = nil
}

func (p *proxy) url(t *testing.T) string {
	u, err := url.Parse(testURL())
	if err != nil {
		t.Fatal(err)
	}
	u.Host = p.ln.Addr().String()
	return u.String()
}

// A worker whose connection drops while it holds a chunk (kill -9) loses it to another member at once,
// and its publisher and subscriber work again once RabbitMQ can be reached again (a restart of the
// broker looks the same from the client's side).
func TestConnectionDrops(t *testing.T) {
	u, _ := url.Parse(testURL())
	p := newProxy(t, u.Host)
	s := testSettings()
	s.ConfirmTimeout = 5 * time.Second
	worker, err := Open(context.Background(), p.url(t), s, nil)
	if err != nil {
		t.Fatal(err)
	}
	removeAtEnd(t, worker)
	t.Cleanup(func() { _ = worker.Close() })
	other := open(t, s) // not through the proxy
	topic, g := brokertest.Names(t, "a")
	if err := other.Declare(context.Background(), topic, g); err != nil {
		t.Fatal(err)
	}
	held := brokertest.Chunk(1)
	if err := worker.Publisher().Publish(topic, held); err != nil {
		t.Fatal(err)
	}
	workerCh := subscribe(t, worker, g[0], topic)
	if m := next(t, workerCh); m.UUID != held.UUID {
		t.Fatalf("worker got %s, want %s", m.UUID, held.UUID)
	} // never acked
	otherSub, otherCh := brokertest.Subscribe(t, other, g[0], topic)

	p.cut(true) // the worker is gone
	if m := next(t, otherCh); m.UUID != held.UUID {
		t.Errorf("the other member got %s, want the dropped worker's %s", m.UUID, held.UUID)
	} else {
		m.Ack()
	}
	if err := otherSub.Close(); err != nil { // from now on only the worker reads the group's queue
		t.Fatal(err)
	}
	if err := worker.Publisher().Publish(topic, brokertest.Chunk(1)); err == nil {
		t.Error("Publish through a dropped connection returned nil")
	}

	p.cut(false) // reachable again: the same publisher and subscriber work
	var again error
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if again = worker.Publisher().Publish(topic, brokertest.Chunk(1)); again == nil {
			break
		}
	}
	if again != nil {
		t.Fatalf("Publish after the connection came back: %v", again)
	}
	// The worker's subscription, which noticed the drop though it held a chunk, has connected again.
	next(t, workerCh).Ack()
}

// When RabbitMQ cancels the consumer (its queue deleted, as an operator may), the subscription
// connects again, declares the queue again and goes on: it does not hang on a channel that stays open.
func TestQueueDeletedUnderTheConsumer(t *testing.T) {
	b := open(t, testSettings())
	topic, g := brokertest.Names(t, "a")
	if err := b.Declare(context.Background(), topic, g); err != nil {
		t.Fatal(err)
	}
	ch := subscribe(t, b, g[0], topic)
	conn, err := b.connection(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	admin, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	if _, err := admin.QueueDelete(QueueName(topic, g[0]), false, false, false); err != nil {
		t.Fatal(err)
	}
	// Publish until the queue is back (the subscription declares it again when it reconnects).
	sent := brokertest.Chunk(1)
	deadline := time.Now().Add(30 * time.Second)
	for b.Publisher().Publish(topic, sent) != nil {
		if time.Now().After(deadline) {
			t.Fatal("the queue was not declared again within 30 s")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if m := next(t, ch); m.UUID != sent.UUID {
		t.Errorf("got %s, want %s", m.UUID, sent.UUID)
	}
}
