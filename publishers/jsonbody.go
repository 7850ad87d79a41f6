package publishers

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"math/bits"
	"strconv"
	"unicode/utf8"

	"github.com/sluicelog/sluice/event"
	"github.com/sluicelog/sluice/redact"
)

// maxJSONDepth bounds the nesting that rewriteJSON accepts; deeper documents are treated as invalid.
const maxJSONDepth = 512

var errBadJSON = errors.New("invalid JSON")

// escapedReplacement is U+FFFD as a JSON escape: what invalid UTF-8, \u0000 and lone surrogates become.
const escapedReplacement = `\ufffd`

// rewriteJSON validates a JSON document in one pass and, in the same pass, redacts it with red (when
// not nil): the value of every object member whose key red.BodyKey says is secret (at any depth) is
// replaced as a whole with the replacement as a JSON string, and every other string value is redacted
// as red.JSONString says (a URL with a token, a card number in a note). It also makes the document
// storable in PostgreSQL jsonb: invalid UTF-8, \u0000 and lone surrogate escapes become \ufffd. It
// returns the input itself when nothing had to change (no allocation), and ok=false when the input is
// not one complete JSON value.
func rewriteJSON(in []byte, red *redact.Redactor) (out []byte, ok bool) {
	r := jsonRewriter{in: in, red: red}
	if red != nil {
		r.repl = red.ReplacementJSON()
	}
	r.skipWS()
	if err := r.value(); err != nil {
		return nil, false
	}
	r.skipWS()
	if r.pos != len(in) {
		return nil, false
	}
	if r.out == nil {
		return in, true
	}
	return append(r.out, in[r.done:]...), true
}

type jsonRewriter struct {
	in       []byte
	pos      int
	out      []byte // nil until the first change
	done     int    // in[:done] is accounted for in out
	red      *redact.Redactor
	repl     string
	suppress int // >0 while scanning a value that is replaced as a whole
	depth    int
	// memo remembers the decisions on the last keys seen (slices of in): the keys of an array of
	// objects repeat, and a decision costs far more than a comparison.
	memo  [8]keyDecision
	memoN int
}

type keyDecision struct {
	key    []byte
	secret bool
}

func (r *jsonRewriter) replace(from, to int, with string) {
	if r.suppress > 0 {
		return
	}
	if r.out == nil {
		r.out = make([]byte, 0, len(r.in)+len(with))
	}
	r.out = append(r.out, r.in[r.done:from]...)
	r.out = append(r.out, with...)
	r.done = to
}

func (r *jsonRewriter) skipWS() {
	in, i := r.in, r.pos
	if i < len(in) && in[i] > ' ' {
		return // the common case: no whitespace
	}
	for i < len(in) && (in[i] == ' ' || in[i] == '\t' || in[i] == '\n' || in[i] == '\r') {
		i++
	}
	r.pos = i
}

func (r *jsonRewriter) value() error {
	if r.pos >= len(r.in) {
		return errBadJSON
	}
	switch c := r.in[r.pos]; {
	case c == '{':
		return r.object()
	case c == '[':
		return r.array()
	case c == '"':
		return r.stringValue()
	case c == '-' || (c >= '0' && c <= '9'):
		return r.number()
	case c == 't':
		return r.literal("true")
	case c == 'f':
		return r.literal("false")
	case c == 'n':
		return r.literal("null")
	}
	return errBadJSON
}

func (r *jsonRewriter) literal(lit string) error {
	if len(r.in)-r.pos < len(lit) || string(r.in[r.pos:r.pos+len(lit)]) != lit {
		return errBadJSON
	}
	r.pos += len(lit)
	return nil
}

func (r *jsonRewriter) object() error {
	if empty, err := r.open('}'); empty || err != nil {
		return err
	}
	checkKeys := r.suppress == 0 && r.red != nil // once per object, not per member
	for {
		r.skipWS()
		if r.pos >= len(r.in) || r.in[r.pos] != '"' {
			return errBadJSON
		}
		start, escaped, err := r.str()
		if err != nil {
			return err
		}
		redact := checkKeys && r.isKey(r.in[start+1:r.pos-1], escaped)
		if checkKeys && r.done <= start+1 { // a key can hold a secret too (a form field named by a JSON text)
			if red, changed := r.red.JSONString(r.in[start+1 : r.pos-1]); changed {
				r.replace(start+1, r.pos-1, string(red))
			}
		}
		r.skipWS()
		if r.pos >= len(r.in) || r.in[r.pos] != ':' {
			return errBadJSON
		}
		r.pos++
		r.skipWS()
		vstart := r.pos
		if redact {
			r.suppress++
		}
		if err := r.value(); err != nil {
			return err
		}
		if redact {
			r.suppress--
			r.replace(vstart, r.pos, r.repl)
		}
		if end, err := r.next('}'); end || err != nil {
			return err
		}
	}
}

func (r *jsonRewriter) array() error {
	if empty, err := r.open(']'); empty || err != nil {
		return err
	}
	for {
		r.skipWS()
		if err := r.value(); err != nil {
			return err
		}
		if end, err := r.next(']'); end || err != nil {
			return err
		}
	}
}

// open enters an object or array at its opening bracket, reporting whether it is empty (then it is
// already left, past closer).
func (r *jsonRewriter) open(closer byte) (empty bool, err error) {
	if r.depth++; r.depth > maxJSONDepth {
		return false, errBadJSON
	}
	r.pos++
	r.skipWS()
	if r.pos < len(r.in) && r.in[r.pos] == closer {
		r.pos++
		r.depth--
		return true, nil
	}
	return false, nil
}

// next moves past the comma after a member or element, or past closer, reporting whether the object or
// array ended.
func (r *jsonRewriter) next(closer byte) (end bool, err error) {
	r.skipWS()
	if r.pos >= len(r.in) {
		return false, errBadJSON
	}
	switch r.in[r.pos] {
	case ',':
		r.pos++
		return false, nil
	case closer:
		r.pos++
		r.depth--
		return true, nil
	}
	return false, errBadJSON
}

// str scans a string starting at the opening quote, leaving pos after the closing quote. It returns the
// position of the opening quote and whether the string holds escapes.
func (r *jsonRewriter) str() (start int, escaped bool, err error) {
	start = r.pos
	i := r.pos + 1
	in := r.in
	for i < len(in) {
		// Eight bytes at a time while none of them is a quote, a backslash, a control or a non-ASCII byte.
		// The lowest byte the mask flags is the first such byte (a false flag only follows a true one):
		// jump to it rather than scan the word again byte by byte (most keys and values are short).
		special := false
		for i+8 <= len(in) {
			x := binary.LittleEndian.Uint64(in[i:])
			if m := ((x - lsb*0x20) | ((x ^ (lsb * '"')) - lsb) | ((x ^ (lsb * '\\')) - lsb) | x) & msb; m != 0 {
				i += bits.TrailingZeros64(m) / 8
				special = true
				break
			}
			i += 8
		}
		for !special && i < len(in) && plainStringByte[in[i]] { // the last few bytes of the input
			i++
		}
		if i >= len(in) {
			break
		}
		c := in[i]
		switch {
		case c == '"':
			r.pos = i + 1
			return start, escaped, nil
		case c < 0x20:
			return start, escaped, errBadJSON
		case c == '\\':
			escaped = true
			if i+1 >= len(in) {
				return start, escaped, errBadJSON
			}
			switch in[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				cp, ok := event.Hex4(in, i+2)
				if !ok {
					return start, escaped, errBadJSON
				}
				switch {
				case cp == 0, cp >= 0xDC00 && cp <= 0xDFFF:
					r.replace(i, i+6, escapedReplacement)
					i += 6
				case cp >= 0xD800 && cp <= 0xDBFF:
					if i+7 < len(in) && in[i+6] == '\\' && in[i+7] == 'u' {
						if lo, ok := event.Hex4(in, i+8); ok && lo >= 0xDC00 && lo <= 0xDFFF {
							i += 12
							continue
						}
					}
					r.replace(i, i+6, escapedReplacement)
					i += 6
				default:
					i += 6
				}
			default:
				return start, escaped, errBadJSON
			}
		default:
			rn, n := utf8.DecodeRune(in[i:])
			if rn == utf8.RuneError && n == 1 {
				r.replace(i, i+1, escapedReplacement)
			}
			i += n
		}
	}
	return start, escaped, errBadJSON
}

const (
	lsb = 0x0101010101010101
	msb = 0x8080808080808080
)

// plainStringByte marks the bytes that stand for themselves inside a JSON string: printable ASCII but
// the quote and the backslash.
var plainStringByte = func() (t [256]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// Numbers that PostgreSQL's numeric (behind jsonb) may refuse ("value overflows numeric format", e.g.
// 1e-20000) are kept as JSON strings: more than maxNumberDigits digits or an exponent beyond ±maxExponent.
const (
	maxNumberDigits = 1000
	maxExponent     = 1000
)

func (r *jsonRewriter) number() error {
	in, start := r.in, r.pos
	i := start
	if in[i] == '-' {
		i++
	}
	digits := func() int {
		n := 0
		for i < len(in) && in[i] >= '0' && in[i] <= '9' {
			i++
			n++
		}
		return n
	}
	n := 0
	switch {
	case i < len(in) && in[i] == '0':
		i++
		n = 1
	default:
		if n = digits(); n == 0 {
			return errBadJSON
		}
	}
	if i < len(in) && in[i] == '.' {
		i++
		f := digits()
		if f == 0 {
			return errBadJSON
		}
		n += f
	}
	big := n > maxNumberDigits
	if i < len(in) && (in[i] == 'e' || in[i] == 'E') {
		i++
		if i < len(in) && (in[i] == '+' || in[i] == '-') {
			i++
		}
		expStart := i
		if digits() == 0 {
			return errBadJSON
		}
		exp := in[expStart:i]
		for len(exp) > 1 && exp[0] == '0' {
			exp = exp[1:]
		}
		if len(exp) > 4 || (len(exp) == 4 && string(exp) > strconv.Itoa(maxExponent)) {
			big = true
		}
	}
	r.pos = i
	if big {
		r.replace(start, i, `"`+string(in[start:i])+`"`)
	}
	return nil
}

// isKey reports whether a raw object key (without quotes) is one whose value is replaced.
func (r *jsonRewriter) isKey(raw []byte, escaped bool) bool {
	if !escaped {
		for i := range min(r.memoN, len(r.memo)) {
			if string(r.memo[i].key) == string(raw) {
				return r.memo[i].secret
			}
		}
		secret := r.red.BodyKey(raw)
		r.memo[r.memoN%len(r.memo)] = keyDecision{key: raw, secret: secret}
		r.memoN++
		return secret
	}
	var s string
	if json.Unmarshal(append(append([]byte{'"'}, raw...), '"'), &s) != nil {
		return true // a key that cannot be read is not known to be harmless
	}
	return r.red.BodyKey([]byte(s))
}

// stringValue scans a string value and redacts its content (see rewriteJSON).
func (r *jsonRewriter) stringValue() error {
	outBefore, doneBefore := len(r.out), r.done
	start, _, err := r.str()
	if err != nil || r.red == nil || r.suppress > 0 {
		return err
	}
	from, to := start+1, r.pos-1
	if r.done <= from { // nothing replaced inside the string: redact it in place
		if red, changed := r.red.JSONString(r.in[from:to]); changed {
			r.replace(from, to, string(red))
		}
		return nil
	}
	// The string was made storable already: redact what it became, and write that instead.
	head := outBefore + (from - doneBefore)
	content := append(append([]byte(nil), r.out[head:]...), r.in[r.done:to]...)
	if red, changed := r.red.JSONString(content); changed {
		r.out = append(r.out[:head], red...)
		r.done = to
	}
	return nil
}

func skipSpace(p []byte, i int) int {
	for i < len(p) && (p[i] == ' ' || p[i] == '\t' || p[i] == '\n' || p[i] == '\r') {
		i++
	}
	return i
}
