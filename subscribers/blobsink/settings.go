package blobsink

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/sluicelog/sluice/subscribers"
)

// SinkType is the name routes give this store (`sink: blob`) and its section in the configuration.
const SinkType = "blob"

// Settings are the blob section of sluice's configuration: the archive's store, Azure Blob Storage
// when ConnectionString is set, else a local directory. This package owns their keys, defaults and
// validation; the configuration composes them. A route to the archive may set the options container
// (default Container) and prefix (a path inside the container).
type Settings struct {
	ConnectionString string        `yaml:"connection_string" secret:"true"`
	Container        string        `yaml:"container"`
	Dir              string        `yaml:"dir"`
	WriteTimeout     time.Duration `yaml:"write_timeout"`
	// GzipLevel is the archive's gzip level, 1 (fastest) to 9 (smallest).
	GzipLevel int `yaml:"gzip_level"`
	// Retention is how long the archive is kept: the hour prefixes (YYYY/MM/DD/HH/) that end before
	// now minus Retention are deleted, every hour by the running pipeline and by sluice prune. 0 (the
	// default) keeps everything: the archive is the record of every event, and for a large archive in
	// Azure a lifecycle management policy deletes by age at no cost to sluice (see the README).
	Retention time.Duration `yaml:"retention"`
}

// DefaultSettings are the embedded defaults: blobs in ./sluice-data/blobs/logs.
func DefaultSettings() Settings {
	return Settings{Container: "logs", Dir: "./sluice-data/blobs", WriteTimeout: DefaultWriteTimeout, GzipLevel: DefaultGzipLevel}
}

// Validate returns every problem of the settings, each a *subscribers.SettingError naming its key.
func (s Settings) Validate() error {
	var errs []error
	bad := func(key string, v any, msg string) {
		errs = append(errs, &subscribers.SettingError{Key: key, Value: v, Msg: msg})
	}
	if s.ConnectionString == "" && s.Dir == "" {
		bad("dir", `""`, "must be set when blob.connection_string is empty")
	}
	if cs := strings.ToLower(s.ConnectionString); cs != "" && !strings.Contains(cs, "accountname=") && !strings.Contains(cs, "blobendpoint=") {
		bad("connection_string", "<secret>", "not an Azure Storage connection string (no AccountName or BlobEndpoint)")
	}
	if err := ValidContainer(s.Container); err != nil {
		bad("container", s.Container, err.Error())
	}
	if s.WriteTimeout <= 0 {
		bad("write_timeout", s.WriteTimeout, "must be positive")
	}
	if s.GzipLevel < 1 || s.GzipLevel > 9 {
		bad("gzip_level", s.GzipLevel, "must be 1 (fastest) to 9 (smallest)")
	}
	if err := subscribers.ValidRetention(s.Retention); err != nil {
		bad("retention", s.Retention, err.Error())
	}
	return errors.Join(errs...)
}

// Redacted returns the settings safe to print: the connection string's key and signature masked.
func (s Settings) Redacted() Settings {
	if s.ConnectionString != "" {
		var parts []string
		for _, p := range strings.Split(s.ConnectionString, ";") {
			k, _, ok := strings.Cut(p, "=")
			if ok && (strings.EqualFold(k, "AccountKey") || strings.EqualFold(k, "SharedAccessSignature")) {
				p = k + "=****"
			}
			parts = append(parts, p)
		}
		s.ConnectionString = strings.Join(parts, ";")
	}
	return s
}

// ValidContainer applies Azure's container naming rules (3-63 characters: lower-case letters, digits
// and single hyphens, starting and ending with a letter or digit); the local directory store uses the
// same name as a directory, so the rules hold for both.
func ValidContainer(name string) error {
	if len(name) < 3 || len(name) > 63 {
		return errors.New("must be 3 to 63 characters")
	}
	for i, r := range name {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
		case r == '-' && i > 0 && i < len(name)-1 && name[i-1] != '-':
		default:
			return errors.New("only lower-case letters, digits and single inner hyphens are allowed")
		}
	}
	return nil
}

// routeOptions returns a route's container and prefix.
func routeOptions(s Settings, r subscribers.Route) (container, prefix string) {
	container, prefix = s.Container, r.Options["prefix"]
	if c := r.Options["container"]; c != "" {
		container = c
	}
	return container, prefix
}

func validateRoute(section any, r subscribers.Route) error {
	s, ok := section.(Settings)
	if !ok {
		return fmt.Errorf("blobsink: the %s section is a %T, not blobsink.Settings", SinkType, section)
	}
	for k := range r.Options {
		if k != "container" && k != "prefix" {
			return &subscribers.SettingError{Key: "options." + k, Value: r.Options[k], Msg: "unknown option of a blob route (want container or prefix)"}
		}
	}
	container, prefix := routeOptions(s, r)
	if err := ValidContainer(container); err != nil {
		return &subscribers.SettingError{Key: "options.container", Value: container, Msg: err.Error()}
	}
	if err := (Config{Prefix: prefix}).Validate(); err != nil {
		return &subscribers.SettingError{Key: "options.prefix", Value: prefix, Msg: err.Error()}
	}
	return nil
}

func init() {
	subscribers.RegisterSinkType(subscribers.SinkType{Name: SinkType, Open: open, ValidateRoute: validateRoute})
}

// opened is the blob sink type opened for one pipeline: one store and one sink per container and
// prefix.
type opened struct {
	settings Settings
	log      *slog.Logger
	mu       sync.Mutex
	sinks    map[string]*Sink
	closers  []func() error
	// containers are the containers the routes write (Prune prunes each), the default one included.
	containers map[string]bool
}

func open(_ context.Context, section any, log *slog.Logger) (subscribers.Opened, error) {
	s, ok := section.(Settings)
	if !ok {
		return nil, fmt.Errorf("blobsink: the %s section is a %T, not blobsink.Settings", SinkType, section)
	}
	return &opened{settings: s, log: log, sinks: map[string]*Sink{}, containers: map[string]bool{s.Container: true}}, nil
}

// Sink opens the store of the route's container (an Azure store that does not answer now is opened
// on its first use: the route's events wait in the bus meanwhile) and returns the sink of its
// container and prefix.
func (o *opened) Sink(r subscribers.Route) (subscribers.Sink, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	container, prefix := routeOptions(o.settings, r)
	key := container + "/" + prefix
	if s := o.sinks[key]; s != nil {
		return s, nil
	}
	o.containers[container] = true
	var store Store
	if o.settings.ConnectionString != "" {
		openRemote, err := remoteOpener()
		if err != nil {
			return nil, err
		}
		tctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		s, closeStore, err := (*openRemote)(tctx, o.settings.ConnectionString, container)
		cancel()
		switch {
		case err == nil:
			store = s
			o.closers = append(o.closers, closeStore)
		case !unreachable(err):
			return nil, err // a configuration error: fail at start
		default:
			o.log.Warn("Azure Blob Storage is not reachable: the archive waits in the bus (up to its bound) "+
				"and is written when it is back", "container", container, "error", err)
			ls := &lazyStore{open: func(ctx context.Context) (Store, func() error, error) {
				return (*openRemote)(ctx, o.settings.ConnectionString, container)
			}}
			store = ls
			o.closers = append(o.closers, ls.Close)
		}
	} else {
		s, err := NewDirStore(filepath.Join(o.settings.Dir, container))
		if err != nil {
			return nil, err
		}
		if removed := s.Removed(); len(removed) > 0 {
			o.log.Warn("removed the temporary files of blob writes interrupted by a crash (those writes stored nothing)",
				"dir", s.Dir(), "count", len(removed), "files", removed)
		}
		store = s
	}
	sink, err := New(store, Config{Prefix: prefix, WriteTimeout: o.settings.WriteTimeout, GzipLevel: o.settings.GzipLevel})
	if err != nil {
		return nil, err
	}
	o.sinks[key] = sink
	return sink, nil
}

func (o *opened) WriteTimeout() time.Duration { return o.settings.WriteTimeout }

// Status is "" : a store that does not answer is retried on every write, and its failures show in the
// route's breaker and metrics.
func (o *opened) Status() string { return "" }

func (o *opened) Where(r subscribers.Route) string {
	container, prefix := routeOptions(o.settings, r)
	where := "local directory " + abs(filepath.Join(o.settings.Dir, container))
	if o.settings.ConnectionString != "" {
		where = "Azure Blob container " + container
	}
	if prefix != "" {
		where += ", prefix " + prefix
	}
	return where + ", gzip NDJSON YYYY/MM/DD/HH/<batch>.ndjson.gz"
}

func abs(p string) string {
	if a, err := filepath.Abs(p); err == nil {
		return a
	}
	return p
}

// Close closes the sinks, then the stores.
func (o *opened) Close() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	var errs []error
	for _, s := range o.sinks {
		errs = append(errs, s.Close())
	}
	for _, c := range o.closers {
		errs = append(errs, c())
	}
	return errors.Join(errs...)
}

// lazyStore opens a remote store on first use: it did not answer at start. It tries again on every
// use until it succeeds.
type lazyStore struct {
	open  func(context.Context) (Store, func() error, error)
	mu    sync.Mutex
	store Store
	close func() error
}

func (l *lazyStore) get(ctx context.Context) (Store, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.store == nil {
		s, closeStore, err := l.open(ctx)
		if err != nil {
			return nil, err
		}
		l.store, l.close = s, closeStore
	}
	return l.store, nil
}

func (l *lazyStore) Put(ctx context.Context, name string, data []byte, contentType, contentEncoding string) error {
	s, err := l.get(ctx)
	if err != nil {
		return err
	}
	return s.Put(ctx, name, data, contentType, contentEncoding)
}

func (l *lazyStore) Get(ctx context.Context, name string) ([]byte, error) {
	s, err := l.get(ctx)
	if err != nil {
		return nil, err
	}
	return s.Get(ctx, name)
}

func (l *lazyStore) List(ctx context.Context, prefix string) ([]string, error) {
	s, err := l.get(ctx)
	if err != nil {
		return nil, err
	}
	return s.List(ctx, prefix)
}

func (l *lazyStore) Dirs(ctx context.Context, prefix string) ([]string, error) {
	s, err := l.pruneStore(ctx)
	if err != nil {
		return nil, err
	}
	return s.Dirs(ctx, prefix)
}

func (l *lazyStore) Objects(ctx context.Context, prefix string) ([]Object, error) {
	s, err := l.pruneStore(ctx)
	if err != nil {
		return nil, err
	}
	return s.Objects(ctx, prefix)
}

func (l *lazyStore) Delete(ctx context.Context, name string) error {
	s, err := l.pruneStore(ctx)
	if err != nil {
		return err
	}
	return s.Delete(ctx, name)
}

func (l *lazyStore) pruneStore(ctx context.Context) (PruneStore, error) {
	s, err := l.get(ctx)
	if err != nil {
		return nil, err
	}
	ps, ok := s.(PruneStore)
	if !ok {
		return nil, fmt.Errorf("blobsink: a %T cannot be pruned", s)
	}
	return ps, nil
}

func (l *lazyStore) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.close != nil {
		return l.close()
	}
	return nil
}

// remoteOpener returns the registered remote store, or an error saying how to register it.
func remoteOpener() (*RemoteOpener, error) {
	openRemote := remote.Load()
	if openRemote == nil {
		return nil, errors.New("blob.connection_string is set, but this program has no Azure store: " +
			`import _ "github.com/sluicelog/sluice/subscribers/blobsink/azurestore"`)
	}
	return openRemote, nil
}

// OpenStore opens the archive's store as the settings say, for a reader of the archive (the sink's
// routes open theirs themselves): the Azure container when ConnectionString is set, else the
// directory Dir/container. An empty container is the settings' Container. It returns what closes the
// store.
func OpenStore(ctx context.Context, s Settings, container string) (Store, func() error, error) {
	if container == "" {
		container = s.Container
	}
	if err := ValidContainer(container); err != nil {
		return nil, nil, fmt.Errorf("blobsink: container %q: %w", container, err)
	}
	if s.ConnectionString != "" {
		openRemote, err := remoteOpener()
		if err != nil {
			return nil, nil, err
		}
		return (*openRemote)(ctx, s.ConnectionString, container)
	}
	dir := filepath.Join(s.Dir, container)
	if _, err := os.Stat(dir); err != nil {
		return nil, nil, fmt.Errorf("blobsink: the archive directory: %w", err)
	}
	// Not NewDirStore: a reader must not remove the temporary files of a running sink's writes.
	return &DirStore{root: dir}, func() error { return nil }, nil
}

// RemoteOpener opens the remote store of a connection string's container, and returns what closes it.
type RemoteOpener func(ctx context.Context, connectionString, container string) (Store, func() error, error)

// remote is the remote (Azure) store, registered by package azurestore when a program imports it.
var remote atomic.Pointer[RemoteOpener]

// RegisterRemote makes blob.connection_string open stores with open. Package azurestore calls it: the
// Azure SDK is linked only into programs that import that package.
func RegisterRemote(open RemoteOpener) { remote.Store(&open) }

// unreachable reports whether err says that a server did not answer (refused, reset, timed out),
// rather than that it refused what it was asked.
func unreachable(err error) bool {
	var netErr net.Error
	return errors.As(err, &netErr) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, syscall.ECONNREFUSED)
}
