package sluice

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/sluicelog/sluice/brokers"
	"github.com/sluicelog/sluice/event"
	"github.com/sluicelog/sluice/subscribers"
)

// WithBroker makes the pipeline use b, any broker (for example a team's own Watermill set-up through
// brokers.FromWatermill), instead of the one bus.driver and bus.url name. New then forwards the events
// to b, and NewWorker reads them from it.
func WithBroker(b brokers.Broker) Option { return func(o *options) { o.broker = b } }

// ForwardRoute is the name of a web node's one route, the one that forwards its events to the broker
// (in metrics, /readyz and an UndeliveredError).
const ForwardRoute = "broker"

// role is what a pipeline does with events.
type role int

const (
	// roleLocal: Publish appends events to the routes' chunks on the bus, and the routes write them:
	// the memory bus.
	roleLocal role = iota
	// roleForward: Publish appends events to one chunk stream on the bus, and its one route publishes
	// each chunk to the broker: a web node.
	roleForward
	// roleWorker: the routes read chunks from the broker and write them; Publish refuses events.
	roleWorker
)

// ErrWorker is Publish's error on a worker (NewWorker): a worker writes what web nodes forward.
var ErrWorker = errors.New("sluice: a worker does not publish events (publish from a pipeline made by New)")

// brokerOpener returns what opens the pipeline's broker, and its name for people (the driver's), or
// nil for the memory bus.
func brokerOpener(cfg Config, o options, log watermill.LoggerAdapter) (open func(context.Context) (brokers.Broker, error), name string) {
	if o.broker != nil {
		return func(context.Context) (brokers.Broker, error) { return o.broker, nil }, "broker"
	}
	if cfg.Bus.Driver == brokers.Memory {
		return nil, ""
	}
	d, _ := brokers.Lookup(cfg.Bus.Driver) // validated
	settings := cfg.BusSettings()
	return func(ctx context.Context) (brokers.Broker, error) {
		b, err := d.Open(ctx, cfg.Bus.URL, settings, log)
		if err != nil {
			return nil, fmt.Errorf("bus.driver %s at bus.url %s: %w", d.Name, cfg.Bus.URL, err)
		}
		return b, nil
	}, d.Name
}

// groups returns the consumer groups of the configured routes: "<bus.group>.<route>".
func groups(cfg Config) []string {
	var out []string
	for _, r := range cfg.EffectiveRoutes() {
		out = append(out, cfg.Bus.Group+"."+r.Name)
	}
	return out
}

// buildForward makes the web node's one route: every event that some configured route takes is
// appended to its chunks (bus.forward.chunk), and each chunk is one batch, published to the broker as
// one message by forwardSink, at most bus.forward.max_concurrent_publishes at once. The route has the
// usual batch-level middleware: Retry (bus.forward.retry), the circuit breaker (bus.forward.breaker);
// a chunk whose retries are spent goes back to the bus, which offers it again after
// bus.redelivery_delay. So the broker being down fills the local bus up to its bound (bus.max_events,
// bus.max_bytes), then events are dropped and counted, and the backlog goes out when it is back.
func (p *Pipeline) buildForward(open func(context.Context) (brokers.Broker, error), name string) error {
	var takes []func(*event.Event) bool
	for _, r := range p.cfg.EffectiveRoutes() {
		takes = append(takes, matcher(r))
	}
	f := p.cfg.Bus.Forward
	r := Route{Name: ForwardRoute, Sink: name, Chunk: f.Chunk, Retry: f.Retry, Breaker: f.Breaker,
		Batch: subscribers.BatchPolicy{MaxEvents: f.Chunk.MaxEvents, MaxBytes: 2*f.Chunk.MaxBytes + int64(p.cfg.Capture.MaxEventBytes),
			MaxWait: f.Chunk.Linger, MaxConcurrentWrites: f.MaxConcurrentPublishes,
			MaxEventBytes: 1 << 30}} // capture.max_event_bytes bounds events already
	lb := &lazyBroker{open: open, name: name, topic: p.cfg.Bus.Topic, groups: groups(p.cfg), url: p.cfg.Bus.URL}
	p.opened = map[string]subscribers.Opened{name: lb}
	sink := &forwardSink{name: name, topic: p.cfg.Bus.Topic, broker: lb, compression: f.Compression,
		outstanding: make(chan struct{}, 2*f.MaxConcurrentPublishes)}
	src := source{sub: p.bus, topic: p.cfg.Bus.Topic + "." + ForwardRoute, chunked: true, oneChunk: true,
		match: func(e *event.Event) bool {
			for _, take := range takes {
				if take(e) {
					return true
				}
			}
			return false
		}}
	if err := p.addRouteFrom(r, sink, f.PublishTimeout, src); err != nil {
		return err
	}
	p.breakerChanged(r.Name, BreakerClosed, BreakerClosed)
	return nil
}

// forwardSink is the web node's sink: it publishes each batch (one chunk) to the broker as one
// message, its UUID the batch id (the same for every retry of the chunk), its payload the events'
// lines compressed with bus.forward.compression, and returns nil once the broker has acknowledged it.
type forwardSink struct {
	name        string
	topic       string
	broker      *lazyBroker
	compression string // an event.Encoding, or none
	// outstanding bounds the publishes under way, those whose write gave up on them included: a broker
	// that hangs does not pile up goroutines.
	outstanding chan struct{}
}

func (s *forwardSink) Name() string { return s.name }

func (s *forwardSink) Close() error { return nil } // the broker is closed by its lazyBroker

func (s *forwardSink) Write(ctx context.Context, b subscribers.Batch) error {
	br, err := s.broker.get(ctx)
	if err != nil {
		return err
	}
	msg, err := s.message(b)
	if err != nil {
		return subscribers.Permanent(err) // the same events would fail the same way: isolate them
	}
	select {
	case s.outstanding <- struct{}{}:
	default:
		return fmt.Errorf("%s broker: %d publishes are still waiting for an answer", s.name, cap(s.outstanding))
	}
	done := make(chan error, 1)
	go func() {
		defer func() { <-s.outstanding }()
		done <- br.Publisher().Publish(s.topic, msg)
	}()
	select {
	case err := <-done:
		if err != nil {
			s.broker.failed(err)
			return fmt.Errorf("publish to the %s broker: %w", s.name, err)
		}
		s.broker.failed(nil)
		return nil
	case <-ctx.Done():
		return fmt.Errorf("publish to the %s broker: %w", s.name, ctx.Err())
	}
}

// joined holds the uncompressed lines of a chunk while they are compressed: the buffer is reused,
// where a fresh one of 512 KiB per chunk would be fresh memory for the process to fault in.
var joined = sync.Pool{New: func() any { return new([]byte) }}

// message is the broker message of the batch: its events' lines, compressed.
func (s *forwardSink) message(b subscribers.Batch) (*message.Message, error) {
	n := 0
	for _, e := range b.Events {
		n += len(e.Raw) + 1
	}
	compressed := s.compression != event.EncodingNone && s.compression != ""
	var (
		buf     *[]byte
		payload []byte
	)
	if compressed {
		buf = joined.Get().(*[]byte)
		defer joined.Put(buf)
		payload = (*buf)[:0]
	}
	if cap(payload) < n {
		payload = make([]byte, 0, n)
	}
	for _, e := range b.Events {
		payload = append(append(payload, e.Raw...), '\n')
	}
	if compressed {
		*buf = payload
		var err error
		if payload, err = event.Compress(nil, payload, s.compression); err != nil {
			return nil, fmt.Errorf("%s broker: batch %s: %w", s.name, b.ID, err)
		}
	}
	msg := message.NewMessage(b.ID.String(), payload)
	msg.Metadata.Set(event.MetadataEvents, strconv.Itoa(len(b.Events)))
	msg.Metadata.Set(event.MetadataFormat, event.ChunkFormatFor(s.compression))
	return msg, nil
}

// lazyBroker opens the broker on first use and declares the topic and the routes' consumer groups,
// again after a failure until it succeeds: a web node starts and serves while the broker is down. It
// is the forward route's subscribers.Opened.
type lazyBroker struct {
	open   func(context.Context) (brokers.Broker, error)
	name   string
	url    string
	topic  string
	groups []string

	mu     sync.Mutex
	b      brokers.Broker
	status string
	closed bool
}

func (l *lazyBroker) get(ctx context.Context) (brokers.Broker, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, errors.New("broker closed")
	}
	if l.b != nil {
		return l.b, nil
	}
	b, err := l.open(ctx)
	if err == nil {
		if err = b.Declare(ctx, l.topic, l.groups); err != nil {
			_ = b.Close()
			err = fmt.Errorf("declare topic %s and groups %v: %w", l.topic, l.groups, err)
		}
	}
	if err != nil {
		l.status = err.Error()
		return nil, err
	}
	l.b, l.status = b, ""
	return b, nil
}

// failed records the outcome of the last publish for Status.
func (l *lazyBroker) failed(err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err != nil {
		l.status = err.Error()
	} else {
		l.status = ""
	}
}

func (l *lazyBroker) Sink(subscribers.Route) (subscribers.Sink, error) {
	return nil, errors.New("the broker is the forward route's only")
}

func (l *lazyBroker) WriteTimeout() time.Duration { return 0 }

func (l *lazyBroker) Where(subscribers.Route) string {
	if l.url == "" {
		return l.name + " broker, topic " + l.topic
	}
	return fmt.Sprintf("%s broker at %s, topic %s", l.name, l.url, l.topic)
}

func (l *lazyBroker) Status() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.status
}

func (l *lazyBroker) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closed = true
	if l.b == nil {
		return nil
	}
	return l.b.Close()
}
