package publishers

import (
	"fmt"
	"strconv"

	"github.com/sluicelog/sluice/event"
)

// LevelMap maps a request's outcome to its level, as configuration: keys are a status code ("404"),
// a status class ("4xx", "5xx") or "panic", values a level name (DEBUG, INFO, WARN, ERROR). A code
// wins over its class; what the map does not name keeps DefaultLevels' level. Empty means
// DefaultLevels.
type LevelMap map[string]string

// Validate names the first key or level that is not one.
func (m LevelMap) Validate() error {
	for k, v := range m {
		if _, err := event.ParseLevel(v); err != nil {
			return fmt.Errorf("levels.%s (%q): %w", k, v, err)
		}
		if k == "panic" {
			continue
		}
		if len(k) == 3 && k[1:] == "xx" && k[0] >= '1' && k[0] <= '5' {
			continue
		}
		if n, err := strconv.Atoi(k); err == nil && n >= 100 && n <= 599 {
			continue
		}
		return fmt.Errorf("levels: %q is not a status code (404), a class (4xx) or panic", k)
	}
	return nil
}

// Func returns the Levels function of m (DefaultLevels when m is empty); m must be valid.
func (m LevelMap) Func() func(status int, err error, panicked bool) event.Level {
	if len(m) == 0 {
		return DefaultLevels
	}
	levels := make(map[string]event.Level, len(m))
	for k, v := range m {
		levels[k], _ = event.ParseLevel(v)
	}
	return func(status int, err error, panicked bool) event.Level {
		if l, ok := levels["panic"]; ok && panicked {
			return l
		}
		if l, ok := levels[strconv.Itoa(status)]; ok {
			return l
		}
		if l, ok := levels[strconv.Itoa(status/100)+"xx"]; ok {
			return l
		}
		return DefaultLevels(status, err, panicked)
	}
}
