package kafka_test

import (
	"context"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"

	"github.com/sluicelog/sluice/brokers"
	"github.com/sluicelog/sluice/brokers/brokertest"
	"github.com/sluicelog/sluice/brokers/kafka"
	"github.com/sluicelog/sluice/internal/testenv"
)

// testSettings are the defaults with a session timeout of 6 s, kfake's smallest.
func testSettings() kafka.Settings {
	s := kafka.DefaultSettings()
	s.SessionTimeout = 6 * time.Second
	return s
}

func open(t *testing.T, addr string, s kafka.Settings) *kafka.Broker {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := kafka.Open(ctx, addr, s, watermill.NewStdLogger(false, false))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

// The driver passes the conformance suite against a Kafka-protocol broker (kfake) in a process of its
// own, with its production defaults (a session timeout of 10 s).
func TestConformance(t *testing.T) {
	k := testenv.Kafka(t, testenv.KafkaOptions{})
	brokertest.Run(t, func(t *testing.T) brokers.Broker { return open(t, k.Addr(), kafka.DefaultSettings()) },
		brokertest.Options{Redelivery: 15 * time.Second})
}
