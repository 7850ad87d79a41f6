package brokers_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/ThreeDotsLabs/watermill"

	"github.com/sluicelog/sluice/brokers"
)

// QueueSettings are a driver's settings: the section bus.examplemq of the configuration.
type QueueSettings struct {
	Stream   string `yaml:"stream"`
	Replicas int    `yaml:"replicas"`
}

func (s QueueSettings) Validate() error { return nil }

// A driver package registers itself in an init function; its Open gets the configured settings as
// its own type.
func ExampleDriverOf() {
	brokers.Register(brokers.DriverOf("examplemq", "examplemq://host:1234",
		func() QueueSettings { return QueueSettings{Stream: "logs", Replicas: 1} },
		func(_ context.Context, url string, s QueueSettings, _ watermill.LoggerAdapter) (brokers.Broker, error) {
			return nil, errors.New("cannot reach " + url + " for stream " + s.Stream)
		}))
	d, _ := brokers.Lookup("examplemq")
	fmt.Printf("defaults: %+v\n", *d.Settings().(*QueueSettings))
	_, err := d.Open(context.Background(), "examplemq://10.0.0.1:1234", QueueSettings{Stream: "audit"}, nil)
	fmt.Println(err)
	// Output:
	// defaults: {Stream:logs Replicas:1}
	// cannot reach examplemq://10.0.0.1:1234 for stream audit
}
