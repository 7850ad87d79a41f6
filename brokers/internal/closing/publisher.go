package closing

import (
	"sync"

	"github.com/ThreeDotsLabs/watermill/message"
)

// Publisher is a stock Watermill Publisher made safe to close while it publishes: the stock ones of
// watermill-redisstream and watermill-sql set a flag in Close that Publish reads without their lock
// (and watermill-sql may Wait on its WaitGroup before a Publish's Add). Close waits for the
// publishes under way, then closes the stock publisher, once; a later Publish returns the error
// that NewPublisher was given.
type Publisher struct {
	stock     message.Publisher
	errClosed error

	mu     sync.RWMutex
	closed bool
}

// NewPublisher guards stock; its Publish returns errClosed once it is closed.
func NewPublisher(stock message.Publisher, errClosed error) *Publisher {
	return &Publisher{stock: stock, errClosed: errClosed}
}

// Publish publishes msgs with the stock publisher, unless Close was called.
func (p *Publisher) Publish(topic string, msgs ...*message.Message) error {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.closed {
		return p.errClosed
	}
	return p.stock.Publish(topic, msgs...)
}

// Close waits for the publishes under way, refuses the next ones and closes the stock publisher;
// later calls return nil.
func (p *Publisher) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	p.closed = true
	return p.stock.Close()
}
