package sluice

import (
	"time"

	"github.com/sluicelog/sluice/subscribers"
)

// RouteInfo describes a route for people: what it takes and where its events go.
type RouteInfo struct {
	Name     string
	Sink     string
	Levels   []string
	Kinds    []string
	Paths    []string
	Where    string        // said by the route's sink type
	MaxWait  time.Duration // the longest an event waits for its batch
	Batch    int           // events per batch at most
	Throttle float64       // events per second, 0 when not throttled
}

// Routes describes the pipeline's routes, in the order of the configuration.
func (p *Pipeline) Routes() []RouteInfo {
	out := make([]RouteInfo, 0, len(p.routes))
	for _, r := range p.routes {
		ri := RouteInfo{Name: r.cfg.Name, Sink: r.cfg.Sink, Levels: r.cfg.Levels, Kinds: r.cfg.Kinds, Paths: r.cfg.Paths,
			MaxWait: r.cfg.Batch.MaxWait, Batch: r.cfg.Batch.MaxEvents, Throttle: r.cfg.Throttle.EventsPerSecond, Where: r.cfg.Sink}
		if o := p.opened[r.cfg.Sink]; o != nil {
			ri.Where = o.Where(subscribers.Route{Name: r.cfg.Name, Options: r.cfg.Options})
		}
		out = append(out, ri)
	}
	return out
}

// Readiness is what /readyz reports.
type Readiness struct {
	Ready bool `json:"ready"`
	// Routes gives each route's sink and breaker state.
	Routes []RouteReadiness `json:"routes"`
	// Bus is the fill of the bus.
	Bus BusReadiness `json:"bus"`
}

// RouteReadiness is one route's part of Readiness.
type RouteReadiness struct {
	Name    string `json:"name"`
	Sink    string `json:"sink"`
	Breaker string `json:"breaker"`
	Error   string `json:"error,omitempty"`
}

// BusReadiness is the bus's part of Readiness.
type BusReadiness struct {
	DepthEvents int64   `json:"depth_events"` // accepted and not yet written, open chunks included
	DepthBytes  int64   `json:"depth_bytes"`
	InFlight    int64   `json:"in_flight"` // chunks handed to routes and not yet acknowledged
	Capacity    int     `json:"capacity_events_per_route"`
	Fill        float64 `json:"fill"` // the fullest route's share, 0..1 (approximated by depth / routes / capacity)
}

// Readiness reports whether the pipeline is accepting events and each route's state. It is ready
// unless it is closing or every route's breaker is open.
func (p *Pipeline) Readiness() Readiness {
	st := p.bus.Stats()
	r := Readiness{Ready: !p.closing.Load()}
	open := 0
	for _, rt := range p.routes {
		rr := RouteReadiness{Name: rt.cfg.Name, Sink: rt.sink.Name(), Breaker: rt.breaker.State().String()}
		if o := p.opened[rt.cfg.Sink]; o != nil {
			rr.Error = o.Status()
		}
		if rt.breaker.State() == BreakerOpen {
			open++
		}
		r.Routes = append(r.Routes, rr)
	}
	if len(p.routes) > 0 && open == len(p.routes) {
		r.Ready = false
	}
	capacity := p.bus.Config().MaxEvents
	depth := st.DepthEvents + st.ReservedEvents
	r.Bus = BusReadiness{DepthEvents: depth, DepthBytes: st.DepthBytes + st.ReservedBytes, InFlight: st.InFlight, Capacity: capacity}
	if n := len(p.routes); n > 0 && capacity > 0 {
		r.Bus.Fill = float64(depth) / float64(n) / float64(capacity)
	}
	return r
}
