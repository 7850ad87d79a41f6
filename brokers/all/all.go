// Package all registers every broker driver that sluice ships (bus.driver: kafka, …): a program that
// imports it for its side effect can run with any of them. It owns nothing else; a program that needs
// one driver imports that driver's package alone, and links only its client.
package all

import (
	_ "github.com/sluicelog/sluice/brokers/kafka" // bus.driver: kafka
)
