package brokertest

import (
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
)

// SurvivesKill checks what a kill -9 of the broker costs: it publishes 200 chunks through a broker
// from open, has one member of a group acknowledge 100, calls restart (which kills the broker server
// with kill -9 and starts it again), and checks that every chunk not acknowledged is delivered after
// the restart, to the first member (reconnected) or to a member from a new open. It returns how many
// chunks acknowledged before the kill came again (acknowledgements the broker had not stored), and
// logs the figures.
func SurvivesKill(t *testing.T, open Open, restart func()) (again int) {
	const n = 200
	b := open(t)
	topic, g := Names(t, "a")
	declare(t, b, topic, g)
	sent := map[string]bool{}
	for range n {
		m := Chunk(5)
		sent[m.UUID] = true
		publish(t, b, topic, m)
	}
	ch := subscribe(t, b, g[0], topic)
	acked := map[string]bool{}
	for _, m := range receive(t, ch, n/2, true, 30*time.Second) {
		acked[m.UUID] = true
	}
	time.Sleep(time.Second) // the acks are passed on by the subscription's goroutines
	restart()
	ch2 := subscribe(t, open(t), g[0], topic)
	got := map[string]bool{}
	for len(got) < n-len(acked) {
		var m *message.Message
		select {
		case m = <-ch:
		case m = <-ch2:
		case <-time.After(60 * time.Second):
			t.Fatalf("after the restart %d of the %d chunks not acknowledged came within 60 s", len(got), n-len(acked))
		}
		m.Ack()
		switch {
		case !sent[m.UUID]:
			t.Fatalf("unknown message %s", m.UUID)
		case acked[m.UUID]:
			again++
		default:
			got[m.UUID] = true
		}
	}
	t.Logf("kill -9 of the broker: %d acknowledged publishes, %d acknowledged by the group before the kill, %d of them delivered again after it, all %d others delivered", n, len(acked), again, len(got))
	return again
}
