package testenv

import (
	"net"
	"testing"
	"time"
)

// Kill stops the broker at once and Start brings it back on the same address, as often as needed.
func TestKafkaKillAndStart(t *testing.T) {
	k := Kafka(t, KafkaOptions{Partitions: 2})
	answers := func() bool {
		c, err := net.DialTimeout("tcp", k.Addr(), 5*time.Second)
		if err == nil {
			c.Close()
		}
		return err == nil
	}
	for range 2 {
		if !answers() {
			t.Fatalf("nothing answers on %s after Start", k.Addr())
		}
		k.Kill()
		k.Kill() // killing a killed broker does nothing
		if answers() {
			t.Fatalf("something answers on %s after Kill", k.Addr())
		}
		k.Start()
		k.Start() // starting a running broker does nothing
	}
}
