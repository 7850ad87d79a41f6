// Package all registers every broker driver that sluice ships (bus.driver): a program that imports
// it (cmd/sluice does) can be configured with any of them. It owns nothing else: import a driver's
// own package instead to link only that driver's client.
package all

import (
	_ "github.com/sluicelog/sluice/brokers/nats"  // bus.driver: nats
	_ "github.com/sluicelog/sluice/brokers/redis" // bus.driver: redis
)
