package publishers

import (
	"fmt"
	"strconv"
	"unicode/utf8"
)

// Limits bounds every captured field that a client or the application controls, so that no request
// and no log record can make an event (and the rows and blobs made of it) larger than its owner
// chose. A cut string keeps its first bytes and ends with a marker giving its original size
// ("…[cut from 960000 bytes]"); headers over the count or byte limit are left out in name order and
// counted in the message's headers_dropped. Bodies have their own limits (Config.RequestBodyLimit,
// ResponseBodyLimit); the whole event's size is bounded where it is encoded (capture.max_event_bytes).
// Zero fields take the defaults; the yaml keys are those of the capture section.
type Limits struct {
	// MaxHeaders bounds the header lines kept per request and per response. Default 64.
	MaxHeaders int `yaml:"max_headers"`
	// MaxHeaderValueBytes bounds each header value. Default 4 KiB.
	MaxHeaderValueBytes int `yaml:"max_header_value_bytes"`
	// MaxHeaderBytes bounds the names and values of the headers kept per request and per response.
	// Default 16 KiB.
	MaxHeaderBytes int `yaml:"max_header_bytes"`
	// MaxQueryBytes bounds the query string. Default 8 KiB.
	MaxQueryBytes int `yaml:"max_query_bytes"`
	// MaxPathBytes bounds the URL path. Default 2 KiB.
	MaxPathBytes int `yaml:"max_path_bytes"`
	// MaxUserAgentBytes bounds the user agent. Default 1 KiB.
	MaxUserAgentBytes int `yaml:"max_user_agent_bytes"`
	// MaxErrorBytes bounds an HTTP event's error. Default 8 KiB.
	MaxErrorBytes int `yaml:"max_error_bytes"`
	// MaxStackBytes bounds a panic's stack. Default 8 KiB.
	MaxStackBytes int `yaml:"max_stack_bytes"`
	// MaxMessageBytes bounds an application log record's message. Default 8 KiB.
	MaxMessageBytes int `yaml:"max_message_bytes"`
	// MaxAttrs bounds the attributes of an application log record, at every depth of groups; the
	// rest are left out and counted in the attribute sluice_attrs_dropped. Default 64.
	MaxAttrs int `yaml:"max_attrs"`
	// MaxAttrValueBytes bounds each attribute value (a string, or the JSON of any other value).
	// Default 8 KiB.
	MaxAttrValueBytes int `yaml:"max_attr_value_bytes"`
	// MaxAttrsBytes bounds the keys and values of all of a record's attributes. Default 32 KiB.
	MaxAttrsBytes int `yaml:"max_attrs_bytes"`
}

// DefaultLimits returns the default Limits.
func DefaultLimits() Limits {
	return Limits{
		MaxHeaders: 64, MaxHeaderValueBytes: 4 << 10, MaxHeaderBytes: 16 << 10, MaxQueryBytes: 8 << 10,
		MaxPathBytes: 2 << 10, MaxUserAgentBytes: 1 << 10, MaxErrorBytes: 8 << 10, MaxStackBytes: 8 << 10,
		MaxMessageBytes: 8 << 10, MaxAttrs: 64, MaxAttrValueBytes: 8 << 10, MaxAttrsBytes: 32 << 10,
	}
}

func (l *Limits) fields() []struct {
	key string
	v   *int
} {
	return []struct {
		key string
		v   *int
	}{
		{"max_headers", &l.MaxHeaders}, {"max_header_value_bytes", &l.MaxHeaderValueBytes},
		{"max_header_bytes", &l.MaxHeaderBytes}, {"max_query_bytes", &l.MaxQueryBytes},
		{"max_path_bytes", &l.MaxPathBytes}, {"max_user_agent_bytes", &l.MaxUserAgentBytes},
		{"max_error_bytes", &l.MaxErrorBytes}, {"max_stack_bytes", &l.MaxStackBytes},
		{"max_message_bytes", &l.MaxMessageBytes}, {"max_attrs", &l.MaxAttrs},
		{"max_attr_value_bytes", &l.MaxAttrValueBytes}, {"max_attrs_bytes", &l.MaxAttrsBytes},
	}
}

// WithDefaults returns l with its zero fields set to the defaults.
func (l Limits) WithDefaults() Limits {
	d := DefaultLimits()
	df := d.fields()
	for i, f := range l.fields() {
		if *f.v == 0 {
			*f.v = *df[i].v
		}
	}
	return l
}

// Validate names the first negative limit by its yaml key.
func (l Limits) Validate() error {
	for _, f := range l.fields() {
		if *f.v < 0 {
			return fmt.Errorf("%s (%d) must not be negative (0 means the default)", f.key, *f.v)
		}
	}
	return nil
}

// cut returns s when it is at most limit bytes long, else its first bytes (at a rune boundary) and a
// marker with the original size.
func cut(s string, limit int) string {
	if len(s) <= limit {
		return s
	}
	k := limit
	for k > 0 && !utf8.RuneStart(s[k]) {
		k--
	}
	return s[:k] + "…[cut from " + strconv.Itoa(len(s)) + " bytes]"
}
