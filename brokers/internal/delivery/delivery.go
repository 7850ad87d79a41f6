// Package delivery owns what the subscribers of the broker drivers share: handing a broker's messages
// out to one Watermill subscription, many unacknowledged at once (so that a batch subscriber can
// gather several chunks into one sink write), and turning each message's Ack or Nack into the
// broker's. While a message is handed out and not settled, the broker is told every heartbeat that it
// is still being worked on (so that a live consumer that takes longer than the broker's redelivery
// timeout keeps its message); when the subscription ends, the messages it holds unsettled are
// released to the group at once.
//
// It knows no broker: a driver gives it a Source (Fetch, Ack, Nack, Touch, Release) per subscription.
package delivery

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
)

// Source is one subscription's side at the broker. K identifies a message there (a stream entry id,
// a JetStream message).
type Source[K comparable] interface {
	// Fetch returns up to n messages, waiting about a second at most when there are none (so that
	// the subscription notices its end). After an error Run waits a second and fetches again.
	Fetch(ctx context.Context, n int) ([]Item[K], error)
	// Ack tells the broker the message is processed: it is never offered again.
	Ack(ctx context.Context, k K) error
	// Nack offers the message again after the driver's delay (to this member or another).
	Nack(ctx context.Context, k K) error
	// Touch tells the broker the messages are still being worked on.
	Touch(ctx context.Context, ks []K) error
	// Release offers the messages to the group's other members at once: the subscription ended
	// without settling them.
	Release(ctx context.Context, ks []K) error
}

// Item is a fetched message and its key at the broker.
type Item[K comparable] struct {
	Key K
	Msg *message.Message
}

// Options tune Run.
type Options struct {
	// MaxInFlight bounds the messages handed out and not settled (and the goroutines that wait for
	// their settlement: one each).
	MaxInFlight int
	// Heartbeat is how often the messages held are touched.
	Heartbeat time.Duration
	// Logger logs the broker's errors, with Fields.
	Logger watermill.LoggerAdapter
	Fields watermill.LogFields
}

// settleTimeout bounds one Ack, Nack, Touch or Release call.
const settleTimeout = 10 * time.Second

// Run hands the source's messages out on out until ctx ends, then waits for the settlements under
// way, releases what is still held, and closes out.
func Run[K comparable](ctx context.Context, src Source[K], out chan<- *message.Message, o Options) {
	defer close(out)
	r := &run[K]{src: src, o: o, held: map[K]struct{}{}, slots: make(chan struct{}, o.MaxInFlight)}
	stop := make(chan struct{})
	var beat sync.WaitGroup
	beat.Go(func() { r.heartbeat(stop) })
	var waiting sync.WaitGroup
	r.fetchLoop(ctx, out, &waiting)
	waiting.Wait()
	close(stop)
	beat.Wait()
	if keys := r.keys(); len(keys) > 0 {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), settleTimeout)
		defer cancel()
		if err := src.Release(sctx, keys); err != nil {
			o.Logger.Error("Could not release the messages held (they go to another member after the redelivery timeout)", err, o.Fields.Add(watermill.LogFields{"messages": len(keys)}))
		}
	}
}

type run[K comparable] struct {
	src   Source[K]
	o     Options
	slots chan struct{} // a token per message handed out and not settled

	mu   sync.Mutex
	held map[K]struct{} // fetched and not settled
}

func (r *run[K]) fetchLoop(ctx context.Context, out chan<- *message.Message, waiting *sync.WaitGroup) {
	for {
		n, ok := r.acquire(ctx)
		if !ok {
			return
		}
		items, err := r.src.Fetch(ctx, n)
		for range n - len(items) {
			<-r.slots
		}
		if err != nil && ctx.Err() == nil {
			r.o.Logger.Error("Could not fetch messages from the broker; trying again in 1 s", err, r.o.Fields)
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
		for i, it := range items {
			r.hold(it.Key)
			if !handOut(ctx, out, it.Msg) { // held, not handed out: released by Run
				for range items[i:] {
					<-r.slots
				}
				for _, rest := range items[i+1:] {
					r.hold(rest.Key)
				}
				return
			}
			waiting.Go(func() { r.settle(ctx, it) })
		}
	}
}

// handOut sends m on out, unless the subscription ended (before or meanwhile).
func handOut(ctx context.Context, out chan<- *message.Message, m *message.Message) bool {
	if ctx.Err() != nil { // fetched after the end
		return false
	}
	m.SetContext(ctx)
	select {
	case out <- m:
		return true
	case <-ctx.Done():
		return false
	}
}

// acquire takes at least one free slot, waiting for it, and then every other free slot: how many
// messages to fetch.
func (r *run[K]) acquire(ctx context.Context) (int, bool) {
	select {
	case r.slots <- struct{}{}:
	case <-ctx.Done():
		return 0, false
	}
	n := 1
	for n < cap(r.slots) {
		select {
		case r.slots <- struct{}{}:
			n++
			continue
		default:
		}
		break
	}
	return n, true
}

// settle waits for the message's ack or nack and passes it on to the broker. When the subscription
// ends first the message stays held, for Run to release.
func (r *run[K]) settle(ctx context.Context, it Item[K]) {
	defer func() { <-r.slots }()
	var nack bool
	select {
	case <-it.Msg.Acked():
	case <-it.Msg.Nacked():
		nack = true
	case <-ctx.Done():
		select {
		case <-it.Msg.Acked():
		case <-it.Msg.Nacked():
			nack = true
		default:
			return
		}
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), settleTimeout)
	defer cancel()
	var err error
	if nack {
		err = r.src.Nack(sctx, it.Key)
	} else {
		err = r.src.Ack(sctx, it.Key)
	}
	if err != nil {
		r.o.Logger.Error("Could not settle a message at the broker (it is offered again after the redelivery timeout)", err,
			r.o.Fields.Add(watermill.LogFields{"message_uuid": it.Msg.UUID, "nack": nack}))
	}
	r.mu.Lock()
	delete(r.held, it.Key)
	r.mu.Unlock()
}

func (r *run[K]) hold(k K) {
	r.mu.Lock()
	r.held[k] = struct{}{}
	r.mu.Unlock()
}

func (r *run[K]) keys() []K {
	r.mu.Lock()
	defer r.mu.Unlock()
	keys := make([]K, 0, len(r.held))
	for k := range r.held {
		keys = append(keys, k)
	}
	return keys
}

func (r *run[K]) heartbeat(stop <-chan struct{}) {
	t := time.NewTicker(r.o.Heartbeat)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		keys := r.keys()
		if len(keys) == 0 {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), settleTimeout)
		if err := r.src.Touch(ctx, keys); err != nil {
			r.o.Logger.Error("Could not tell the broker that messages are still being worked on", err, r.o.Fields.Add(watermill.LogFields{"messages": len(keys)}))
		}
		cancel()
	}
}

// Subscriptions are the subscriptions of one Watermill Subscriber: Close ends them all.
type Subscriptions struct {
	mu      sync.Mutex
	closed  bool
	cancels []context.CancelFunc
	wg      sync.WaitGroup
}

// ErrClosed is returned by Subscribe after Close.
var ErrClosed = errors.New("brokers: subscriber closed")

// Subscribe runs src (Run) until ctx ends or subs close, and returns the channel of its messages.
func Subscribe[K comparable](subs *Subscriptions, ctx context.Context, src Source[K], o Options) (<-chan *message.Message, error) {
	subs.mu.Lock()
	defer subs.mu.Unlock()
	if subs.closed {
		return nil, ErrClosed
	}
	ctx, cancel := context.WithCancel(ctx)
	subs.cancels = append(subs.cancels, cancel)
	out := make(chan *message.Message)
	subs.wg.Go(func() { Run(ctx, src, out, o) })
	return out, nil
}

// Closed says whether Close was called.
func (subs *Subscriptions) Closed() bool {
	subs.mu.Lock()
	defer subs.mu.Unlock()
	return subs.closed
}

// Close ends every subscription and waits until each has released what it held.
func (subs *Subscriptions) Close() error {
	subs.mu.Lock()
	subs.closed = true
	cancels := subs.cancels
	subs.cancels = nil
	subs.mu.Unlock()
	for _, c := range cancels {
		c()
	}
	subs.wg.Wait()
	return nil
}
