package subscribers

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"
)

// A SinkType is a kind of store that routes name (`sink: postgres`). The package that implements it
// registers it with RegisterSinkType in an init function, and owns everything about it: its settings
// (their yaml keys, defaults and validation), its connection (opened lazily or with retries, its
// readiness, its closing) and its sinks. The pipeline opens a registered type when a route names it,
// with the type's section of the configuration, and knows nothing else of it.
type SinkType struct {
	// Name is what a route's sink key says, and the type's section in the configuration.
	Name string
	// Open opens the type for one pipeline from section, the type's settings as the configuration
	// holds them (validated). It must not fail because the store is unreachable now: the Opened
	// connects on first use or retries, and says so in Status.
	Open func(ctx context.Context, section any, log *slog.Logger) (Opened, error)
	// ValidateRoute, when set, checks a route's options against section; its error names the option.
	ValidateRoute func(section any, r Route) error
	// Settings, when set, returns a pointer to the type's default settings: a struct with yaml tags,
	// and a Validate() error method whose errors are *SettingError. The configuration then holds
	// them as the section named Name (YAML, SLUICE_NAME_KEY variables, validation) with nothing else
	// to declare, and Open gets the struct (not the pointer). The built-in postgres and blob types
	// have typed fields in the configuration instead.
	Settings func() any
}

// Route is what a sink type is told of a route: its name and its options (`options:` in the route's
// configuration, which only the sink type reads).
type Route struct {
	Name    string
	Options map[string]string
}

// Opened is a sink type opened for one pipeline.
type Opened interface {
	// Sink returns the sink of a route (routes with the same options may share one).
	Sink(r Route) (Sink, error)
	// WriteTimeout bounds one write attempt of a batch.
	WriteTimeout() time.Duration
	// Where says where a route's events go, for people ("PostgreSQL …, table application_logs").
	Where(r Route) string
	// Status is "" when the store answered the last time it was asked, else why it did not.
	Status() string
	// Close releases what Open and Sink opened: the sinks, then the connection.
	Close() error
}

var (
	registryMu sync.RWMutex
	registry   = map[string]SinkType{}
)

// RegisterSinkType makes a sink type known by its name. It panics when the name is empty or taken, or
// Open is nil: a program that registers two sinks under one name is wrong.
func RegisterSinkType(t SinkType) {
	registryMu.Lock()
	defer registryMu.Unlock()
	if t.Name == "" || t.Open == nil {
		panic("subscribers: RegisterSinkType: a sink type needs a name and Open")
	}
	if _, dup := registry[t.Name]; dup {
		panic(fmt.Sprintf("subscribers: RegisterSinkType: sink type %q registered twice", t.Name))
	}
	registry[t.Name] = t
}

// LookupSinkType returns the registered sink type of that name.
func LookupSinkType(name string) (SinkType, bool) {
	registryMu.RLock()
	defer registryMu.RUnlock()
	t, ok := registry[name]
	return t, ok
}

// SinkTypeNames returns the names of the registered sink types, sorted.
func SinkTypeNames() []string {
	registryMu.RLock()
	defer registryMu.RUnlock()
	names := make([]string, 0, len(registry))
	for n := range registry {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// SettingError is a sink type's settings error: the key within the type's section, its value and
// what is wrong. The configuration adds the section and the environment variable.
type SettingError struct {
	Key   string
	Value any
	Msg   string
}

func (e *SettingError) Error() string { return fmt.Sprintf("%s = %v: %s", e.Key, e.Value, e.Msg) }
