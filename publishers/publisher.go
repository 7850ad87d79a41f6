package publishers

import (
	"context"
	"errors"

	"github.com/sluicelog/sluice/event"
)

// Publisher is the sink of events for publishers; the root package adapts the bus to it. Publish must
// never block: it returns an error when the event was not accepted (the bus is full or closed), and the
// caller counts the drop. An error that has a `Reason() string` method (also wrapped) names the reason
// it is counted under; any other error counts as ReasonPublishError.
type Publisher interface {
	Publish(ctx context.Context, e *event.Event) error
}

// PublisherFunc adapts a function to Publisher.
type PublisherFunc func(ctx context.Context, e *event.Event) error

// Publish calls f.
func (f PublisherFunc) Publish(ctx context.Context, e *event.Event) error { return f(ctx, e) }

// Counters receives what publishers count. Implementations must be safe for concurrent use and cheap:
// they are called on the request path. A nil Counters means no counting.
type Counters interface {
	// Published counts an event accepted by the Publisher; source is "http" or "app".
	Published(source string)
	// Dropped counts an event the Publisher did not accept, by reason (see Publisher).
	Dropped(source, reason string)
	// SampledOut counts a request that sampling kept out, by route template.
	SampledOut(route string)
}

// Sources of events, as passed to Counters.
const (
	SourceHTTP = string(event.KindHTTP)
	SourceApp  = string(event.KindApp)
)

// ReasonPublishError is the drop reason of a Publisher error that does not name its own.
const ReasonPublishError = "publish_error"

// DropReason returns the reason a Publisher error is counted under.
func DropReason(err error) string {
	var r interface{ Reason() string }
	if errors.As(err, &r) {
		if reason := r.Reason(); reason != "" {
			return reason
		}
	}
	return ReasonPublishError
}

// publish hands e to p and counts the outcome. It reports whether the event was accepted.
func publish(ctx context.Context, p Publisher, c Counters, source string, e *event.Event) bool {
	if err := p.Publish(ctx, e); err != nil {
		if c != nil {
			c.Dropped(source, DropReason(err))
		}
		return false
	}
	if c != nil {
		c.Published(source)
	}
	return true
}
