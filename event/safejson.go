package event

import (
	"math/bits"
	"strconv"
	"unicode/utf8"
)

// The one JSON scanner of sluice. It walks a document once, validates it as encoding/json does, and
// in the same pass makes it storable (sluice's one rule for stored text, as SafeString applies it to Go
// strings, here applied to every JSON string and key): PostgreSQL's jsonb refuses the escape \u0000,
// unpaired UTF-16 surrogate escapes and invalid UTF-8, and numbers its numeric type cannot hold. It
// serves three callers: SafeJSON (the publishers' body redaction, through a JSONRewriter, and Decode
// for events that come from elsewhere), and the event encoder, which also drops whitespace and escapes
// as encoding/json does when it writes a json.RawMessage.

// MaxJSONDepth is the deepest nesting of objects and arrays that SafeJSON accepts (and that the
// encoder's fast path follows in a body or the attributes); a deeper document is refused as invalid.
// It bounds the scanner's recursion on the request path; PostgreSQL 15's jsonb takes 10,000 levels
// with its default max_stack_depth, so what SafeJSON accepts, nested in an event, PostgreSQL takes.
const MaxJSONDepth = 1000

// decodeDepth is encoding/json's own limit, which Decode and the encoder's rare path keep: what
// encoding/json reads or writes, up to that depth, is made storable rather than refused.
const decodeDepth = 10000

// Numbers that PostgreSQL's numeric (behind jsonb) may refuse ("value overflows numeric format", e.g.
// 1e1000000 or 1e-20000) are kept as JSON strings of their text: more than maxNumberDigits digits, or
// an exponent beyond ±maxExponent.
const (
	maxNumberDigits = 1000
	maxExponent     = 1000
)

// escapedReplacement is U+FFFD as a JSON escape: what invalid UTF-8, \u0000 and unpaired surrogate
// escapes become (encoding/json writes invalid UTF-8 so too).
const escapedReplacement = `\ufffd`

// A JSONRewriter changes a document while SafeJSON walks it: the publishers' redaction is one
// (*redact.Redactor). It sees the content of keys and strings as JSON writes it (between the quotes,
// escapes as they are), already storable, and nothing inside a value it replaced.
type JSONRewriter interface {
	// JSONKey is asked about each object key: replace=true replaces the member's value as a whole with
	// value (JSON text; the old value is still validated). Its answer must depend on the key alone:
	// SafeJSON remembers its answers for the last few keys (the keys of an array of objects repeat).
	JSONKey(key []byte) (value string, replace bool)
	// JSONString is given each key and each string value, and returns the content to write instead
	// (escaped JSON text, storable) and true, or false to keep it.
	JSONString(content []byte) ([]byte, bool)
}

// A JSONError says where a document stops being one JSON value that SafeJSON accepts.
type JSONError struct {
	Offset int    // the byte at which it went wrong
	Why    string // what was wrong there
}

func (e *JSONError) Error() string {
	return "invalid JSON at byte " + strconv.Itoa(e.Offset) + ": " + e.Why
}

// SafeJSON validates the JSON document in (one value, whitespace around it allowed) and returns it
// storable: every string and key valid UTF-8 without the escape \u0000 nor unpaired surrogate escapes
// (each becomes \ufffd, as SafeString replaces each invalid byte and each NUL), every number one that
// PostgreSQL's numeric holds (others become strings of their text). rw, when not nil, rewrites keys,
// strings and values as it walks. Whitespace is kept. It returns in itself when nothing had to change
// (no allocation, the common case), and a *JSONError when in is not JSON or is nested deeper than
// MaxJSONDepth.
func SafeJSON(in []byte, rw JSONRewriter) ([]byte, error) { return safeJSON(in, rw, MaxJSONDepth) }

func safeJSON(in []byte, rw JSONRewriter, limit int) ([]byte, error) {
	s := jsonScanner{in: in, rw: rw, limit: limit}
	if !s.document() {
		return nil, &JSONError{Offset: s.at, Why: s.why}
	}
	if !s.changed {
		return in, nil
	}
	return append(s.out, in[s.from:]...), nil
}

// appendRawJSON appends raw JSON as encoding/json writes a json.RawMessage (whitespace outside strings
// dropped, and <, >, &, U+2028 and U+2029 inside strings escaped), made storable as SafeJSON makes it.
// It reports false for what encoding/json would refuse, and for nesting deeper than MaxJSONDepth.
func appendRawJSON(dst, src []byte) ([]byte, bool) { return appendCompact(dst, src, MaxJSONDepth) }

func appendCompact(dst, src []byte, limit int) ([]byte, bool) {
	s := jsonScanner{in: src, out: dst, compact: true, limit: limit}
	if !s.document() {
		return dst, false
	}
	return append(s.out, src[s.from:]...), true
}

// jsonScanner is a recursive-descent JSON validator that copies what it has read to out lazily: in[from:i]
// is read and still to be copied, and out grows only where something changes (or, compacting, where
// whitespace is dropped).
type jsonScanner struct {
	in       []byte
	i        int    // the next byte of in to read
	out      []byte // what is written so far
	from     int    // in[from:i] is read, unchanged, and not yet in out
	changed  bool   // out holds a change: SafeJSON returns a copy
	compact  bool   // drop whitespace and escape as encoding/json's compaction does
	rw       JSONRewriter
	hold     int // >0 inside a value rw replaces: nothing there is written
	depth    int
	limit    int          // the deepest nesting accepted
	memo     [8]keyAnswer // rw's answers for the last keys
	memoN    int
	strStart int    // where the content of the last string scanned starts
	at       int    // where the document failed
	why      string // and why
	// tops, when not nil, is given the members of the document's top-level object as they are
	// scanned (Decode's fields read from them, without a second walk): where each key and each value
	// starts and ends in in.
	tops *topMembers
}

// topMembers are the members of a document's top-level object, as the scan met them: each is [key
// start, key end, value start, value end) in the scanned input, the key with its quotes.
type topMembers struct {
	object bool // the document is an object
	m      [][4]int32
}

type keyAnswer struct {
	key     []byte
	value   string
	replace bool
}

// fail records where and why the document is refused, and returns false.
func (s *jsonScanner) fail(at int, why string) bool {
	if s.why == "" {
		s.at, s.why = at, why
	}
	return false
}

// replace writes with in place of in[from:to] (to >= s.from), unless inside a replaced value.
func (s *jsonScanner) replace(from, to int, with string) {
	if s.hold > 0 {
		return
	}
	if !s.changed && s.out == nil {
		s.out = make([]byte, 0, len(s.in)+len(with)+16)
	}
	s.out = append(s.out, s.in[s.from:from]...)
	s.out = append(s.out, with...)
	s.from, s.changed = to, true
}

func (s *jsonScanner) document() bool {
	if !s.value() {
		return false
	}
	s.space()
	if s.i != len(s.in) {
		return s.fail(s.i, "more after the value")
	}
	return true
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// space skips whitespace, dropping it from the copy when compacting.
func (s *jsonScanner) space() {
	i := s.i
	if i >= len(s.in) || !isSpace(s.in[i]) {
		return // the common case: no whitespace
	}
	for i++; i < len(s.in) && isSpace(s.in[i]); i++ {
	}
	if s.compact {
		s.replace(s.i, i, "")
	}
	s.i = i
}

// next returns the byte after any whitespace (0 at the end).
func (s *jsonScanner) next() byte {
	s.space()
	if s.i >= len(s.in) {
		return 0
	}
	return s.in[s.i]
}

func (s *jsonScanner) value() bool {
	switch c := s.next(); {
	case c == '{':
		return s.object()
	case c == '[':
		return s.array()
	case c == '"':
		return s.stringValue()
	case c == '-' || isDigit(c):
		return s.number()
	case c == 't':
		return s.literal("true")
	case c == 'f':
		return s.literal("false")
	case c == 'n':
		return s.literal("null")
	case c == 0 && s.i >= len(s.in):
		return s.fail(s.i, "unexpected end")
	}
	return s.fail(s.i, "unexpected "+strconv.QuoteRune(rune(s.in[s.i]))+" where a value should be")
}

func (s *jsonScanner) literal(word string) bool {
	if len(s.in)-s.i < len(word) || string(s.in[s.i:s.i+len(word)]) != word {
		return s.fail(s.i, "not "+word)
	}
	s.i += len(word)
	return true
}

// open enters an object or array at its opening bracket, reporting whether it is empty (then it is
// already left, past closer).
func (s *jsonScanner) open(closer byte) (empty, ok bool) {
	if s.depth++; s.depth > s.limit {
		return false, s.fail(s.i, "nested deeper than "+strconv.Itoa(s.limit))
	}
	s.i++
	if s.next() == closer {
		s.i++
		s.depth--
		return true, true
	}
	return false, true
}

// more moves past the comma after a member or element, or past closer, reporting whether the object
// or array goes on.
func (s *jsonScanner) more(closer byte) (more, ok bool) {
	switch s.next() {
	case ',':
		s.i++
		return true, true
	case closer:
		s.i++
		s.depth--
		return false, true
	}
	return false, s.fail(s.i, "expected ',' or '"+string(closer)+"'")
}

func (s *jsonScanner) object() bool {
	if s.tops != nil && s.depth == 0 {
		s.tops.object = true
	}
	if empty, ok := s.open('}'); empty || !ok {
		return ok
	}
	for {
		if s.next() != '"' {
			return s.fail(s.i, "expected a key")
		}
		keyAt := s.i
		value, replace, ok := s.key()
		if !ok {
			return false
		}
		keyEnd := s.i
		if s.next() != ':' {
			return s.fail(s.i, "expected ':'")
		}
		s.i++
		s.space()
		start := s.i
		if replace {
			s.hold++
		}
		if !s.value() {
			return false
		}
		if replace {
			s.hold--
			s.replace(start, s.i, value)
		}
		if t := s.tops; t != nil && s.depth == 1 {
			t.m = append(t.m, [4]int32{int32(keyAt), int32(keyEnd), int32(start), int32(s.i)})
		}
		if more, ok := s.more('}'); !more || !ok {
			return ok
		}
	}
}

// key scans an object key and asks the rewriter about it.
func (s *jsonScanner) key() (value string, replace, ok bool) {
	if s.rw == nil || s.hold > 0 {
		return "", false, s.str()
	}
	outLen, from := len(s.out), s.from
	if !s.str() {
		return "", false, false
	}
	key := s.content(outLen, from)
	value, replace = s.ask(key)
	s.rewrite(key, outLen, from)
	return value, replace, true
}

// ask returns rw's answer for a key, remembered or new.
func (s *jsonScanner) ask(key []byte) (string, bool) {
	for i := range min(s.memoN, len(s.memo)) {
		if m := &s.memo[i]; string(m.key) == string(key) {
			return m.value, m.replace
		}
	}
	value, replace := s.rw.JSONKey(key)
	s.memo[s.memoN%len(s.memo)] = keyAnswer{key: key, value: value, replace: replace}
	s.memoN++
	return value, replace
}

// content returns the content of the string just scanned (between its quotes) as written: in place
// when nothing in it changed, else a copy of what out and in hold of it. outLen and from are len(out)
// and s.from before the string.
func (s *jsonScanner) content(outLen, from int) []byte {
	start, end := s.strStart, s.i-1
	if s.from <= start { // nothing written from inside the string
		return s.in[start:end]
	}
	head := outLen + (start - from) // where the content starts in out
	return append(append([]byte(nil), s.out[head:]...), s.in[s.from:end]...)
}

// rewrite passes the content of the string just scanned through rw.JSONString and writes what it
// returns instead, when it changed anything.
func (s *jsonScanner) rewrite(content []byte, outLen, from int) {
	red, changed := s.rw.JSONString(content)
	if !changed {
		return
	}
	start, end := s.strStart, s.i-1
	if s.from <= start {
		s.replace(start, end, string(red))
		return
	}
	s.out = append(s.out[:outLen+(start-from)], red...)
	s.from = end
}

func (s *jsonScanner) array() bool {
	if empty, ok := s.open(']'); empty || !ok {
		return ok
	}
	for {
		if !s.value() {
			return false
		}
		if more, ok := s.more(']'); !more || !ok {
			return ok
		}
	}
}

// stringValue scans a string value and passes it through the rewriter.
func (s *jsonScanner) stringValue() bool {
	if s.rw == nil || s.hold > 0 {
		return s.str()
	}
	outLen, from := len(s.out), s.from
	if !s.str() {
		return false
	}
	s.rewrite(s.content(outLen, from), outLen, from)
	return true
}

// plainKeep and plainCompact hold true for the bytes a string carries on with nothing to check or
// escape: printable ASCII but '"' and '\\' (and, compacting, '<', '>' and '&').
var plainKeep, plainCompact = func() (keep, compact [256]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		keep[c] = c != '"' && c != '\\'
		compact[c] = keep[c] && c != '<' && c != '>' && c != '&'
	}
	return keep, compact
}()

// htmlEscape is what encoding/json writes for '<', '>' and '&' in a string.
var htmlEscape = [...]string{'<': `\u003c`, '>': `\u003e`, '&': `\u0026`}

// str scans a string from its opening quote to past its closing quote, making it storable (and
// escaping as encoding/json does, when compacting).
func (s *jsonScanner) str() bool {
	in := s.in
	plain := &plainKeep
	if s.compact {
		plain = &plainCompact
	}
	s.strStart = s.i + 1
	for i := s.i + 1; i < len(in); {
		if i+8 <= len(in) { // eight bytes at a time while none needs a look
			var m uint64
			if x := load64(in[i:]); s.compact {
				m = stringSpecial(x)
			} else {
				m = stringStop(x)
			}
			if m == 0 {
				i += 8
				continue
			}
			i += bits.TrailingZeros64(m) / 8 // the first byte to look at (the lowest flag is exact)
		}
		c := in[i]
		if plain[c] {
			i++
			continue
		}
		switch {
		case c == '"':
			s.i = i + 1
			return true
		case c == '\\':
			n, ok := s.escape(i)
			if !ok {
				return false
			}
			i += n
		case c < 0x20:
			return s.fail(i, "control character in a string")
		case c < utf8.RuneSelf: // '<', '>' or '&', compacting
			s.replace(i, i+1, htmlEscape[c])
			i++
		default:
			r, n := utf8.DecodeRune(in[i:])
			switch {
			case r == utf8.RuneError && n == 1:
				s.replace(i, i+1, escapedReplacement)
			case s.compact && r == '\u2028':
				s.replace(i, i+n, `\u2028`)
			case s.compact && r == '\u2029':
				s.replace(i, i+n, `\u2029`)
			}
			i += n
		}
	}
	return s.fail(len(in), "unterminated string")
}

// escape checks the escape at in[i] ('\\') and returns its length; \u0000 and unpaired surrogates
// become \ufffd.
func (s *jsonScanner) escape(i int) (int, bool) {
	in := s.in
	if i+1 >= len(in) {
		return 0, s.fail(i, "unterminated escape")
	}
	switch in[i+1] {
	case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
		return 2, true
	case 'u':
	default:
		return 0, s.fail(i, "unknown escape")
	}
	cp, ok := Hex4(in, i+2)
	switch {
	case !ok:
		return 0, s.fail(i, "\\u without four hexadecimal digits")
	case cp >= 0xD800 && cp <= 0xDBFF: // a high surrogate: storable only with a low one after it
		if i+7 < len(in) && in[i+6] == '\\' && in[i+7] == 'u' {
			if lo, ok := Hex4(in, i+8); ok && lo >= 0xDC00 && lo <= 0xDFFF {
				return 12, true
			}
		}
	case cp != 0 && (cp < 0xDC00 || cp > 0xDFFF):
		return 6, true
	}
	s.replace(i, i+6, escapedReplacement)
	return 6, true
}

// number scans a number; one that PostgreSQL's numeric may not hold becomes a string of its text.
func (s *jsonScanner) number() bool {
	in, start := s.in, s.i
	i := start
	if in[i] == '-' {
		i++
	}
	digits := func() int {
		j := i
		for i < len(in) && isDigit(in[i]) {
			i++
		}
		return i - j
	}
	n := 0
	switch {
	case i < len(in) && in[i] == '0':
		i++
		n = 1
	case i < len(in) && isDigit(in[i]):
		n = digits()
	default:
		return s.fail(i, "bad number")
	}
	if i < len(in) && in[i] == '.' {
		i++
		f := digits()
		if f == 0 {
			return s.fail(i, "bad number: no digit after '.'")
		}
		n += f
	}
	big := n > maxNumberDigits
	if i < len(in) && (in[i] == 'e' || in[i] == 'E') {
		i++
		if i < len(in) && (in[i] == '+' || in[i] == '-') {
			i++
		}
		j := i
		if digits() == 0 {
			return s.fail(i, "bad number: no digit in the exponent")
		}
		exp := 0
		for _, d := range in[j:i] {
			if exp = 10*exp + int(d-'0'); exp > maxExponent {
				big = true
				break
			}
		}
	}
	s.i = i
	if big {
		s.replace(start, i, `"`+string(in[start:i])+`"`)
	}
	return true
}
