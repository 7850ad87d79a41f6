package event

import "bytes"

// RawMember returns the value of the member key of the JSON object raw (top level only), as it stands
// in raw (no copy), and whether raw has it. Keys are compared as they are written, unescaped: the
// keys of an event's encoding never need escapes. Malformed JSON yields false.
//
// Publishers keep an event's nested parts (Request, Response, Attrs) only as JSON in its Raw once it is
// encoded (see Lean); a sink that stores them separately reads them back with RawMember.
func RawMember(raw []byte, key string) ([]byte, bool) {
	i := skipSpace(raw, 0)
	if i >= len(raw) || raw[i] != '{' {
		return nil, false
	}
	i++
	for {
		i = skipSpace(raw, i)
		if i >= len(raw) || raw[i] != '"' {
			return nil, false // '}' of an object without the key, or malformed
		}
		end := skipString(raw, i)
		if end < 0 {
			return nil, false
		}
		k := raw[i+1 : end-1]
		i = skipSpace(raw, end)
		if i >= len(raw) || raw[i] != ':' {
			return nil, false
		}
		i = skipSpace(raw, i+1)
		vend := skipValue(raw, i)
		if vend < 0 {
			return nil, false
		}
		if string(k) == key {
			return raw[i:vend], true
		}
		i = skipSpace(raw, vend)
		if i >= len(raw) || raw[i] != ',' {
			return nil, false
		}
		i++
	}
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && isSpace(b[i]) {
		i++
	}
	return i
}

// skipString returns the index after the string that starts at b[i] ('"'), or -1. It looks for each
// quote with IndexByte (vectorised) and counts the backslashes before it: an odd count escapes it.
func skipString(b []byte, i int) int {
	for j := i + 1; j < len(b); {
		k := bytes.IndexByte(b[j:], '"')
		if k < 0 {
			return -1
		}
		j += k
		n := 0
		for p := j - 1; p > i && b[p] == '\\'; p-- {
			n++
		}
		if n%2 == 0 {
			return j + 1
		}
		j++
	}
	return -1
}

// skipValue returns the index after the JSON value that starts at b[i], or -1.
func skipValue(b []byte, i int) int {
	if i >= len(b) {
		return -1
	}
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for j := i; j < len(b); j++ {
			switch b[j] {
			case '"':
				end := skipString(b, j)
				if end < 0 {
					return -1
				}
				j = end - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return j + 1
				}
			}
		}
		return -1
	}
	j := i // a number, true, false or null
	for j < len(b) && b[j] != ',' && b[j] != '}' && b[j] != ']' && b[j] != ' ' && b[j] != '\t' && b[j] != '\n' && b[j] != '\r' {
		j++
	}
	if j == i {
		return -1
	}
	return j
}

// RawNested returns the member key of Raw as RawMember(e.Raw, key) does. For "request", "response"
// and "attrs" of an event that DecodeLean read, it does so without scanning Raw: the decoder noted
// where they are (the sinks that store them as columns ask for all three, and a scan costs as much as
// the decoding).
func (e *Event) RawNested(key string) ([]byte, bool) {
	k := -1
	switch key {
	case "request":
		k = 0
	case "response":
		k = 1
	case "attrs":
		k = 2
	}
	if k >= 0 && e.nested.n > 0 && len(e.Raw) == e.nested.n && &e.Raw[0] == e.nested.base {
		at := e.nested.at[k]
		if at[1] == 0 {
			return nil, false
		}
		return e.Raw[at[0]:at[1]], true
	}
	return RawMember(e.Raw, key)
}

// Lean drops the event's nested parts (Request, Response, Attrs) once Raw holds its encoding: they
// stay in Raw (RawMember reads them) and the event holds far less memory, and fewer pointers for the
// garbage collector, while it waits in the bus. It does nothing when Raw is empty.
func (e *Event) Lean() {
	if len(e.Raw) == 0 {
		return
	}
	e.Request, e.Response, e.Attrs = nil, nil, nil
}
