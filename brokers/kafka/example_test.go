package kafka_test

import (
	"context"
	"fmt"
	"time"

	"github.com/sluicelog/sluice/brokers/kafka"
	"github.com/sluicelog/sluice/event"
)

// bus.url is a comma-separated list of brokers; a bad one is refused naming bus.url.
func ExampleParseURL() {
	seeds, err := kafka.ParseURL("kafka-1:9092, kafka-2:9092")
	fmt.Println(seeds, err)
	_, err = kafka.ParseURL("kafka-1")
	fmt.Println(err)
	// Output:
	// [kafka-1:9092 kafka-2:9092] <nil>
	// bus.url "kafka-1": broker "kafka-1" is not host:port (address kafka-1: missing port in address); for bus.driver kafka bus.url is a comma-separated list of brokers, e.g. 127.0.0.1:9092
}

// A web node declares the topic and the workers' groups, then publishes chunks; Publish returns once
// every in-sync replica has them. A worker subscribes in its route's group and acks each chunk once
// it is written. (Compiled, not run: it needs a broker.)
func ExampleOpen() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s := kafka.DefaultSettings()
	s.InstanceID = "worker-0" // a StatefulSet pod's name: a restart within session_timeout keeps its partitions
	b, err := kafka.Open(ctx, "127.0.0.1:9092", s, nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer b.Close()
	if err := b.Declare(ctx, "sluice.events", []string{"sluice.postgres", "sluice.archive"}); err != nil {
		fmt.Println(err)
		return
	}
	sub, err := b.Subscriber("sluice.postgres")
	if err != nil {
		fmt.Println(err)
		return
	}
	chunks, err := sub.Subscribe(ctx, "sluice.events")
	if err != nil {
		fmt.Println(err)
		return
	}
	for chunk := range chunks {
		events, _ := event.Decode(chunk.Payload)
		fmt.Println(len(events)) // write them, then:
		chunk.Ack()
	}
}
