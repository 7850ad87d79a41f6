package postgres_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/sluicelog/sluice/brokers"
	_ "github.com/sluicelog/sluice/brokers/postgres" // registers bus.driver: postgres
	"github.com/sluicelog/sluice/config"
)

// The configuration names the driver, bus.url and the driver's section bus.postgres; the registry
// opens the broker with them, as sluice does.
func Example() {
	file := filepath.Join(os.TempDir(), "sluice-bus-example.yaml")
	_ = os.WriteFile(file, []byte(`bus:
  driver: postgres
  url: postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable
  postgres:
    partitions: 2
    poll_interval: 100ms
    retention: 24h
`), 0o600)
	defer os.Remove(file)
	c, err := config.Load(file, nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	d, _ := brokers.Lookup(c.Bus.Driver)
	b, err := d.Open(context.Background(), c.Bus.URL, c.BusSettings(), nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer b.Close()
	fmt.Printf("bus.driver %s, settings %+v\n", d.Name, c.BusSettings())
	// Output:
	// bus.driver postgres, settings {TablePrefix:sluice_bus_ Partitions:2 PollInterval:100ms AckDeadline:30s NackDelay:1s SubscribeBatchSize:1 Retention:24h0m0s PruneInterval:1m0s MaxConns:16}
}
