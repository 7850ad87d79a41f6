package redact

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
)

func TestKeyMatchesNormalisedNames(t *testing.T) {
	r := Default
	for _, name := range []string{
		"password", "Password", "PASSWORD", "new_password", "password_confirmation", "userPassword", "pass_word",
		"x-api-key", "X-Api-Key", "Api-Key", "api.key", "apiKey", "private_key", "privateKey", "session_id",
		"PHPSESSID", "connect.sid", "otp", "OTP", "totp_code", "cvv2", "cardCvv", "iban", "IBAN",
		"X-Vault-Token", "X-Amz-Security-Token", "X-Goog-Api-Key", "X-Forwarded-Authorization",
		"X-Refresh-Token", "Authorization", "Proxy-Authorization", "Cookie", "Set-Cookie", "access_token",
		"client_secret", "user[password]", "token[]", "credentials", "x-csrf-token", "X-Hub-Signature",
		"AccountKey", "mysql_pwd", "ssn", "user_ssn", "pin", "card_number", "creditCardNumber", "dsn", "sig",
		"pass", "pw", "mfa_code", "passphrase", "jwt", "bearer", "ConnectionString", "encryption_key",
	} {
		if !r.Key(name) {
			t.Errorf("Key(%q) = false, want true", name)
		}
	}
	for _, name := range []string{
		"user", "name", "email", "page", "id", "passenger", "compass", "footprint", "spinner", "pinned",
		"Content-Type", "Accept", "User-Agent", "X-Request-Id", "Referer", "Location", "key", "description",
		"business", "signal", "design",
	} {
		if r.Key(name) {
			t.Errorf("Key(%q) = true, want false", name)
		}
	}
}

func TestKeepWordsExtraKeysAndValidate(t *testing.T) {
	r, err := Policy{Keep: []string{"Author"}, ExtraKeys: []string{"member_no"}, Words: []string{"code"}}.Compile()
	if err != nil {
		t.Fatal(err)
	}
	if r.Key("author") || !r.Key("authorization") || !r.Key("memberNo") || !r.Key("auth_code") || r.Key("pin") {
		t.Error("Keep, ExtraKeys or Words not applied")
	}
	for _, bad := range []Policy{
		{Keys: []string{"x"}}, {Words: []string{"-"}}, {Keep: []string{""}}, {AllowHeaders: []string{"_"}},
		{UnparsedBodies: "drop"}, {Replacement: "a\x00b"},
	} {
		if err := bad.Validate(); err == nil || !strings.Contains(err.Error(), "redaction.") {
			t.Errorf("Validate(%+v) = %v, want an error naming the key", bad, err)
		}
	}
}

// canary is the secret every case hides.
const canary = "S3CRETcanary"

func TestTextHidesSecretsInEveryShape(t *testing.T) {
	for _, in := range []string{
		`{"password":["x","` + canary + `"]`,            // array value, cut JSON
		`{"secret":{"value":"` + canary + `"}, "a":`,    // object value
		`{"pass\u0077ord":"` + canary + `",`,            // escaped key
		`{"user": "ann", "token": "` + canary + ``,      // cut inside the value
		`password=` + canary + `&user=ann`,              // form / query shape
		`user=ann password=` + canary + ` level=info`,   // logfmt
		`Server=db;User Id=sa;Password=` + canary + `;`, // connection string
		`<login><user>ann</user><password>` + canary + `</password></login>`,
		`<ns:Password type="x">` + canary + `</ns:Password>`, // namespaced element
		`<user password="` + canary + `"/>`,                  // XML attribute
		"secret: " + canary + "\nuser: ann",                  // YAML
		`{"api_key": ` + canary + `}`,                        // unquoted value
		"Authorization: Bearer " + canary,                    // header line
		"call failed: Bearer " + canary + "xyz",              // free text bearer
		`'access_token': '` + canary + `'`,                   // single quotes
		"https://ann:" + canary + "@db.example.com/x",        // URL user info
		"see https://x.example/cb?code=1&access_token=" + canary + "#frag",
	} {
		out := Default.Text(in)
		if strings.Contains(out, canary) {
			t.Errorf("Text(%q) = %q: the secret is still there", in, out)
		}
		if !strings.Contains(out, DefaultReplacement) {
			t.Errorf("Text(%q) = %q: no replacement", in, out)
		}
	}
}

func TestTextDetectsSecretLookingValues(t *testing.T) {
	jwtTok := "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"
	for _, secret := range []string{
		jwtTok,
		"4111 1111 1111 1111", "4111-1111-1111-1111", "5500005555555559", "378282246310005", "6011111111111117",
		"AKIAIOSFODNN7EXAMPLE", "AIzaSyA-1234567890abcdefghijklmnopqrstu",
		"ghp_abcdefghijklmnopqrstuvwxyz0123456789", "xoxb-1234567890-abcdefghij", "sk_live_abcdefghij0123456789",
	} {
		in := "note: the value is " + secret + " ok"
		out := Default.Text("the value is " + secret + " ok")
		if strings.Contains(out, secret) {
			t.Errorf("%q: kept in %q", in, out)
		}
	}
	basic := "Basic dXNlcjpwYXNzd29yZA==" // user:password
	if out := Default.Text("got " + basic); strings.Contains(out, "dXNlcjpwYXNzd29yZA") {
		t.Errorf("basic credential kept: %q", out)
	}
	pem := "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA" + canary + "\n-----END RSA PRIVATE KEY-----"
	if out := Default.Text(pem); strings.Contains(out, canary) || !strings.Contains(out, "-----END") {
		t.Errorf("PEM: %q", out)
	}
	for _, benign := range []string{
		"order 1733112345678 shipped", "ts=1733112345678901234", "4111 1111 1111 1112", "basic information here",
		"GET /users/42 200", "a == b", "took 12:30", "the bearer of bad news", "x <= y", "https://example.com/a?b=c",
		"ids 12345678901234567890123", "<user>ann</user>",
	} {
		if out := Default.Text(benign); out != benign {
			t.Errorf("Text(%q) = %q: benign text changed", benign, out)
		}
	}
}

func TestQueryEveryCommonSyntax(t *testing.T) {
	for _, in := range []string{
		"token=" + canary, "a=1&token[]=" + canary + "&token[]=" + canary, "user[password]=" + canary,
		"a=1;password=" + canary, "pass%77ord=" + canary, "Access_Token=" + canary, "q=Bearer%20" + canary + "x",
		"cb=eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.dozjgNryP4J3jVm&x=1&api-key=" + canary,
	} {
		out := Default.Query(in)
		if strings.Contains(out, canary) || strings.Contains(out, "eyJzdWIi") {
			t.Errorf("Query(%q) = %q", in, out)
		}
	}
	if got := Default.Query("a=1&b=2;c=3&d"); got != "a=1&b=2;c=3&d" {
		t.Errorf("benign query changed: %q", got)
	}
	if got := Default.Query("page=2&token=x&sort=asc"); got != "page=2&token=[REDACTED]&sort=asc" {
		t.Errorf("Query = %q", got)
	}
}

func TestAllowLists(t *testing.T) {
	r, err := Policy{AllowHeaders: []string{"Content-Type"}, AllowBodyKeys: []string{"user"}}.Compile()
	if err != nil {
		t.Fatal(err)
	}
	if r.Header("Content-Type") || !r.Header("X-Custom") || !r.BodyKey([]byte("page")) || r.BodyKey([]byte("user")) {
		t.Error("allow lists not applied")
	}
	if got := r.Form("user=ann&page=2"); got != "user=ann&page=[REDACTED]" {
		t.Errorf("Form = %q", got)
	}
	if !r.OmitsUnparsed() {
		t.Error("an allow list for bodies must leave unparsed bodies out")
	}
}

func TestJSONStringKeepsTheDocumentValid(t *testing.T) {
	for _, content := range []string{
		`see password=` + canary + ` now`,
		`with \"quotes\" and token=` + canary,
		`card 4111111111111111`,
	} {
		out, changed := Default.JSONString([]byte(content))
		if !changed {
			t.Errorf("%q: nothing changed", content)
		}
		var s string
		if err := json.Unmarshal([]byte(`"`+string(out)+`"`), &s); err != nil {
			t.Errorf("%q -> %q: not a JSON string: %v", content, out, err)
		}
		if strings.Contains(s, canary) || strings.Contains(s, "4111111111111111") {
			t.Errorf("%q -> %q", content, s)
		}
	}
}

func TestHandlerRedactsOwnLogs(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(NewHandler(slog.NewJSONHandler(&buf, nil), nil)).With("dsn", "postgres://u:"+canary+"@h/db")
	log.WithGroup("g").Error("connect failed: password="+canary, "password", canary,
		slog.Group("req", "headers", "Authorization: Bearer "+canary, "ok", 1), "err", errString("token="+canary))
	if strings.Contains(buf.String(), canary) {
		t.Errorf("own log line leaks: %s", buf.String())
	}
	if !strings.Contains(buf.String(), `"ok":1`) {
		t.Errorf("lost the rest: %s", buf.String())
	}
}

type errString string

func (e errString) Error() string { return string(e) }

// BenchmarkTextHostile scans 256 KiB texts that repeat a shape starting a look ahead, against plain
// text of the same size ("plain"): a scan that is not linear shows as thousands of times slower.
func BenchmarkTextHostile(b *testing.B) {
	const size = 256 << 10
	for _, unit := range []string{"plain ", "://", `password="`, "password={", "<password ", "<password>", "a=", `"k":`,
		"Bearer ", "eyJ", "4111 ", "-----BEGIN PRIVATE KEY-----"} {
		s := strings.Repeat(unit, size/len(unit))
		b.Run(strings.TrimSpace(unit), func(b *testing.B) {
			b.SetBytes(int64(len(s)))
			for b.Loop() {
				_ = Default.Text(s)
			}
		})
	}
}
