package redis_test

import (
	"context"
	"fmt"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/sluicelog/sluice/brokers/redis"
)

// A web node publishes a chunk; a worker of the group "sluice.pg" receives it and acknowledges it
// after writing it. Both declare the topic and the group first.
func ExampleOpen() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := redis.Open(ctx, "redis://127.0.0.1:6379/0", redis.DefaultSettings(), nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer b.Close()
	if err := b.Declare(ctx, "sluice.example", []string{"sluice.pg"}); err != nil {
		fmt.Println(err)
		return
	}
	if err := b.Publisher().Publish("sluice.example", message.NewMessage(watermill.NewUUID(), []byte("{\"level\":\"WARN\"}\n"))); err != nil {
		fmt.Println(err)
		return
	}
	sub, _ := b.Subscriber("sluice.pg")
	chunks, err := sub.Subscribe(ctx, "sluice.example")
	if err != nil {
		fmt.Println(err)
		return
	}
	select {
	case m := <-chunks:
		fmt.Printf("%s", m.Payload)
		m.Ack() // after the sink wrote it
	case <-ctx.Done():
		fmt.Println("nothing received")
	}
	// Output: {"level":"WARN"}
}
