package publishers

import (
	"fmt"
	"path"
	"strings"
)

// Sampling keeps a share of the successful requests of high-volume routes. Only events below WARN are
// ever sampled out: warnings and errors are always kept. The decision is deterministic by request id,
// so that every service that sees the same request id makes the same choice.
type Sampling struct {
	// Rules are tried in order; the first that matches a request decides its rate. A request that no rule
	// matches is always kept.
	Rules []SampleRule `yaml:"rules" env:"-"`
}

// SampleRule sets the rate at which the matching successful requests are kept.
type SampleRule struct {
	// Route is the Echo route template (c.Path(), e.g. "/users/:id") or a path.Match pattern over it
	// ("/static/*", "/api/*/health"). Required.
	Route string `yaml:"route"`
	// Method, when set, restricts the rule to one HTTP method (case-insensitive).
	Method string `yaml:"method"`
	// Rate is the share of matching requests kept, from 0 (none) to 1 (all).
	Rate float64 `yaml:"rate"`
}

// Validate names the first bad rule.
func (s Sampling) Validate() error {
	_, err := s.compile()
	return err
}

type sampler struct {
	rules []SampleRule
}

func (s Sampling) compile() (*sampler, error) {
	if len(s.Rules) == 0 {
		return nil, nil
	}
	rules := make([]SampleRule, len(s.Rules))
	for i, r := range s.Rules {
		if r.Route == "" {
			return nil, fmt.Errorf("`Sampling.Rules[%d].Route` is empty", i)
		}
		if _, err := path.Match(r.Route, ""); err != nil {
			return nil, fmt.Errorf("`Sampling.Rules[%d].Route` (%q) is not a valid pattern: %w", i, r.Route, err)
		}
		if !(r.Rate >= 0 && r.Rate <= 1) { // also rejects NaN
			return nil, fmt.Errorf("`Sampling.Rules[%d].Rate` (%v) must be between 0 and 1", i, r.Rate)
		}
		r.Method = strings.ToUpper(r.Method)
		rules[i] = r
	}
	return &sampler{rules: rules}, nil
}

// keep reports whether a successful request is kept. A nil sampler keeps everything.
func (s *sampler) keep(method, route, requestID string) bool {
	if s == nil {
		return true
	}
	for _, r := range s.rules {
		if r.Method != "" && r.Method != method {
			continue
		}
		if r.Route != route {
			if ok, _ := path.Match(r.Route, route); !ok {
				continue
			}
		}
		switch {
		case r.Rate >= 1:
			return true
		case r.Rate <= 0:
			return false
		}
		return sampleFraction(requestID) < r.Rate
	}
	return true
}

// sampleFraction maps a request id to a number in [0, 1), uniformly: FNV-1a, then a 64-bit finaliser
// (splitmix64) so that ids that differ in one character spread over the whole range.
func sampleFraction(id string) float64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(id); i++ {
		h ^= uint64(id[i])
		h *= 1099511628211
	}
	h ^= h >> 30
	h *= 0xbf58476d1ce4e5b9
	h ^= h >> 27
	h *= 0x94d049bb133111eb
	h ^= h >> 31
	return float64(h>>11) / (1 << 53)
}
