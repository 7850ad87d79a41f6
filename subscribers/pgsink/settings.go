package pgsink

import (
	"errors"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/sluicelog/sluice/subscribers"
)

// SinkType is the name routes give this store (`sink: postgres`) and its section in the configuration.
const SinkType = "postgres"

// Settings are the postgres section of sluice's configuration: the connection of every route to
// PostgreSQL. This package owns their keys, defaults and validation; the configuration composes them.
type Settings struct {
	// Enabled turns the PostgreSQL sink on; routes to "postgres" are refused when it is off.
	Enabled bool `yaml:"enabled"`
	// DSN is a libpq connection string or URL.
	DSN string `yaml:"dsn" secret:"true"`
	// Migrate applies pending schema migrations at start (and before the first write, when
	// PostgreSQL was down at start).
	Migrate bool `yaml:"migrate"`
	// MaxConns bounds the connection pool.
	MaxConns int `yaml:"max_conns"`
	// WriteTimeout bounds one batch write.
	WriteTimeout time.Duration `yaml:"write_timeout"`
	// Retention is how long events are kept: the day partitions of application_logs that end before
	// now minus Retention are dropped whole (and dead letters that failed before it deleted), every
	// hour by the running pipeline and by sluice prune. 0 keeps everything.
	Retention time.Duration `yaml:"retention"`
}

// DefaultRetention is postgres.retention's default: 30 days of warnings and errors to query.
const DefaultRetention = 30 * 24 * time.Hour

// DefaultSettings are the embedded defaults: the local PostgreSQL of a development machine.
func DefaultSettings() Settings {
	return Settings{
		Enabled:      true,
		DSN:          "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable",
		Migrate:      true,
		MaxConns:     4,
		WriteTimeout: DefaultWriteTimeout,
		Retention:    DefaultRetention,
	}
}

// Validate returns every problem of the settings, each a *subscribers.SettingError naming its key
// (within the section). Settings that are not enabled are not checked.
func (s Settings) Validate() error {
	if !s.Enabled {
		return nil
	}
	var errs []error
	bad := func(key string, v any, msg string) {
		errs = append(errs, &subscribers.SettingError{Key: key, Value: v, Msg: msg})
	}
	if s.DSN == "" {
		bad("dsn", `""`, "must be set when postgres.enabled is true")
	} else if _, err := pgconn.ParseConfig(s.DSN); err != nil {
		bad("dsn", MaskDSN(s.DSN), "malformed: "+innermost(err).Error())
	}
	if s.MaxConns <= 0 {
		bad("max_conns", s.MaxConns, "must be positive")
	}
	if s.WriteTimeout <= 0 {
		bad("write_timeout", s.WriteTimeout, "must be positive")
	}
	if err := subscribers.ValidRetention(s.Retention); err != nil {
		bad("retention", s.Retention, err.Error())
	}
	return errors.Join(errs...)
}

// IsEnabled reports whether routes may name this sink.
func (s Settings) IsEnabled() bool { return s.Enabled }

// Redacted returns the settings safe to print: the DSN's password masked.
func (s Settings) Redacted() Settings {
	s.DSN = MaskDSN(s.DSN)
	return s
}

// MaskDSN masks the password of a URL DSN (postgres://user:****@host), and hides a key/value DSN
// that holds one.
func MaskDSN(dsn string) string {
	if i := strings.Index(dsn, "://"); i >= 0 {
		rest := dsn[i+3:]
		if at := strings.LastIndex(rest, "@"); at >= 0 {
			cred := rest[:at]
			if c := strings.Index(cred, ":"); c >= 0 {
				return dsn[:i+3] + cred[:c] + ":****" + rest[at:]
			}
		}
		return dsn
	}
	if strings.Contains(dsn, "password=") {
		return "<dsn with password>"
	}
	return dsn
}

func innermost(err error) error {
	for {
		u := errors.Unwrap(err)
		if u == nil {
			return err
		}
		err = u
	}
}
