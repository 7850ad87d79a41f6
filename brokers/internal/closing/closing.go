// Package closing owns what the broker drivers share about closing a Broker: the parts a Broker made
// and must close (its subscribers, a background loop), the refusal of new ones once it is closing,
// and the Close itself, which closes each part once, in the order made, then the Broker's own
// publisher and connections, and returns every error joined (Set); and a stock Watermill publisher
// made safe to close while it publishes (Publisher). A second Close does nothing.
//
// It knows no broker and starts nothing: a driver keeps a Set in its Broker, adds each part's close
// function when it makes the part, and calls Set.Close from Broker.Close.
package closing

import (
	"errors"
	"sync"
)

// Set is what a Broker made and closes in its Close. The zero value is an open, empty set.
type Set struct {
	mu     sync.Mutex
	closed bool
	parts  []func() error
}

// Add keeps part (the function that closes a part), for Close to call, and reports true. Once Close
// was called it keeps nothing and reports false: the caller closes what it made, if anything, and
// refuses it.
func (s *Set) Add(part func() error) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.parts = append(s.parts, part)
	return true
}

// Close, the first time it is called, refuses every later Add, calls each part kept in the order
// added, then each of then in order (the Broker's publisher and connections, which the parts may
// have used), and returns all their errors joined. Later calls return nil at once.
func (s *Set) Close(then ...func() error) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	parts := s.parts
	s.parts = nil
	s.mu.Unlock()
	errs := make([]error, 0, len(parts)+len(then))
	for _, c := range append(parts, then...) {
		errs = append(errs, c())
	}
	return errors.Join(errs...)
}
