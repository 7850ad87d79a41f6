package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Load builds the configuration: Default(), then the YAML file at path (when path is not empty), then
// the SLUICE_* variables of environ (os.Environ() form), then Validate. Unknown YAML keys, unknown
// SLUICE_ variables and unparsable values are errors that name the key.
func Load(path string, environ []string) (Config, error) {
	c := Default()
	if path != "" {
		data, err := os.ReadFile(path)
		if err != nil {
			return c, fmt.Errorf("config: read %s: %w", path, err)
		}
		if err := c.decodeYAML(data); err != nil {
			return c, fmt.Errorf("config: %s: %w", path, err)
		}
	}
	if err := c.applyEnv(environ); err != nil {
		return c, err
	}
	if err := c.Validate(); err != nil {
		return c, err
	}
	return c, nil
}

// decodeYAML decodes a YAML document into c, strictly (an unknown key is an error): the sections of
// the registered sink types in c.Sinks into their settings, the rest into c's fields.
func (c *Config) decodeYAML(data []byte) error {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return err
	}
	if len(doc.Content) == 0 {
		return nil // an empty document
	}
	root := doc.Content[0]
	if root.Kind == yaml.MappingNode {
		kept := root.Content[:0:0]
		for i := 0; i+1 < len(root.Content); i += 2 {
			key, value := root.Content[i], root.Content[i+1]
			settings, ok := c.Sinks[key.Value]
			if !ok {
				kept = append(kept, key, value)
				continue
			}
			if err := decodeStrict(value, settings); err != nil {
				return fmt.Errorf("%s: %w", key.Value, err)
			}
		}
		root.Content = kept
	}
	return decodeStrict(root, c)
}

// decodeStrict decodes a node into v, refusing unknown keys (Node.Decode would ignore them).
func decodeStrict(n *yaml.Node, v any) error {
	data, err := yaml.Marshal(n)
	if err != nil {
		return err
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(v); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	return nil
}

// applyEnv sets every key whose SLUICE_ variable is present in environ.
func (c *Config) applyEnv(environ []string) error {
	vars := map[string]string{}
	for _, kv := range environ {
		k, v, ok := strings.Cut(kv, "=")
		if ok && strings.HasPrefix(k, "SLUICE_") {
			vars[k] = v
		}
	}
	known := map[string]bool{}
	var errs []error
	walkAll(c, func(key string, f reflect.Value) {
		name := EnvName(key)
		known[name] = true
		v, ok := vars[name]
		if !ok {
			return
		}
		if err := setValue(f, v); err != nil {
			errs = append(errs, &FieldError{Key: key, Value: strconv.Quote(v), Msg: err.Error()})
		}
	})
	for name := range vars {
		if !known[name] && !ignoredEnv[name] {
			errs = append(errs, fmt.Errorf("config: unknown environment variable %s", name))
		}
	}
	return errors.Join(errs...)
}

// ignoredEnv are SLUICE_ variables that are not configuration keys (read by the command line or tests).
var ignoredEnv = map[string]bool{
	"SLUICE_CONFIG":            true,
	"SLUICE_TEST_AZURITE":      true,
	"SLUICE_TEST_POSTGRES_DSN": true,
}

// walkAll walks c's fields and the registered sink types' sections (c.Sinks), in name order.
func walkAll(c *Config, fn func(key string, f reflect.Value)) {
	walk(reflect.ValueOf(c).Elem(), "", fn)
	names := make([]string, 0, len(c.Sinks))
	for name := range c.Sinks {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		walk(reflect.ValueOf(c.Sinks[name]).Elem(), name, fn)
	}
}

// walk calls fn for every leaf field with an env variable, with its dotted YAML key.
func walk(v reflect.Value, prefix string, fn func(key string, f reflect.Value)) {
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		sf := t.Field(i)
		if sf.Tag.Get("env") == "-" {
			continue
		}
		name, opts, _ := strings.Cut(sf.Tag.Get("yaml"), ",")
		if opts == "inline" {
			walk(v.Field(i), prefix, fn)
			continue
		}
		if name == "" || name == "-" {
			continue
		}
		key := name
		if prefix != "" {
			key = prefix + "." + name
		}
		f := v.Field(i)
		if f.Kind() == reflect.Struct && f.Type() != reflect.TypeOf(time.Duration(0)) {
			walk(f, key, fn)
			continue
		}
		fn(key, f)
	}
}

func setValue(f reflect.Value, s string) error {
	s = strings.TrimSpace(s)
	switch f.Interface().(type) {
	case time.Duration:
		d, err := time.ParseDuration(s)
		if err != nil {
			return fmt.Errorf("not a duration (e.g. 500ms, 5s, 1m): %v", err)
		}
		f.SetInt(int64(d))
		return nil
	}
	switch f.Kind() {
	case reflect.String:
		f.SetString(s)
	case reflect.Bool:
		b, err := strconv.ParseBool(s)
		if err != nil {
			return errors.New("not a boolean (true or false)")
		}
		f.SetBool(b)
	case reflect.Int, reflect.Int64:
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return errors.New("not an integer")
		}
		f.SetInt(n)
	case reflect.Float64:
		n, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return errors.New("not a number")
		}
		f.SetFloat(n)
	case reflect.Slice:
		if f.Type().Elem().Kind() != reflect.String {
			return fmt.Errorf("cannot be set from the environment (%s)", f.Type())
		}
		var list []string
		for _, item := range strings.Split(s, ",") {
			if item = strings.TrimSpace(item); item != "" {
				list = append(list, item)
			}
		}
		f.Set(reflect.ValueOf(list).Convert(f.Type()))
	default:
		return fmt.Errorf("cannot be set from the environment (%s)", f.Kind())
	}
	return nil
}

// Redacted returns a copy safe to log: each sink section's secrets masked (its Redacted method).
func (c Config) Redacted() Config {
	c.Postgres = c.Postgres.Redacted()
	c.Blob = c.Blob.Redacted()
	return c
}

// KeyValue is one configuration key, its environment variable and its value as text.
type KeyValue struct {
	Key, Env, Value string
}

// Values lists every key that has an environment variable with its value, secrets masked: for the
// start-up log line and `sluice config`.
func (c Config) Values() []KeyValue {
	r := c.Redacted()
	var out []KeyValue
	walkAll(&r, func(key string, f reflect.Value) {
		out = append(out, KeyValue{Key: key, Env: EnvName(key), Value: fmt.Sprint(f.Interface())})
	})
	return out
}
