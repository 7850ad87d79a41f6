package redact

import (
	"encoding/base64"
	"strings"
)

// detect adds the secret-looking values of p, wherever they are: bearer and basic credentials, JWTs,
// payment card numbers (a known issuer prefix, a valid length and the Luhn check), cloud and SaaS
// access keys (AWS access key ids, Google API keys, GitHub, Slack and Stripe tokens) and PEM private
// keys. Each starts at a word boundary.
func detect[T string | []byte](p T, spans []span) []span {
	for i := 0; i < len(p); i++ {
		c := p[i]
		if !detectStart[c] || (i > 0 && isAlnum(p[i-1])) {
			continue
		}
		end := 0
		switch {
		case c >= '0' && c <= '9':
			end = cardNumber(p, i)
		case c == 'e':
			end = jwt(p, i)
		case c == 'b' || c == 'B':
			if from, to := credential(p, i); to > 0 {
				spans = append(spans, span{from, to})
				i = to - 1
			}
			continue
		case c == 'A':
			end = awsOrGoogleKey(p, i)
		case c == 'g' || c == 'x' || c == 's' || c == 'r':
			end = saasToken(p, i)
		case c == '-':
			if from, to := pemPrivateKey(p, i); to > 0 {
				spans = append(spans, span{from, to})
				i = to - 1
			}
			continue
		}
		if end > i {
			spans = append(spans, span{i, end})
			i = end - 1
		}
	}
	return spans
}

var detectStart = byteSet("0123456789ebBAgxsr-")

func isAlnum(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
}

func hasPrefixFold[T string | []byte](p T, i int, prefix string) bool {
	if len(p)-i < len(prefix) {
		return false
	}
	for k := 0; k < len(prefix); k++ {
		if p[i+k]|0x20 != prefix[k] {
			return false
		}
	}
	return true
}

func hasPrefix[T string | []byte](p T, i int, prefix string) bool {
	return len(p)-i >= len(prefix) && string(p[i:i+len(prefix)]) == prefix
}

// run returns the end of the run of bytes in set from i.
func run[T string | []byte](p T, i int, set *[256]bool) int {
	for i < len(p) && set[p[i]] {
		i++
	}
	return i
}

var (
	base64URL   = byteSet("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
	tokenBytes  = byteSet("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~+/=")
	base64Bytes = byteSet("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=")
	alnum       = byteSet("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
	upperDigits = byteSet("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
)

// jwt returns the end of a JSON Web Token starting at i (header "eyJ…", payload, optional signature).
func jwt[T string | []byte](p T, i int) int {
	if !hasPrefix(p, i, "eyJ") {
		return 0
	}
	e := run(p, i, &base64URL)
	if e-i < 10 || e >= len(p) || p[e] != '.' {
		return 0
	}
	e2 := run(p, e+1, &base64URL)
	if e2-e-1 < 2 {
		return 0
	}
	if e2 < len(p) && p[e2] == '.' {
		return run(p, e2+1, &base64URL)
	}
	return e2
}

// credential recognises "Bearer <token>" and "Basic <base64 of user:password>" (any case). It returns
// the token's range, or 0, 0.
func credential[T string | []byte](p T, i int) (from, to int) {
	var n int
	switch {
	case hasPrefixFold(p, i, "bearer"):
		n = 6
	case hasPrefixFold(p, i, "basic"):
		n = 5
	default:
		return 0, 0
	}
	t := i + n
	if t >= len(p) || (p[t] != ' ' && p[t] != '\t') {
		return 0, 0
	}
	for t < len(p) && (p[t] == ' ' || p[t] == '\t') {
		t++
	}
	e := run(p, t, &tokenBytes)
	if e-t < 8 {
		return 0, 0
	}
	if n == 5 { // basic: only when it decodes to user:password
		e = run(p, t, &base64Bytes)
		dec, err := base64.StdEncoding.DecodeString(string(p[t:e]))
		if err != nil || !strings.Contains(string(dec), ":") {
			return 0, 0
		}
	}
	return t, e
}

// awsOrGoogleKey recognises AWS access key ids (AKIA…, ASIA…: 20 upper-case letters and digits) and
// Google API keys (AIza and 35 more).
func awsOrGoogleKey[T string | []byte](p T, i int) int {
	if hasPrefix(p, i, "AIza") {
		if e := run(p, i+4, &base64URL); e-i == 39 {
			return e
		}
		return 0
	}
	for _, prefix := range []string{"AKIA", "ASIA", "AGPA", "AIDA", "AROA", "ANPA", "ANVA", "AIPA"} {
		if hasPrefix(p, i, prefix) {
			if e := run(p, i, &upperDigits); e-i == 20 {
				return e
			}
			return 0
		}
	}
	return 0
}

// saasToken recognises GitHub (ghp_ gho_ ghu_ ghs_ ghr_ github_pat_), Slack (xoxb- xoxp- xoxa- xoxr-
// xoxs-) and Stripe (sk_live_ sk_test_ rk_live_ rk_test_) tokens.
func saasToken[T string | []byte](p T, i int) int {
	if len(p)-i < 8 {
		return 0
	}
	switch c1 := p[i+1]; { // most words that start with these letters go no further than this
	case p[i] == 'g' && c1 == 'h', p[i] == 'x' && c1 == 'o', c1 == 'k' && p[i+2] == '_':
	default:
		return 0
	}
	for _, t := range saasPrefixes {
		if hasPrefix(p, i, t.prefix) {
			if e := run(p, i+len(t.prefix), t.set); e-i-len(t.prefix) >= t.min {
				return e
			}
			return 0
		}
	}
	return 0
}

var saasPrefixes = []struct {
	prefix string
	min    int
	set    *[256]bool
}{
	{"ghp_", 30, &alnum}, {"gho_", 30, &alnum}, {"ghu_", 30, &alnum}, {"ghs_", 30, &alnum}, {"ghr_", 30, &alnum},
	{"github_pat_", 20, &base64URL},
	{"xoxb-", 10, &base64URL}, {"xoxp-", 10, &base64URL}, {"xoxa-", 10, &base64URL}, {"xoxr-", 10, &base64URL}, {"xoxs-", 10, &base64URL},
	{"sk_live_", 10, &alnum}, {"sk_test_", 10, &alnum}, {"rk_live_", 10, &alnum}, {"rk_test_", 10, &alnum},
}

// pemPrivateKey recognises a PEM private key block: its body (between the BEGIN and END lines, or to
// the end of the text) is replaced.
func pemPrivateKey[T string | []byte](p T, i int) (from, to int) {
	if !hasPrefix(p, i, "-----BEGIN ") {
		return 0, 0
	}
	j := i + len("-----BEGIN ")
	eol := j
	for eol < len(p) && p[eol] != '\n' && p[eol] != '\\' && eol-j < 64 {
		eol++
	}
	if !strings.HasSuffix(string(p[j:eol]), "PRIVATE KEY-----") {
		return 0, 0
	}
	end := eol
	for end < len(p) && !hasPrefix(p, end, "-----END") {
		end++
	}
	return eol, end
}

// cardNumber recognises a payment card number: 12 to 19 digits, in groups separated by single spaces
// or dashes, with a known issuer prefix and length and a valid Luhn check digit.
func cardNumber[T string | []byte](p T, i int) int {
	var digits [19]byte
	n, j, end := 0, i, 0
	for j < len(p) {
		c := p[j]
		if c >= '0' && c <= '9' {
			if n == len(digits) {
				return 0 // longer than any card number
			}
			digits[n] = c - '0'
			n++
			j++
			end = j
			continue
		}
		if (c == ' ' || c == '-') && j+1 < len(p) && p[j+1] >= '0' && p[j+1] <= '9' && n > 0 {
			j++
			continue
		}
		break
	}
	if end < len(p) && isAlnum(p[end]) {
		return 0
	}
	if n < 12 || !cardIssuer(digits[:n]) || !luhn(digits[:n]) {
		return 0
	}
	return end
}

func cardIssuer(d []byte) bool {
	prefix := func(k int) int {
		v := 0
		for _, x := range d[:k] {
			v = v*10 + int(x)
		}
		return v
	}
	n := len(d)
	switch p2, p4 := prefix(2), prefix(4); {
	case d[0] == 4: // Visa
		return n == 13 || n == 16 || n == 19
	case p2 >= 51 && p2 <= 55, p4 >= 2221 && p4 <= 2720: // Mastercard
		return n == 16
	case p2 == 34 || p2 == 37: // American Express
		return n == 15
	case p4 == 6011, p2 == 65, prefix(3) >= 644 && prefix(3) <= 649: // Discover
		return n >= 16
	case p2 == 36 || p2 == 38 || p2 == 39 || (prefix(3) >= 300 && prefix(3) <= 305): // Diners Club
		return n >= 14
	case p4 >= 3528 && p4 <= 3589: // JCB
		return n >= 16
	case p2 == 62: // UnionPay
		return n >= 16
	case p2 == 50 || (p2 >= 56 && p2 <= 69): // Maestro
		return n >= 12
	}
	return false
}

func luhn(d []byte) bool {
	sum := 0
	for k := 0; k < len(d); k++ {
		x := int(d[len(d)-1-k])
		if k%2 == 1 {
			x *= 2
			if x > 9 {
				x -= 9
			}
		}
		sum += x
	}
	return sum%10 == 0
}
