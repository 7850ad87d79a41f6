package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"reflect"
	"regexp"
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
	fileLines := map[string]int{}
	if path != "" {
		data, err := os.ReadFile(path)
		if err != nil {
			return c, fmt.Errorf("config: read %s: %w", path, err)
		}
		if err := c.decodeYAML(path, data); err != nil {
			return c, err
		}
		var doc yaml.Node
		if yaml.Unmarshal(data, &doc) == nil {
			keyLines(&doc, "", fileLines)
		}
	}
	fromEnv, err := c.applyEnv(environ)
	if err != nil {
		return c, err
	}
	if err := c.Validate(); err != nil {
		return c, withSources(err, path, fileLines, fromEnv)
	}
	return c, nil
}

// withSources says in each FieldError of err where its value came from: the environment variable, or
// the file and line.
func withSources(err error, path string, fileLines map[string]int, fromEnv map[string]bool) error {
	if err == nil {
		return nil
	}
	var errs []error
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs = j.Unwrap()
	} else {
		errs = []error{err}
	}
	for _, e := range errs {
		var fe *FieldError
		if !errors.As(e, &fe) {
			continue
		}
		key := routeName.ReplaceAllString(fe.Key, "") // routes[0](pg).batch -> routes[0].batch
		switch {
		case fromEnv[key]:
			fe.Source = EnvName(key)
		case fileLines[key] > 0:
			fe.Source = fmt.Sprintf("%s:%d", path, fileLines[key])
		}
	}
	return errors.Join(errs...)
}

var routeName = regexp.MustCompile(`\([^)]*\)`)

// keyLines records the line of every key of a YAML document by its dotted path.
func keyLines(n *yaml.Node, path string, lines map[string]int) {
	switch n.Kind {
	case yaml.DocumentNode:
		for _, c := range n.Content {
			keyLines(c, path, lines)
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := joinKey(path, n.Content[i].Value)
			lines[k] = n.Content[i].Line
			keyLines(n.Content[i+1], k, lines)
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			keyLines(c, fmt.Sprintf("%s[%d]", path, i), lines)
		}
	}
}

// decodeYAML decodes the YAML file at path (its bytes are data) into c, strictly: the sections of the
// registered sink types in c.Sinks into their settings, the rest into c's fields. Its errors name the
// file and line, the key path and what was wrong, one per mistake (yamlErrors).
func (c *Config) decodeYAML(path string, data []byte) error {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return fmt.Errorf("config: %s: %w", path, err)
	}
	if len(doc.Content) == 0 {
		return nil // an empty document
	}
	root := doc.Content[0]
	var errs []error
	sections := map[string]bool{}
	for name, settings := range c.Sinks {
		value := lookupNode(root, strings.Split(name, "."))
		if value == nil {
			continue
		}
		sections[name] = true
		if err := decodeStrict(value, settings); err != nil {
			errs = append(errs, yamlErrors(path, value, err, name, -1)...)
		}
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil && !errors.Is(err, io.EOF) {
		for _, e := range yamlErrors(path, root, err, "", 0) {
			var ue *unknownKey
			if errors.As(e, &ue) && sections[ue.path] {
				continue // a registered sink type's section, decoded above
			}
			errs = append(errs, e)
		}
	}
	return errors.Join(errs...)
}

// lookupNode returns the value at the key path under the mapping node n, or nil.
func lookupNode(n *yaml.Node, path []string) *yaml.Node {
	for _, key := range path {
		if n == nil || n.Kind != yaml.MappingNode {
			return nil
		}
		var next *yaml.Node
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == key {
				next = n.Content[i+1]
			}
		}
		n = next
	}
	return n
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

// unknownKey is the error of a key that no setting has.
type unknownKey struct {
	file string
	line int
	path string // the dotted key path, routes[0].batch.max_wait style
	key  string // the key itself
	hint string
}

func (e *unknownKey) Error() string {
	return fmt.Sprintf("config: %s:%d: %s: unknown key%s", e.file, e.line, e.path, e.hint)
}

var (
	fieldNotFound = regexp.MustCompile(`^line (\d+): field (\S+) not found in type (\S+)$`)
	cannotDecode  = regexp.MustCompile("^line (\\d+): cannot unmarshal !!(\\w+) `(.*)` into (\\S+)$")
	lineMessage   = regexp.MustCompile(`^line (\d+): (.*)$`)
)

// yamlErrors turns yaml.v3's errors into one error per mistake, each with the file and line, the key
// path and what was wrong: an unknown key with the nearest known one, a value that is not a duration,
// a number or a boolean with an example. Lines of a section decoded apart (node, under section)
// are shifted by offset.
func yamlErrors(file string, node *yaml.Node, err error, section string, offset int) []error {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return []error{fmt.Errorf("config: %s: %w", file, err)}
	}
	var out []error
	for _, msg := range te.Errors {
		line := 0
		if m := lineMessage.FindStringSubmatch(msg); m != nil {
			line = atoi(m[1])
		}
		if offset < 0 {
			line = -1 // a section decoded apart: its lines are not the file's; find the key by name
		}
		if m := fieldNotFound.FindStringSubmatch(msg); m != nil {
			parent, at := keyPathAt(node, line, func(k, _ *yaml.Node) bool { return k.Value == m[2] })
			parent = joinKey(section, parent)
			out = append(out, &unknownKey{file: file, line: at, path: joinKey(parent, m[2]), key: m[2], hint: suggest(parent, m[2])})
			continue
		}
		if m := cannotDecode.FindStringSubmatch(msg); m != nil {
			parent, at := keyPathAt(node, line, func(_, v *yaml.Node) bool { return v.Value == m[3] })
			what := "cannot be read as " + m[4]
			switch m[4] {
			case "time.Duration":
				what = "not a duration (e.g. 500ms, 5s, 1m)"
			case "int", "int64", "float64":
				what = "not a number"
			case "bool":
				what = "not a boolean (true or false)"
			}
			out = append(out, fmt.Errorf("config: %s:%d: %s = %q: %s", file, at, joinKey(section, parent), m[3], what))
			continue
		}
		if m := lineMessage.FindStringSubmatch(msg); m != nil && offset >= 0 {
			out = append(out, fmt.Errorf("config: %s:%d: %s", file, atoi(m[1]), m[2]))
			continue
		}
		out = append(out, fmt.Errorf("config: %s: %s", file, msg))
	}
	return out
}

func atoi(s string) int { n, _ := strconv.Atoi(s); return n }

func joinKey(a, b string) string {
	switch {
	case a == "":
		return b
	case b == "":
		return a
	case strings.HasPrefix(b, "["):
		return a + b
	}
	return a + "." + b
}

// keyPathAt finds, on line (any line when line < 0), the first mapping member for which match is true,
// and returns the dotted path of its key (for an unknown key: of the mapping that holds it, as match
// then names the key) and the key's line.
func keyPathAt(n *yaml.Node, line int, match func(k, v *yaml.Node) bool) (string, int) {
	var find func(n *yaml.Node, path string) (string, int, bool)
	find = func(n *yaml.Node, path string) (string, int, bool) {
		switch n.Kind {
		case yaml.DocumentNode:
			for _, c := range n.Content {
				if p, l, ok := find(c, path); ok {
					return p, l, true
				}
			}
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				k, v := n.Content[i], n.Content[i+1]
				if (line < 0 || k.Line == line || v.Line == line) && match(k, v) {
					if v.Kind == yaml.ScalarNode && match(&yaml.Node{}, v) {
						return joinKey(path, k.Value), k.Line, true // a value: its key's path
					}
					return path, k.Line, true // a key: the path of the mapping that holds it
				}
				if p, l, ok := find(v, joinKey(path, k.Value)); ok {
					return p, l, true
				}
			}
		case yaml.SequenceNode:
			for i, c := range n.Content {
				if p, l, ok := find(c, fmt.Sprintf("%s[%d]", path, i)); ok {
					return p, l, true
				}
			}
		}
		return "", 0, false
	}
	p, l, _ := find(n, "")
	return p, l
}

// suggest returns " (did you mean X?)" for the known key under parent nearest to key, or "".
func suggest(parent, key string) string {
	prefix := parent
	if i := strings.LastIndex(prefix, "]"); i >= 0 { // routes[0].batch -> routes.batch
		prefix = regexp.MustCompile(`\[\d+\]`).ReplaceAllString(prefix, "")
	}
	var known []string
	d := Default()
	walkAll(&d, func(k string, _ reflect.Value) { known = append(known, k) })
	for _, k := range routeKeys() {
		known = append(known, k)
	}
	best, bestD := "", 4
	for _, k := range known {
		p, leaf := "", k
		if i := strings.LastIndex(k, "."); i >= 0 {
			p, leaf = k[:i], k[i+1:]
		}
		if p != prefix {
			continue
		}
		if dist := editDistance(key, leaf); dist < bestD {
			best, bestD = leaf, dist
		}
	}
	if best == "" {
		return ""
	}
	return " (did you mean " + best + "?)"
}

// routeKeys lists a route's keys, as routes.name, routes.batch.max_wait, ….
func routeKeys() []string {
	var out []string
	var r Route
	walk(reflect.ValueOf(&r).Elem(), "routes", func(k string, _ reflect.Value) { out = append(out, k) })
	return append(out, "routes.levels", "routes.kinds", "routes.paths", "routes.options")
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// applyEnv sets every key whose SLUICE_ variable is present in environ, and returns the keys it set.
func (c *Config) applyEnv(environ []string) (map[string]bool, error) {
	vars := map[string]string{}
	for _, kv := range environ {
		k, v, ok := strings.Cut(kv, "=")
		if ok && strings.HasPrefix(k, "SLUICE_") {
			vars[k] = v
		}
	}
	known, set := map[string]bool{}, map[string]bool{}
	var errs []error
	walkAll(c, func(key string, f reflect.Value) {
		name := EnvName(key)
		known[name] = true
		v, ok := vars[name]
		if !ok {
			return
		}
		set[key] = true
		if err := setValue(f, v); err != nil {
			errs = append(errs, &FieldError{Key: key, Value: strconv.Quote(v), Msg: err.Error()})
		}
	})
	for name := range vars {
		if !known[name] && !ignoredEnv[name] {
			errs = append(errs, fmt.Errorf("config: unknown environment variable %s", name))
		}
	}
	return set, withSources(errors.Join(errs...), "", nil, set)
}

// ignoredEnv are SLUICE_ variables that are not configuration keys (read by the command line or tests).
var ignoredEnv = map[string]bool{
	"SLUICE_CONFIG":            true,
	"SLUICE_TEST_AZURITE":      true,
	"SLUICE_TEST_POSTGRES_DSN": true,
	"SLUICE_AZURITE_STATE":     true, // scripts/azurite.sh's state directory
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
	c.Bus.URL = redactURL(c.Bus.URL)
	return c
}

// passwordSetting is a password=… setting of a key=value connection string.
var passwordSetting = regexp.MustCompile(`(?i)(password\s*=\s*)('[^']*'|\S+)`)

// redactURL masks the password of a URL (amqp://user:xxxxx@host) or of a key=value connection
// string (password=xxxxx).
func redactURL(s string) string {
	if u, err := url.Parse(s); err == nil && u.User != nil {
		if _, ok := u.User.Password(); ok {
			return u.Redacted()
		}
	}
	return passwordSetting.ReplaceAllString(s, "${1}xxxxx")
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
