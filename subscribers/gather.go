package subscribers

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/sluicelog/sluice/event"
)

// BatchPolicy says when a batch is written: at MaxEvents events, at MaxBytes bytes of encoded events,
// or MaxWait after its first event, whichever comes first. MaxConcurrentWrites bounds the batches
// handed out and not yet acknowledged; when all are out and the next batch is full, the batch
// subscriber stops taking messages (backpressure onto the bus).
type BatchPolicy struct {
	MaxEvents int           `yaml:"max_events"`
	MaxBytes  int64         `yaml:"max_bytes"`
	MaxWait   time.Duration `yaml:"max_wait"`
	// MaxConcurrentWrites bounds the batches being written at once.
	MaxConcurrentWrites int `yaml:"max_concurrent_writes"`
	// MaxEventBytes is the largest encoded event the route stores (WriterConfig.MaxEventBytes); a
	// larger one is kept as a dead letter (reason oversize) instead of holding up its batch. The
	// BatchSubscriber does not read it.
	MaxEventBytes int `yaml:"max_event_bytes"`
}

// Validate returns every problem of the policy, each a *SettingError naming its key (max_events, …).
func (p BatchPolicy) Validate() error {
	var errs []error
	positive := func(key string, ok bool, v any) {
		if !ok {
			errs = append(errs, &SettingError{Key: key, Value: v, Msg: "must be positive"})
		}
	}
	positive("max_events", p.MaxEvents > 0, p.MaxEvents)
	positive("max_bytes", p.MaxBytes > 0, p.MaxBytes)
	positive("max_wait", p.MaxWait > 0, p.MaxWait)
	positive("max_concurrent_writes", p.MaxConcurrentWrites > 0, p.MaxConcurrentWrites)
	if p.MaxEventBytes < 0 {
		errs = append(errs, &SettingError{Key: "max_event_bytes", Value: p.MaxEventBytes, Msg: "must not be negative (0 means the default)"})
	}
	return errors.Join(errs...)
}

// drainWait is how long a draining batch subscriber waits for a batch to fill.
const drainWait = 20 * time.Millisecond

// BatchSubscriber is a message.Subscriber that gathers the messages of another subscriber (each a
// chunk of events in package event's bus message format) into batch messages, one per sink write:
// the router handler that writes a batch, and its middleware (retry, throttle, circuit breaker), run
// once per batch, not once per chunk or per event.
//
// A batch message carries the number of events in event.MetadataEvents and, in its context, the
// decoded events and the lines that could not be decoded (Contents reads them). Its payload is the
// chunks' NDJSON one after the other (decompressed: see event.ChunkFormatFor), or empty when every chunk came with its events
// decoded in its context (in process): read a batch with Contents, not from its payload. Its UUID is
// the batch id (event.BatchID of its events).
//
// A batch is settled once, and then its chunk messages are acked or nacked all together:
//   - acked when the Writer confirms it written (before the Writer returns) or its batch message is
//     acked: a chunk is acknowledged only once every event of it is written;
//   - when its batch message is nacked (the write failed and the router's retries are spent), it is
//     not settled: it is handed out again as the same batch (the same chunks and events, so the same
//     batch id; a new message, since a message is acked or nacked once), RedeliverAfter's delay after
//     the nack, doubling with each nack of it (1 s up to 30 s by default; at most drainWait, 20 ms,
//     once Drain is called). Its chunks are not given back to the wrapped subscriber: it would offer
//     them again later, perhaps gathered with other chunks into a batch of another id, and a store
//     that names what it writes after the batch (the archive's objects) would then store again the
//     events that a failed write stored all the same (a write whose client gave up, or one hour part
//     of a batch written and another not). A chunk that comes meanwhile goes to another batch;
//   - nacked when its subscription ends (its context, Close, or the wrapped subscription ending)
//     before it is settled: the wrapped subscriber offers the chunks again;
//   - with OneChunkPerBatch, nacked when its batch message is nacked: the chunk is the batch, and the
//     wrapped subscriber's own redelivery (a broker's) offers the same batch again.
//
// Once Cut has begun, a nacked batch is no longer handed out again (its context is cancelled), and
// after Cut nothing is settled any more.
//
// A subscription runs one goroutine, plus one per batch handed out and not yet acknowledged (at most
// Policy.MaxConcurrentWrites): none per chunk or per event. It holds at most one open batch, one
// sealed batch waiting for a free write, MaxConcurrentWrites batches handed out, and the nacked
// batches waiting for their next hand-out. Those hold no write: a store that is back gets the next
// batches at once, not after the longest delay; they are bounded by what the wrapped subscriber
// hands out unacknowledged (the bus's MaxInFlight chunks). When one is due it goes before the sealed
// batch, at the next free write.
type BatchSubscriber struct {
	sub      message.Subscriber
	policy   BatchPolicy
	oneChunk bool // OneChunkPerBatch
	// delay and maxDelay are the waits of a nacked batch before it is handed out again (RedeliverAfter).
	delay, maxDelay time.Duration

	ctx   context.Context // parent of the batch messages' contexts; Cut and Close cancel it
	abort context.CancelFunc
	drain chan struct{}
	eager sync.Once

	mu      sync.Mutex
	closed  bool
	cancels []context.CancelFunc
	wg      sync.WaitGroup

	settleMu sync.Mutex
	out      map[*gathered]struct{} // sealed (handed out, waiting for a free write or nacked and held) and not settled
	cut      bool                   // Cut was called: nothing is settled any more
	settled  chan struct{}          // a batch was settled (capacity 1: Cut waits on it)

	redelivered atomic.Int64 // batch messages handed out again after a nack
}

var _ message.Subscriber = (*BatchSubscriber)(nil)

// NewBatchSubscriber returns a BatchSubscriber over sub (which must hand out several unacknowledged
// messages at once for a batch to gather more than one chunk; the bounded bus does).
func NewBatchSubscriber(sub message.Subscriber, policy BatchPolicy, opts ...BatchOption) (*BatchSubscriber, error) {
	if sub == nil {
		return nil, errors.New("subscribers: invalid config: a Subscriber is required")
	}
	if err := policy.Validate(); err != nil {
		return nil, fmt.Errorf("subscribers: invalid config: %w", err)
	}
	ctx, abort := context.WithCancel(context.Background())
	s := &BatchSubscriber{sub: sub, policy: policy, ctx: ctx, abort: abort, drain: make(chan struct{}),
		out: make(map[*gathered]struct{}), settled: make(chan struct{}, 1),
		delay: DefaultRedeliveryDelay, maxDelay: DefaultMaxRedeliveryDelay}
	for _, o := range opts {
		o(s)
	}
	if err := s.validateRedelivery(); err != nil {
		abort()
		return nil, fmt.Errorf("subscribers: invalid config: %w", err)
	}
	return s, nil
}

// BatchOption changes how a BatchSubscriber gathers.
type BatchOption func(*BatchSubscriber)

// OneChunkPerBatch makes every batch exactly one chunk message, handed out as soon as it arrives: for
// a broker, whose subscriber hands out one unacknowledged message at a time (so a batch would only
// wait), and whose unit of redelivery is the chunk. A chunk redelivered after a crash is then the same
// batch as the first time (same events, same batch id), so a sink that names what it writes after the
// batch (the archive's objects) writes nothing twice, whichever worker writes it.
//
// A nacked batch is nacked to the wrapped subscriber (its chunk given back), not handed out again by
// the BatchSubscriber: the chunk is the same batch whoever writes it, and a broker's redelivery lets
// another worker take it over. Held here instead, it would stay unacknowledged in the broker for as
// long as its write fails, past the broker's ack deadline (NATS ack_wait, a Redis Streams claim of
// idle entries, a PostgreSQL queue's ack_deadline), after which the broker offers it to another worker
// while this one still holds it; and a worker killed or a consumer group rebalanced leaves the chunk
// to the broker anyway.
func OneChunkPerBatch() BatchOption { return func(s *BatchSubscriber) { s.oneChunk = true } }

// Defaults of RedeliverAfter: those of package bus (bus.DefaultRedeliveryDelay and
// bus.DefaultMaxRedeliveryDelay), whose redelivery of a chunk this is, for a whole batch.
const (
	DefaultRedeliveryDelay    = time.Second
	DefaultMaxRedeliveryDelay = 30 * time.Second
)

// RedeliverAfter sets how long a nacked batch waits before it is handed out again: delay after its
// first nack, doubling with each further nack up to maxDelay (both positive, maxDelay at least
// delay). Default DefaultRedeliveryDelay and DefaultMaxRedeliveryDelay. sluice passes its bus's
// (bus.redelivery_delay and bus.max_redelivery_delay): one setting for how long failed events wait,
// whether the bus holds them (a chunk) or the batch subscriber (a batch).
func RedeliverAfter(delay, maxDelay time.Duration) BatchOption {
	return func(s *BatchSubscriber) { s.delay, s.maxDelay = delay, maxDelay }
}

// validateRedelivery checks RedeliverAfter's values, naming their configuration keys.
func (s *BatchSubscriber) validateRedelivery() error {
	switch {
	case s.delay <= 0:
		return &SettingError{Key: "redelivery_delay", Value: s.delay, Msg: "must be positive"}
	case s.maxDelay < s.delay:
		return &SettingError{Key: "max_redelivery_delay", Value: s.maxDelay,
			Msg: fmt.Sprintf("must be greater or equal to redelivery_delay (%s)", s.delay)}
	}
	return nil
}

// redeliveryDelay is the wait before the hand-out that follows a batch's n-th nack (n >= 1).
func (s *BatchSubscriber) redeliveryDelay(n int) time.Duration {
	d := s.delay
	for ; n > 1 && d < s.maxDelay; n-- {
		d *= 2
	}
	return min(d, s.maxDelay)
}

// Redelivered returns how many batch messages were handed out again, each the same batch as before,
// after a nack.
func (s *BatchSubscriber) Redelivered() int64 { return s.redelivered.Load() }

// Subscribe subscribes to topic on the wrapped subscriber and returns its messages gathered into
// batch messages. The channel closes when ctx ends, the wrapped subscription ends, or Close.
func (s *BatchSubscriber) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrSubscriberClosed
	}
	ctx, cancel := context.WithCancel(ctx)
	in, err := s.sub.Subscribe(ctx, topic)
	if err != nil {
		cancel()
		return nil, err
	}
	s.cancels = append(s.cancels, cancel)
	out := make(chan *message.Message)
	g := &gatherer{s: s, ctx: ctx, in: in, out: out, slots: s.policy.MaxConcurrentWrites,
		freed: make(chan struct{}, s.policy.MaxConcurrentWrites), nacked: make(chan *gathered), done: make(chan struct{})}
	s.wg.Add(1)
	go g.run()
	return out, nil
}

// ErrSubscriberClosed is returned by Subscribe after Close.
var ErrSubscriberClosed = errors.New("subscribers: batch subscriber closed")

// Drain makes every subscription hand out the batch it holds now, and from then on a batch at most
// drainWait (20 ms) after its first event instead of Policy.MaxWait, and a nacked batch at most
// drainWait after its nack (or after Drain) instead of its redelivery delay: used at shutdown so that
// the bus empties quickly, in batches that still fill when messages keep coming.
func (s *BatchSubscriber) Drain() { s.eager.Do(func() { close(s.drain) }) }

// Cut is the cut at a shutdown deadline. The contexts of the batch messages are cancelled, so that
// their writes, and any wait for an open circuit breaker or a retry, end with the context's error; a
// write ended that way is looked up in the store when the sink can say (the Writer and
// Verifier: a store may complete a write whose client gave up), and confirmed if it is there. Cut
// waits up to settle for the batches under way to be settled so, then nothing is settled any more: the
// chunks of every batch not settled by then stay unacknowledged in the wrapped subscriber, which counts
// them as not handled when it closes.
//
// It returns how many events the batches sealed and not settled at the end held: those whose writes
// or look-ups had not ended, those handed out or held for a free write whose writes had not begun
// (a write may begin an instant after the last look and store its events all the same: the count
// stays an upper bound of what a store may hold although it counts as not written), and the nacked
// ones waiting to be handed out again (a failed write may have stored some or all of their events).
// It does not wait for those: their writes have ended, and none is handed out again after Cut.
func (s *BatchSubscriber) Cut(settle time.Duration) (inFlight int) {
	s.abort()
	timer := time.NewTimer(settle)
	defer timer.Stop()
	for {
		s.settleMu.Lock()
		writing := 0
		for b := range s.out {
			if b.writing && !b.ended && !b.waiting {
				writing++
			}
		}
		s.settleMu.Unlock()
		if writing == 0 {
			break
		}
		select {
		case <-s.settled:
			continue
		case <-timer.C:
		}
		break
	}
	s.settleMu.Lock()
	s.cut = true
	for b := range s.out {
		inFlight += len(b.events)
	}
	s.settleMu.Unlock()
	return inFlight
}

// startWrite marks the batch as being written (the Writer calls it before the sink): from now on a
// store may hold its events, and Cut waits for its write to end.
func (b *gathered) startWrite() {
	b.sub.settleMu.Lock()
	b.writing = true
	b.waiting = false // handed out again: its watch may not have said so yet (handOutAgain)
	b.sub.settleMu.Unlock()
}

// settle acknowledges (ack) or nacks the chunk messages of a sealed batch, unless it is settled
// already or Cut has been called.
func (s *BatchSubscriber) settle(b *gathered, ack bool) {
	s.settleMu.Lock()
	defer s.settleMu.Unlock()
	if b.settled || s.cut {
		return
	}
	if !ack && b.writing && s.ctx.Err() != nil {
		// A write that Cut ended without a verdict (its look-up found nothing, or could not end:
		// a store may still commit it an instant later): neither written nor known unwritten. It
		// stays unsettled, and Cut counts it in flight.
		b.ended = true
		select {
		case s.settled <- struct{}{}:
		default:
		}
		return
	}
	b.settled = true
	delete(s.out, b)
	select {
	case s.settled <- struct{}{}:
	default:
	}
	for _, m := range b.chunks {
		if ack {
			m.Ack()
		} else {
			m.Nack()
		}
	}
}

// hold keeps a nacked batch for its next hand-out and reports true, or reports false when it must be
// settled instead: settled already, or Cut has begun (the batches' contexts are cancelled: a write
// could only fail). A held batch is not settled: Cut counts it in flight but does not wait for it.
func (s *BatchSubscriber) hold(b *gathered) bool {
	s.settleMu.Lock()
	defer s.settleMu.Unlock()
	if b.settled || s.ctx.Err() != nil {
		return false
	}
	b.waiting = true
	select {
	case s.settled <- struct{}{}: // its write is not under way any more: Cut need not wait for it
	default:
	}
	return true
}

// handOutAgain records that a held batch is handed out again.
func (s *BatchSubscriber) handOutAgain(b *gathered) {
	s.settleMu.Lock()
	b.waiting = false
	s.settleMu.Unlock()
	s.redelivered.Add(1)
}

// track records a sealed batch as not settled, before it is offered to the handler (which may settle
// it before the gatherer sees the send done).
func (s *BatchSubscriber) track(b *gathered) {
	s.settleMu.Lock()
	s.out[b] = struct{}{}
	s.settleMu.Unlock()
}

// Close ends every subscription (the chunks held and not written are nacked, and so are those of
// batches handed out and not yet acknowledged, unless Cut came first), waits for them, and closes the
// wrapped subscriber.
func (s *BatchSubscriber) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	for _, c := range s.cancels {
		c()
	}
	s.mu.Unlock()
	s.wg.Wait()
	s.abort()
	return s.sub.Close()
}

// gatherer is one subscription's loop.
type gatherer struct {
	s     *BatchSubscriber
	ctx   context.Context
	in    <-chan *message.Message
	out   chan *message.Message
	slots int           // writes free: batches that may still be handed out
	freed chan struct{} // a handed-out batch was settled
	// nacked takes a handed-out batch whose message was nacked, to be handed out again; unbuffered,
	// so that a batch is taken only while run runs.
	nacked chan *gathered
	done   chan struct{} // closed when run returns
	// pending is a chunk taken while a sealed batch waited, that does not fit the open one: it
	// opens the batch after the open one.
	pending *chunk
}

// gathered is a batch being gathered, then handed out.
type gathered struct {
	chunks []*message.Message
	lines  [][]byte // each chunk's NDJSON, decompressed
	events []*event.Event
	bad    []*event.LineError
	bytes  int64
	// inProcess says every chunk's events came decoded in its context.
	inProcess bool
	// deadline is when the batch is sealed unless it fills first.
	deadline time.Time
	msg      *message.Message // built once sealed
	// attempts counts the handler's calls for this batch message (Writer: retries).
	attempts int
	// prepared is the Writer's preparation of the batch (its dead letters kept), for every message
	// of the batch.
	prepared *prepared
	nacks    int              // how many times its batch message was nacked
	due      time.Time        // when a nacked batch is handed out again
	sub      *BatchSubscriber // settles it
	settled  bool             // guarded by sub.settleMu
	writing  bool             // a write of it has begun (startWrite); guarded by sub.settleMu
	ended    bool             // its write ended at the cut without a verdict; guarded by sub.settleMu
	waiting  bool             // nacked, held to be handed out again (hold); guarded by sub.settleMu
}

// confirm settles the batch as written: its chunk messages are acknowledged now, before the handler
// returns (the Writer calls it once the sink confirmed every event stored or kept as a dead letter).
func (b *gathered) confirm() { b.sub.settle(b, true) }

type contentsKey struct{}

// Contents returns the events of a batch message and the lines of it that are not events. For a
// message from a BatchSubscriber it reads what the subscriber gathered; for any other message it
// decodes the payload (taking the events from the context when the publisher put them there,
// event.NewContext).
func Contents(msg *message.Message) ([]*event.Event, []*event.LineError) {
	if g, ok := msg.Context().Value(contentsKey{}).(*gathered); ok {
		return g.events, g.bad
	}
	c := readChunk(msg)
	return c.events, c.bad
}

// chunk is one chunk message and its contents, read once.
type chunk struct {
	msg       *message.Message
	lines     []byte // the payload, decompressed
	events    []*event.Event
	bad       []*event.LineError
	inProcess bool // the events came decoded in the message's context
}

// readChunk reads the events of one chunk message: from its context when the publisher put them
// there, else by decompressing (as its format says: event.ChunkEncoding) and decoding its payload. A payload that
// cannot be decompressed is one bad line: the chunk's lines cannot be told apart.
func readChunk(msg *message.Message) chunk {
	c := chunk{msg: msg, lines: msg.Payload}
	encoding, err := event.ChunkEncoding(msg.Metadata.Get(event.MetadataFormat))
	if err != nil {
		c.bad = []*event.LineError{{Line: 0, Raw: msg.Payload, Err: err}}
		return c
	}
	if c.events, c.inProcess = event.FromContext(msg.Context()); !c.inProcess {
		lines, err := event.Decompress(msg.Payload, encoding)
		if err != nil {
			c.bad = []*event.LineError{{Line: 0, Raw: msg.Payload, Err: fmt.Errorf("chunk %s: %w", msg.UUID, err)}}
			return c
		}
		c.lines = lines
		c.events, c.bad = event.DecodeLean(lines) // the sinks store the nested parts as they are in Raw
	}
	return c
}

func (g *gatherer) run() {
	defer g.s.wg.Done()
	defer close(g.out)
	defer close(g.done)
	var (
		cur     *gathered   // open
		ready   *gathered   // sealed, waiting for a free write
		waiting []*gathered // nacked, waiting to be handed out again, earliest due first
		timer   = time.NewTimer(time.Hour)
		armed   bool // timer is set for cur's deadline
		again   = time.NewTimer(time.Hour)
		againAt time.Time // again is set for this due time (zero: not set)
		drain   = g.s.drain
		eager   bool
		p       = &g.s.policy
	)
	timer.Stop()
	again.Stop()
	defer timer.Stop()
	defer again.Stop()
	defer func() { // the subscription ended: what was not handed out goes back to the bus
		if cur != nil {
			for _, m := range cur.chunks {
				m.Nack()
			}
		}
		if ready != nil {
			g.s.settle(ready, false)
		}
		for _, b := range waiting {
			g.s.settle(b, false)
		}
	}()
	full := func(b *gathered) bool {
		return len(b.events) >= p.MaxEvents || b.bytes >= p.MaxBytes || (g.s.oneChunk && len(b.chunks) > 0)
	}
	seal := func() { // at most one sealed batch waits
		ready, cur = cur, nil
		timer.Stop() // Go 1.23 timers: no stale tick is received after Stop or Reset
		armed = false
	}
	for {
		if ready == nil && cur != nil && (full(cur) || !time.Now().Before(cur.deadline)) {
			seal()
		}
		if ready != nil && ready.msg == nil {
			ready.msg = ready.message(g.s.ctx)
			g.s.track(ready) // in flight from now on: Cut counts it
		}
		if cur != nil && ready == nil && !armed {
			timer.Reset(time.Until(cur.deadline))
			armed = true
		}
		// The next batch to hand out: a nacked one that is due (none after Cut), else the sealed one.
		now := time.Now()
		var next *gathered
		if len(waiting) > 0 && !now.Before(waiting[0].due) && g.s.ctx.Err() == nil {
			next = waiting[0]
		} else if ready != nil {
			next = ready
		}
		if len(waiting) > 0 && now.Before(waiting[0].due) && !waiting[0].due.Equal(againAt) {
			again.Reset(waiting[0].due.Sub(now))
			againAt = waiting[0].due
		}
		var (
			in   <-chan *message.Message
			out  chan *message.Message
			msg  *message.Message
			tick <-chan time.Time
			due  <-chan time.Time
		)
		if g.pending == nil && (cur == nil || !full(cur)) {
			in = g.in // room in the open batch (or none open yet)
		}
		if next != nil && g.slots > 0 {
			out, msg = g.out, next.msg
		}
		if armed {
			tick = timer.C
		}
		if !againAt.IsZero() {
			due = again.C
		}
		select {
		case m, ok := <-in:
			if !ok {
				return
			}
			c := readChunk(m)
			if cur != nil && len(cur.chunks) > 0 && (len(cur.events)+len(c.events) > p.MaxEvents ||
				cur.bytes+int64(len(c.lines)) > p.MaxBytes) {
				if ready != nil {
					// No room for it in cur, and cur cannot be sealed while another waits: it
					// opens the batch after cur, so keep it aside until cur is sealed.
					g.pending = &c
				} else {
					seal()
				}
			}
			if g.pending == nil {
				cur = g.add(cur, c, eager)
			}
		case out <- msg:
			g.slots--
			g.s.wg.Add(1)
			go g.watch(msg, next, next != ready)
			if next != ready {
				waiting = slices.Delete(waiting, 0, 1)
				break
			}
			ready = nil
			if g.pending != nil && cur != nil { // cur can be sealed now: the kept-aside chunk opens the next
				seal()
				cur = g.add(nil, *g.pending, eager)
				g.pending = nil
			}
		case <-g.freed:
			g.slots++
		case b := <-g.nacked:
			g.slots++ // a batch waiting to be handed out again holds no write
			waiting = g.wait(waiting, b, eager)
		case <-tick:
			armed = false
		case <-due:
			againAt = time.Time{}
		case <-drain:
			eager, drain = true, nil
			if cur != nil {
				cur.deadline = time.Now()
				timer.Stop()
				armed = false
			}
			soon := time.Now().Add(drainWait)
			for _, b := range waiting { // the same bound for all: the order holds
				b.due = minTime(b.due, soon)
			}
		case <-g.ctx.Done():
			if g.pending != nil {
				g.pending.msg.Nack()
			}
			return
		}
	}
}

// wait adds b, whose batch message was nacked, to the batches waiting to be handed out again
// (earliest due first), in a new message, due after its redelivery delay (drainWait at most once
// eager).
func (g *gatherer) wait(waiting []*gathered, b *gathered, eager bool) []*gathered {
	b.nacks++
	d := g.s.redeliveryDelay(b.nacks)
	if eager {
		d = min(d, drainWait)
	}
	b.due = time.Now().Add(d)
	b.attempts = 0 // the handler's calls for the new message
	b.msg = b.message(g.s.ctx)
	i, _ := slices.BinarySearchFunc(waiting, b.due, func(w *gathered, t time.Time) int {
		if w.due.After(t) {
			return 1
		}
		return -1 // after those due at the same time
	})
	return slices.Insert(waiting, i, b)
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// add adds a chunk to b (a new batch when b is nil) and returns b.
func (g *gatherer) add(b *gathered, c chunk, eager bool) *gathered {
	if b == nil {
		wait := g.s.policy.MaxWait
		if eager {
			wait = min(wait, drainWait)
		}
		b = &gathered{deadline: time.Now().Add(wait), inProcess: true, sub: g.s}
	}
	b.inProcess = b.inProcess && c.inProcess
	b.chunks = append(b.chunks, c.msg)
	b.lines = append(b.lines, c.lines)
	b.events = append(b.events, c.events...)
	b.bad = append(b.bad, c.bad...)
	b.bytes += int64(len(c.lines))
	return b
}

// message builds the batch message of b. Its payload is the chunks' NDJSON one after the other (one
// chunk's, not copied), except when every chunk's events came decoded in its context (in process):
// then nothing reads the bytes, and the payload is left empty rather than copied. A batch handed out again gets a new
// message with the id and payload of its last one.
func (b *gathered) message(parent context.Context) *message.Message {
	var msg *message.Message
	if b.msg != nil {
		msg = message.NewMessage(b.msg.UUID, b.msg.Payload)
	} else {
		var payload []byte
		if !b.inProcess && len(b.lines) == 1 {
			payload = b.lines[0]
		} else if !b.inProcess {
			payload = make([]byte, 0, b.bytes)
			for _, l := range b.lines {
				payload = append(payload, l...)
			}
		}
		id := event.NewID()
		if len(b.events) > 0 {
			id = event.BatchID(b.events)
		}
		msg = message.NewMessage(id.String(), payload)
	}
	msg.Metadata.Set(event.MetadataEvents, strconv.Itoa(len(b.events)))
	msg.Metadata.Set(event.MetadataFormat, event.ChunkFormat)
	msg.SetContext(context.WithValue(parent, contentsKey{}, b))
	return msg
}

// watch passes the batch message's ack on to its chunks, or its nack: the batch goes back to the
// gatherer to be handed out again (with OneChunkPerBatch, or once the subscription or the batch
// subscriber is ending, its chunks are nacked). It frees the batch's write slot either way. again
// says that b was nacked before: msg hands it out again.
func (g *gatherer) watch(msg *message.Message, b *gathered, again bool) {
	defer g.s.wg.Done()
	if again {
		g.s.handOutAgain(b) // here, not in the gatherer: before a nack of msg is seen
	}
	select {
	case <-msg.Acked():
		g.s.settle(b, true)
	case <-msg.Nacked():
		if !g.s.oneChunk && g.s.hold(b) {
			select {
			case g.nacked <- b: // the gatherer frees the slot
				return
			case <-g.done:
			}
		}
		g.s.settle(b, false)
	case <-g.ctx.Done():
		g.s.settle(b, false)
	}
	g.freed <- struct{}{} // buffered: never blocks
}
