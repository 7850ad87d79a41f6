package bus

import (
	"errors"
	"strconv"
)

var (
	// ErrFull says a message or reservation was not accepted. Publish, Reserve and PublishReserved
	// return it wrapped in a *FullError that names the topic and the reason.
	ErrFull = errors.New("bus: full")
	// ErrClosed is returned by Publish, Reserve, PublishReserved and Subscribe once the bus is
	// closed.
	ErrClosed = errors.New("bus: closed")
)

// The reasons under which Stats.Dropped counts messages that were not accepted (and
// Stats.DroppedEvents their events, and those of refused reservations). Every reason is always
// present in Stats.Dropped and Stats.DroppedEvents, zero or not.
const (
	// ReasonQueueFull: no subscriber of the topic had room (Drop), or none found room before the
	// message's context ended (Block). Publish, Reserve or PublishReserved returned a *FullError.
	ReasonQueueFull = "queue_full"
	// ReasonTooLarge: the message (or reservation) alone weighs more than MaxEvents or MaxBytes, so
	// it could never fit. Publish returned a *FullError whatever the policy, as do Reserve and
	// PublishReserved.
	ReasonTooLarge = "too_large"
	// ReasonNoSubscribers: the topic had no subscription (and Retain is off). Publish returned nil,
	// as GoChannel does; Reserve and PublishReserved returned a *FullError with this reason, so
	// that the caller can count the events it loses.
	ReasonNoSubscribers = "no_subscribers"
	// ReasonClosed: the bus was closed. Publish, Reserve or PublishReserved returned ErrClosed.
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

// FullError is the error of a Publish, Reserve or PublishReserved that was refused for lack of
// room, or, for Reserve and PublishReserved, for lack of a subscriber. errors.Is(err, ErrFull) holds
// for it, and errors.Is(err, context.DeadlineExceeded) (or Canceled) when a blocked Publish gave up
// on its context. The bus may return the same *FullError value again: do not modify it.
type FullError struct {
	Topic  string
	Reason string // ReasonQueueFull or ReasonTooLarge; ReasonNoSubscribers from Reserve and PublishReserved
	Err    error  // the message context's error when Block gave up waiting; nil otherwise
}

func (e *FullError) Error() string {
	s := "bus: topic " + strconv.Quote(e.Topic) + " full (" + e.Reason + ")"
	if e.Reason == ReasonNoSubscribers {
		s = "bus: topic " + strconv.Quote(e.Topic) + " has no subscriber (" + e.Reason + ")"
	}
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// Is reports whether target is ErrFull.
func (e *FullError) Is(target error) bool { return target == ErrFull }

// Unwrap returns the context's error, if any.
func (e *FullError) Unwrap() error { return e.Err }
