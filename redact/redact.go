// Package redact owns sluice's one redaction policy: which names are secret (header names, query
// parameters, body keys, log attribute keys), which values look secret wherever they appear (bearer
// and basic credentials, JWTs, card numbers, cloud access keys, private keys, passwords in URLs), and
// how each channel is rewritten: header values, query strings in every common syntax, free text
// (key=value, "key": value, key: value, XML elements), and slog records. The Echo middleware, the slog
// handler and sluice's own logger all apply the same compiled Redactor, so that a secret hidden on one
// channel is hidden on every other.
//
// Names are matched after normalisation: ASCII case folded and the separators - _ . space [ ] : / $ @
// dropped, so that "X-Api-Key", "api_key", "apiKey" and "user[api.key]" are one name. A name is secret
// when its normal form contains one of Keys (substrings such as "password", "token", "auth"), or when
// one of its words (split at separators and camelCase, trailing digits dropped) is one of Words (short
// names such as "pin", "otp", "cvv"), unless its normal form is in Keep.
package redact

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"unicode/utf8"
)

// DefaultReplacement is what a redacted value becomes.
const DefaultReplacement = "[REDACTED]"

// DefaultKeys returns the default substrings of secret names, in normal form. The list follows
// Sentry's default data scrubbing and the OWASP Logging Cheat Sheet (passwords, session identifiers,
// access tokens, keys, connection strings, payment card data).
func DefaultKeys() []string {
	return []string{
		"password", "passwd", "passphrase", "passcode", "pwd", "secret", "token", "apikey", "auth",
		"session", "sessid", "cookie", "credential", "private", "signature", "csrf", "xsrf", "bearer",
		"jwt", "accesskey", "accountkey", "encryptionkey", "signingkey", "connectionstring",
		"creditcard", "cardnumber", "ccnumber", "cvv", "cvc", "iban", "ssn",
	}
}

// DefaultWords returns the default short secret names, matched as whole words of a name.
func DefaultWords() []string {
	return []string{"pin", "otp", "totp", "hotp", "mfa", "cvn", "sig", "sid", "dsn", "pass", "pw", "pan"}
}

// BodyMode says what becomes of a body that cannot be parsed (malformed or cut JSON, XML, NDJSON,
// plain text).
type BodyMode string

// The body modes.
const (
	// BodyRedact keeps the body with the values of secret names (in every shape the text scanner
	// knows) and the secret-looking values replaced. The default.
	BodyRedact BodyMode = "redact"
	// BodyOmit keeps only the body's size and content type.
	BodyOmit BodyMode = "omit"
)

// Policy is the redaction policy. The zero value is the default policy. For Keys and Words, nil means
// the default list and an empty, non-nil list means none.
type Policy struct {
	// Keys are substrings of secret names, matched against normal forms. Default: DefaultKeys.
	Keys []string `yaml:"keys"`
	// ExtraKeys are added to Keys (to extend the defaults without repeating them).
	ExtraKeys []string `yaml:"extra_keys"`
	// Words are secret words of names. Default: DefaultWords.
	Words []string `yaml:"words"`
	// Keep lists names (any form: they are normalised) that are never redacted even though they
	// match, for false positives such as "author".
	Keep []string `yaml:"keep"`
	// Headers lists header names whose values are redacted whatever Keys says.
	Headers []string `yaml:"headers"`
	// AllowHeaders, when not empty, switches headers to allow-list mode: only the headers listed
	// keep their values (still scanned for secret-looking values), every other header's values are
	// replaced.
	AllowHeaders []string `yaml:"allow_headers"`
	// AllowBodyKeys, when not empty, switches bodies to allow-list mode: in JSON and form bodies only
	// the values of the keys listed are kept (still scanned), every other value is replaced; bodies
	// that cannot be parsed are left out.
	AllowBodyKeys []string `yaml:"allow_body_keys"`
	// UnparsedBodies says what becomes of a body that cannot be parsed. Default: BodyRedact.
	UnparsedBodies BodyMode `yaml:"unparsed_bodies"`
	// NoValueDetectors turns off the detection of secret-looking values in free text.
	NoValueDetectors bool `yaml:"no_value_detectors"`
	// Replacement is what a value becomes. Default: DefaultReplacement.
	Replacement string `yaml:"replacement"`
	// Path, when set, rewrites every captured URL path (the path itself is never redacted: use this
	// hook for ids or tokens in paths).
	Path func(path string) string `yaml:"-"`
}

// Validate reports the first problem of the policy, naming its key.
func (p Policy) Validate() error {
	_, err := p.Compile()
	return err
}

// Redactor is a compiled Policy. Its methods are safe for concurrent use. A nil *Redactor redacts
// nothing.
type Redactor struct {
	subs      [256][][]byte        // by first byte
	pairs     [1 << 16 / 64]uint64 // the first two bytes of each of subs
	words     map[string]struct{}
	wordLens  uint64 // bit n: a word n bytes long
	wordFirst [256]bool
	keep      map[string]struct{}
	headers   map[string]struct{} // normal forms
	allowHdr  map[string]struct{} // normal forms; nil: deny-list mode
	allowBody map[string]struct{} // normal forms; nil: deny-list mode
	omit      bool
	detect    bool

	headerMemo  sync.Map // header name -> bool (Header's decision)
	headerMemoN atomic.Int64
	repl        string
	replJSON    string
	path        func(string) string
}

// Default is the default policy, compiled.
var Default = func() *Redactor {
	r, err := Policy{}.Compile()
	if err != nil {
		panic(err)
	}
	return r
}()

// Compile checks the policy and compiles it.
func (p Policy) Compile() (*Redactor, error) {
	r := &Redactor{repl: p.Replacement, detect: !p.NoValueDetectors, path: p.Path}
	if r.repl == "" {
		r.repl = DefaultReplacement
	}
	if !utf8.ValidString(r.repl) || strings.IndexByte(r.repl, 0) >= 0 {
		return nil, fmt.Errorf("redaction.replacement (%q) must be valid UTF-8 without NUL", r.repl)
	}
	r.replJSON = quoteJSON(r.repl)
	switch p.UnparsedBodies {
	case "", BodyRedact:
	case BodyOmit:
		r.omit = true
	default:
		return nil, fmt.Errorf("redaction.unparsed_bodies (%q) must be %q or %q", p.UnparsedBodies, BodyRedact, BodyOmit)
	}
	keys := p.Keys
	if keys == nil {
		keys = DefaultKeys()
	}
	for _, list := range [][]string{keys, p.ExtraKeys} {
		for _, k := range list {
			n := normal(k)
			if len(n) < 2 {
				return nil, fmt.Errorf("redaction.keys: %q is shorter than 2 letters once normalised (use words for short names)", k)
			}
			r.subs[n[0]] = append(r.subs[n[0]], []byte(n))
			pair := uint16(n[0])<<8 | uint16(n[1])
			r.pairs[pair/64] |= 1 << (pair % 64)
		}
	}
	words := p.Words
	if words == nil {
		words = DefaultWords()
	}
	r.words = make(map[string]struct{}, len(words))
	for _, w := range words {
		n := normal(w)
		if n == "" {
			return nil, errors.New("redaction.words holds an empty word")
		}
		r.words[n] = struct{}{}
		r.wordLens |= 1 << min(len(n), 63)
		r.wordFirst[n[0]] = true
	}
	var err error
	if r.keep, err = nameSet("redaction.keep", p.Keep); err != nil {
		return nil, err
	}
	if r.headers, err = nameSet("redaction.headers", p.Headers); err != nil {
		return nil, err
	}
	if len(p.AllowHeaders) > 0 {
		if r.allowHdr, err = nameSet("redaction.allow_headers", p.AllowHeaders); err != nil {
			return nil, err
		}
	}
	if len(p.AllowBodyKeys) > 0 {
		if r.allowBody, err = nameSet("redaction.allow_body_keys", p.AllowBodyKeys); err != nil {
			return nil, err
		}
	}
	return r, nil
}

func nameSet(key string, names []string) (map[string]struct{}, error) {
	m := make(map[string]struct{}, len(names))
	for _, n := range names {
		nn := normal(n)
		if nn == "" {
			return nil, fmt.Errorf("%s holds an empty name (%q)", key, n)
		}
		m[nn] = struct{}{}
	}
	return m, nil
}

// Replacement returns what a redacted value becomes.
func (r *Redactor) Replacement() string {
	if r == nil {
		return DefaultReplacement
	}
	return r.repl
}

// ReplacementJSON returns Replacement as a JSON string.
func (r *Redactor) ReplacementJSON() string {
	if r == nil {
		return quoteJSON(DefaultReplacement)
	}
	return r.replJSON
}

// OmitsUnparsed reports whether bodies that cannot be parsed are left out.
func (r *Redactor) OmitsUnparsed() bool { return r != nil && (r.omit || r.allowBody != nil) }

// Path applies the policy's path hook.
func (r *Redactor) Path(p string) string {
	if r == nil || r.path == nil {
		return p
	}
	return r.path(p)
}

// IsSeparator reports whether c is dropped when a name is normalised.
func isSeparator(c byte) bool {
	switch c {
	case '-', '_', '.', ' ', '[', ']', ':', '/', '$', '@', '\t':
		return true
	}
	return false
}

// normal returns the normal form of a name.
func normal(name string) string {
	var b strings.Builder
	for _, c := range strings.ToLower(name) {
		if c < utf8.RuneSelf && isSeparator(byte(c)) {
			continue
		}
		b.WriteRune(c)
	}
	return b.String()
}

// Key reports whether a name (a header, query parameter, body key or attribute key) is secret.
func (r *Redactor) Key(name string) bool { return matchName(r, name) }

// KeyBytes is Key for a name in a byte slice.
func (r *Redactor) KeyBytes(name []byte) bool { return matchName(r, name) }

// Header reports whether the values of a header are replaced as a whole. Its decisions are
// remembered for the first maxHeaderMemo header names (those a service sees again and again); a
// name after that is decided each time, so that a client sending endless new names costs no memory.
func (r *Redactor) Header(name string) bool {
	if r == nil {
		return false
	}
	if v, ok := r.headerMemo.Load(name); ok {
		return v.(bool)
	}
	var secret bool
	if r.allowHdr != nil {
		secret = !inSet(r.allowHdr, name)
	} else {
		secret = matchName(r, name) || (len(r.headers) > 0 && inSet(r.headers, name))
	}
	if r.headerMemoN.Add(1) <= maxHeaderMemo {
		r.headerMemo.Store(strings.Clone(name), secret)
	}
	return secret
}

// maxHeaderMemo bounds the header names whose decisions a Redactor remembers.
const maxHeaderMemo = 1024

// AllowsBodyKey reports, in allow-list mode for bodies, whether a body key keeps its value; it is
// false for every key in deny-list mode (where Key decides).
func (r *Redactor) allowsBodyKey(name []byte) bool { return inSet(r.allowBody, name) }

// BodyAllowList reports whether bodies are in allow-list mode.
func (r *Redactor) BodyAllowList() bool { return r != nil && r.allowBody != nil }

// BodyKey reports whether the value of a body key (JSON member, form field) is replaced: in deny-list
// mode when the key is secret, in allow-list mode when it is not allowed.
func (r *Redactor) BodyKey(name []byte) bool {
	if r == nil {
		return false
	}
	if r.allowBody != nil {
		return !r.allowsBodyKey(name)
	}
	return matchName(r, name)
}

func inSet[T string | []byte](set map[string]struct{}, name T) bool {
	var buf [128]byte
	n, ok := normalInto(buf[:], name)
	if !ok {
		_, in := set[normal(string(name))]
		return in
	}
	_, in := set[string(n)]
	return in
}

// normalInto writes the normal form of an ASCII name into buf; ok is false when the name is not ASCII
// or too long for buf.
func normalInto[T string | []byte](buf []byte, name T) (n []byte, ok bool) {
	k := 0
	for i := 0; i < len(name); i++ {
		c := name[i]
		if c >= utf8.RuneSelf {
			return nil, false
		}
		if isSeparator(c) {
			continue
		}
		if k == len(buf) {
			return nil, false
		}
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		buf[k] = c
		k++
	}
	return buf[:k], true
}

func matchName[T string | []byte](r *Redactor, name T) bool {
	if r == nil || len(name) == 0 {
		return false
	}
	var buf [128]byte
	n, ok := normalInto(buf[:], name)
	if !ok {
		n = []byte(normal(string(name)))
	}
	if len(r.keep) > 0 {
		if _, kept := r.keep[string(n)]; kept {
			return false
		}
	}
	for i := 0; i+1 < len(n); i++ {
		pair := uint16(n[i])<<8 | uint16(n[i+1])
		if r.pairs[pair/64]&(1<<(pair%64)) == 0 {
			continue
		}
		for _, s := range r.subs[n[i]] {
			if len(n)-i >= len(s) && string(n[i:i+len(s)]) == string(s) {
				return true
			}
		}
	}
	return len(r.words) > 0 && hasWord(r, name)
}

// hasWord reports whether one of the words of name (split at non-alphanumeric bytes and where a lower
// case letter or digit is followed by an upper case one; lower-cased; trailing digits dropped) is in
// words.
func hasWord[T string | []byte](r *Redactor, name T) bool {
	var buf [64]byte
	k := 0
	check := func() bool {
		w := buf[:k]
		k = 0
		for len(w) > 0 && w[len(w)-1] >= '0' && w[len(w)-1] <= '9' {
			w = w[:len(w)-1]
		}
		if len(w) == 0 || r.wordLens&(1<<min(len(w), 63)) == 0 || !r.wordFirst[w[0]] {
			return false
		}
		_, in := r.words[string(w)]
		return in
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		lower, upper, digit := 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9'
		if !lower && !upper && !digit {
			if k > 0 && check() {
				return true
			}
			k = 0
			continue
		}
		if upper && i > 0 && k > 0 {
			if p := name[i-1]; ('a' <= p && p <= 'z') || ('0' <= p && p <= '9') {
				if check() {
					return true
				}
			}
		}
		if k == len(buf) {
			k = 0 // a word this long is none of the short words: start again at its end
			for i+1 < len(name) && isAlnum(name[i+1]) {
				i++
			}
			continue
		}
		if upper {
			c += 'a' - 'A'
		}
		buf[k] = c
		k++
	}
	return k > 0 && check()
}

func quoteJSON(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r < 0x20:
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}
