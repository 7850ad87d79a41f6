package closing

import (
	"errors"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
)

// stock is a publisher whose Publish blocks until release is closed, and that counts its Closes.
type stock struct {
	publishing chan struct{}
	release    chan struct{}
	closes     int
}

func (s *stock) Publish(string, ...*message.Message) error {
	s.publishing <- struct{}{}
	<-s.release
	return nil
}

func (s *stock) Close() error { s.closes++; return nil }

// Close waits for the publish under way, closes the stock publisher once, and later publishes get
// the error given.
func TestPublisherCloseWaitsForThePublishUnderWay(t *testing.T) {
	st := &stock{publishing: make(chan struct{}), release: make(chan struct{})}
	errClosed := errors.New("closed")
	p := NewPublisher(st, errClosed)
	published := make(chan error)
	go func() { published <- p.Publish("t", message.NewMessage("1", nil)) }()
	<-st.publishing
	closed := make(chan error)
	go func() { closed <- p.Close() }()
	select {
	case <-closed:
		t.Fatal("Close returned while a publish was under way")
	case <-time.After(50 * time.Millisecond):
	}
	close(st.release)
	if err := <-published; err != nil {
		t.Fatalf("the publish under way = %v", err)
	}
	if err := <-closed; err != nil {
		t.Fatalf("Close = %v", err)
	}
	if err := p.Publish("t", message.NewMessage("2", nil)); !errors.Is(err, errClosed) {
		t.Fatalf("Publish after Close = %v, want %v", err, errClosed)
	}
	if err := p.Close(); err != nil || st.closes != 1 {
		t.Fatalf("second Close = %v, stock closed %d times, want nil and once", err, st.closes)
	}
}
