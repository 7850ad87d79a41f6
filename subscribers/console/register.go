package console

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/sluicelog/sluice/subscribers"
)

// SinkType is the name routes give this sink (`sink: console`) and its section in the configuration.
const SinkType = "console"

// DefaultWriteTimeout bounds one batch's printing in a pipeline (a blocked terminal or a full disk).
const DefaultWriteTimeout = 5 * time.Second

func init() {
	subscribers.RegisterSinkType(subscribers.SinkType{Name: SinkType, Open: open,
		Settings: func() any { c := DefaultConfig(); return &c }})
}

// opened is the console sink type opened for one pipeline: one Sink (one target) for every route
// that names it, opened when the first route asks.
type opened struct {
	cfg  Config
	once sync.Once
	sink *Sink
	err  error
}

func open(_ context.Context, section any, _ *slog.Logger) (subscribers.Opened, error) {
	cfg, ok := section.(Config)
	if !ok {
		return nil, fmt.Errorf("console: the %s section is a %T, not console.Config", SinkType, section)
	}
	return &opened{cfg: cfg.WithDefaults()}, nil
}

func (o *opened) Sink(subscribers.Route) (subscribers.Sink, error) {
	o.once.Do(func() { o.sink, o.err = New(o.cfg) })
	return o.sink, o.err
}

func (o *opened) WriteTimeout() time.Duration { return DefaultWriteTimeout }
func (o *opened) Status() string              { return "" }
func (o *opened) Where(subscribers.Route) string {
	return fmt.Sprintf("console %s, %s lines", o.cfg.Target, o.cfg.Format)
}

func (o *opened) Close() error {
	if o.sink == nil {
		return nil
	}
	return o.sink.Close()
}
