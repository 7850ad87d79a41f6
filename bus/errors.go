package bus

import (
	"errors"
	"strconv"
)

var (
	// ErrFull says a message was not accepted for lack of room. Publish returns it wrapped in a
	// *FullError that names the topic and the reason.
	ErrFull = errors.New("bus: full")
	// ErrClosed is returned by Publish and Subscribe once the bus is closed.
	ErrClosed = errors.New("bus: closed")
)

// The reasons under which Stats.Dropped counts messages that were not accepted. Every reason is
// always present in Stats.Dropped, zero or not.
const (
	// ReasonQueueFull: no subscriber of the topic had room (Drop), or none found room before the
	// message's context ended (Block). Publish returned a *FullError.
	ReasonQueueFull = "queue_full"
	// ReasonTooLarge: the message alone weighs more than MaxEvents or MaxBytes, so it could never
	// fit. Publish returned a *FullError whatever the policy.
	ReasonTooLarge = "too_large"
	// ReasonNoSubscribers: the topic had no subscription (and Retain is off). Publish returned nil,
	// as GoChannel does.
	ReasonNoSubscribers = "no_subscribers"
	// ReasonClosed: the bus was closed. Publish returned ErrClosed.
	ReasonClosed = "closed"
	// ReasonSubscriberFull counts subscriber copies, not messages: one subscriber's share had no room
	// while another subscriber of the topic took the message, so that subscriber (route) misses it.
	// Publish returned nil, and the message is counted in Published.
	ReasonSubscriberFull = "subscriber_full"
)

// reasons lists the drop reasons in the order of the counters in Bus.
var reasons = [...]string{ReasonQueueFull, ReasonTooLarge, ReasonNoSubscribers, ReasonClosed, ReasonSubscriberFull}

type reason int

const (
	queueFull reason = iota
	tooLarge
	noSubscribers
	closed
	subscriberFull
)

// FullError is the error of a Publish that found no room. errors.Is(err, ErrFull) holds for it, and
// errors.Is(err, context.DeadlineExceeded) (or Canceled) when a blocked Publish gave up on its context.
type FullError struct {
	Topic  string
	Reason string // ReasonQueueFull or ReasonTooLarge
	Err    error  // the message context's error when Block gave up waiting; nil otherwise
}

func (e *FullError) Error() string {
	s := "bus: topic " + strconv.Quote(e.Topic) + " full (" + e.Reason + ")"
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// Is reports whether target is ErrFull.
func (e *FullError) Is(target error) bool { return target == ErrFull }

// Unwrap returns the context's error, if any.
func (e *FullError) Unwrap() error { return e.Err }
