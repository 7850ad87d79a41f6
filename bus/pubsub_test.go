package bus_test

import (
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/tests"

	"github.com/sluicelog/sluice/bus"
)

// suiteConfig is the bus as Watermill's universal suite needs it: Block, so that Publish waits for
// room instead of dropping; Retain, because most of the suite publishes before it subscribes (as
// GoChannel's own run uses Persistent); short redelivery delays, because it nacks a lot.
func suiteConfig() bus.Config {
	return bus.Config{
		OnFull:             bus.Block,
		Retain:             true,
		RedeliveryDelay:    5 * time.Millisecond,
		MaxRedeliveryDelay: 20 * time.Millisecond,
	}
}

// suiteFeatures are the features the bus has, whatever its window:
//   - ExactlyOnceDelivery: nothing is delivered twice to a subscription unless it was nacked.
//   - not Persistent, and RequireSingleInstance: messages live in one process, in one Bus.
//   - not ConsumerGroups: every subscription of a topic gets every message (fan-out).
//   - not NewSubscriberReceivesOldMessages: Retain does replay, but within one Bus, and the suite's
//     test for it expects a new instance to see them.
func suiteFeatures() tests.Features {
	return tests.Features{
		ExactlyOnceDelivery:   true,
		RequireSingleInstance: true,
	}
}

func suiteConstructor(cfg bus.Config) tests.PubSubConstructor {
	return func(t *testing.T) (message.Publisher, message.Subscriber) {
		b, err := bus.New(cfg, watermill.NopLogger{})
		if err != nil {
			t.Fatal(err)
		}
		return b, b
	}
}

// TestPubSub runs the suite with the default window (MaxInFlight 5,000): messages are handed out in
// order, but a nacked one comes back after later ones, so order is not guaranteed.
func TestPubSub(t *testing.T) {
	tests.TestPubSub(t, suiteFeatures(), suiteConstructor(suiteConfig()), nil)
}

// TestPubSubOrdered runs the suite with a window of one message: then a subscription gets its
// messages one at a time, in publish order, a nacked one again before the next.
func TestPubSubOrdered(t *testing.T) {
	cfg := suiteConfig()
	cfg.MaxInFlight = 1
	f := suiteFeatures()
	f.GuaranteedOrder = true
	tests.TestPubSub(t, f, suiteConstructor(cfg), nil)
}

// TestPubSubPreserveContext runs the suite with the publisher's context handed to subscribers.
func TestPubSubPreserveContext(t *testing.T) {
	cfg := suiteConfig()
	cfg.PreserveContext = true
	f := suiteFeatures()
	f.ContextPreserved = true
	tests.TestPubSub(t, f, suiteConstructor(cfg), nil)
}
