package acceptance_test

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluicelog/sluice/subscribers/blobsink"
	"github.com/sluicelog/sluice/subscribers/blobsink/azurestore"
)

// canaryCorpus hands out unique secrets and remembers the way each was sent.
type canaryCorpus struct {
	ways    []string
	secrets []string
}

func (c *canaryCorpus) add(way, secret string) string {
	c.ways = append(c.ways, way)
	c.secrets = append(c.secrets, secret)
	return secret
}

// next returns a new plain canary (letters and digits: it survives every encoding unchanged).
func (c *canaryCorpus) next(way string) string {
	b := make([]byte, 5)
	_, _ = rand.Read(b)
	return c.add(way, fmt.Sprintf("Cnry%03dx%s", len(c.secrets), hex.EncodeToString(b)))
}

// jwt, card and awsKey return canaries that only the value detectors can catch: their names are
// not secret.
func (c *canaryCorpus) jwt(way string) string {
	payload := base64.RawURLEncoding.EncodeToString(fmt.Appendf(nil, `{"sub":"canary-%d"}`, len(c.secrets)))
	return c.add(way, "eyJhbGciOiJIUzI1NiJ9."+payload+".c2lnbmF0dXJl"+fmt.Sprint(len(c.secrets)))
}

func (c *canaryCorpus) card(way string) string {
	d := fmt.Sprintf("4%014d", 7_000_000+len(c.secrets)) // Visa prefix, 15 digits, then the Luhn digit
	sum := 0
	for i := len(d) - 1; i >= 0; i-- {
		x := int(d[i] - '0')
		if (len(d)-1-i)%2 == 0 {
			if x *= 2; x > 9 {
				x -= 9
			}
		}
		sum += x
	}
	return c.add(way, d+fmt.Sprint((10-sum%10)%10))
}

func (c *canaryCorpus) awsKey(way string) string {
	return c.add(way, fmt.Sprintf("AKIA%016d", 9_000_000+len(c.secrets)))
}

// secretNames are names that any scrubber catches; each is sent in a query, a JSON body, a form body
// and a header.
var secretNames = []string{
	"password", "new_password", "password_confirmation", "userPassword", "pass_word", "x-api-key", "private_key",
	"session_id", "otp", "cvv2", "iban", "client_secret", "access_token", "refresh_token", "api_key",
	"auth_token", "credentials", "passphrase", "pin", "ssn",
}

// More than a hundred canary secrets, sent every way a client and a careless application can send
// them (headers, URL-valued headers, response headers, queries in every common syntax, JSON bodies
// valid, malformed and cut at the capture limit, forms, a JSON body sent as a form, NDJSON, XML, plain
// text, application log messages, attributes and groups, error strings, and values that only the
// detectors recognise), appear in no PostgreSQL row, no dead letter, no blob, nothing the demo prints
// and none of sluice's own logs, while the requests that carried them are stored.
func TestCanarySecretsReachNoStore(t *testing.T) {
	consoleFile := filepath.Join(t.TempDir(), "console.log")
	d := startDemo(t, shortFlush+"  - {name: watch, sink: console, batch: {max_wait: 100ms}}\n"+
		"console: {target: "+consoleFile+", format: text}\n")
	var c canaryCorpus
	client := &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	var ids []string
	send := func(method, path, contentType, body string, headers map[string]string, want int) http.Header {
		t.Helper()
		req, _ := http.NewRequest(method, d.base+path, strings.NewReader(body))
		if contentType != "" {
			req.Header.Set("Content-Type", contentType)
		}
		for k, v := range headers {
			req.Header.Set(k, v)
		}
		id := fmt.Sprintf("canary-request-%02d", len(ids))
		req.Header.Set("X-Request-ID", id)
		ids = append(ids, id)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Fatalf("%s %s: status %d, want %d", method, path, resp.StatusCode, want)
		}
		return resp.Header
	}

	// Headers: secret names, URL-valued headers, credentials in custom headers.
	headers := map[string]string{
		"Authorization":       "Bearer " + c.next("authorization bearer"),
		"Proxy-Authorization": "Basic " + c.add("proxy basic", base64.StdEncoding.EncodeToString([]byte("ann:"+c.next("proxy basic password")))),
		"Cookie":              "theme=dark; session=" + c.next("cookie"),
		"Api-Key":             c.next("Api-Key"), "X-Vault-Token": c.next("X-Vault-Token"),
		"X-Amz-Security-Token": c.next("X-Amz-Security-Token"), "X-Goog-Api-Key": c.next("X-Goog-Api-Key"),
		"X-Forwarded-Authorization": "Bearer " + c.next("X-Forwarded-Authorization"),
		"Referer":                   "https://app.example/callback?state=1&access_token=" + c.next("Referer URL"),
		"Origin":                    "https://ann:" + c.next("Origin user info") + "@app.example",
		"Link":                      "<https://app.example/next?token=" + c.next("Link URL") + ">; rel=next",
		"Content-Location":          "/doc?sig=" + c.next("Content-Location URL"),
		"X-Debug":                   "retrying with Bearer " + c.next("bearer in a custom header"),
		"X-Trace-Context":           c.jwt("JWT in a custom header"),
	}
	for _, n := range secretNames {
		headers["X-"+n] = c.next("header X-" + n)
	}
	// Queries: every secret name, and the syntaxes of brackets, semicolons, escapes and repeats.
	q := []string{"page=2"}
	for _, n := range secretNames {
		q = append(q, url.QueryEscape(n)+"="+c.next("query "+n))
	}
	q = append(q, "token[]="+c.next("query token[]"), "token[]="+c.next("query token[] repeated"),
		"user[password]="+c.next("query user[password]"), "a=1;password="+c.next("query ; separator"),
		"pass%77ord="+c.next("query escaped name"), "X-Amz-Signature="+c.next("query X-Amz-Signature"),
		"next="+url.QueryEscape("/x?access_token="+c.next("query URL in a value")), "id_token="+c.jwt("query JWT"))
	send(http.MethodGet, "/missing?"+strings.Join(q, "&"), "", "", headers, 404)

	// A valid JSON body: every secret name at two depths, and detector-only values in harmless keys;
	// to /login (the application logs it, the error quotes it, the response echoes the token in headers)
	// and to /echo (the response body repeats it).
	fields := []string{`"user":"ann"`, `"token":"` + c.next("JSON token (echoed in response headers)") + `"`}
	for _, n := range secretNames {
		fields = append(fields, fmt.Sprintf(`%q:%q`, n, c.next("JSON "+n)))
	}
	fields = append(fields,
		`"profile":{"credentials":{"value":"`+c.next("JSON nested object")+`"},"roles":["admin"]}`,
		`"note":"card `+c.card("JSON card number in a note")+` please"`, `"trace":"`+c.jwt("JSON JWT in a value")+`"`,
		`"cfg":"aws `+c.awsKey("JSON AWS key in a value")+`"`, `"callback":"https://x.example/?code=1&access_token=`+c.next("JSON URL in a value")+`"`)
	body := "{" + strings.Join(fields, ",") + "}"
	resp := send(http.MethodPost, "/login", "application/json", body, nil, 401)
	if resp.Get("X-Refresh-Token") == "" || !strings.Contains(resp.Get("Location"), "session_token=") {
		t.Fatalf("the demo did not echo the token in response headers: %v", resp)
	}
	body2 := strings.Replace(body, `"user":"ann"`, `"user":"bob"`, 1)
	send(http.MethodPost, "/echo", "application/json", body2, nil, 200)

	// Malformed JSON, and JSON cut by the 64 KiB capture limit inside a secret value.
	send(http.MethodPost, "/login", "application/json", `{"password":["x","`+c.next("malformed JSON array value")+`"],`, nil, 401)
	send(http.MethodPost, "/login", "application/json", `{"secret":{"value":"`+c.next("malformed JSON object value")+`"}}}`, nil, 401)
	send(http.MethodPost, "/login", "application/json", `{"pass\u0077ord":"`+c.next("malformed JSON escaped key")+`",`, nil, 401)
	cutValue := c.next("JSON cut at the capture limit")
	pad := strings.Repeat("p", 64<<10-len(`{"pad":"","token":"`)-6)
	send(http.MethodPost, "/echo", "application/json", `{"pad":"`+pad+`","token":"`+cutValue+`"}`, nil, 200)
	c.add("the part of a secret before the capture limit", `"token":"`+cutValue[:6])

	// Forms, a JSON body sent as a form (curl -d), NDJSON, XML, plain text.
	form := url.Values{"user": {"ann"}}
	for _, n := range secretNames {
		form.Set(n, c.next("form "+n))
	}
	send(http.MethodPost, "/login", "application/x-www-form-urlencoded", form.Encode(), nil, 401)
	send(http.MethodPost, "/login", "application/x-www-form-urlencoded", `{"user":"ann","password":"`+c.next("JSON sent as a form")+`"}`, nil, 401)
	send(http.MethodPost, "/login", "application/x-ndjson", `{"user":"ann","secret":"`+c.next("NDJSON line 1")+`"}`+"\n"+`{"api_key":"`+c.next("NDJSON line 2")+`"}`+"\n", nil, 401)
	send(http.MethodPost, "/login", "application/xml", `<login><user>ann</user><password>`+c.next("XML element")+`</password><session token="`+c.next("XML attribute")+`"/></login>`, nil, 401)
	send(http.MethodPost, "/login", "text/plain", "user=ann password="+c.next("text key=value")+"\n"+`"client_secret": "`+c.next(`text "key": "value"`)+`"`+"\nsecret: "+c.next("text key: value")+"\n", nil, 401)
	send(http.MethodPost, "/login", "text/plain", "aws "+c.awsKey("text AWS key")+" card "+c.card("text card number")+" -----BEGIN PRIVATE KEY-----\n"+c.next("text PEM private key")+"\n-----END PRIVATE KEY-----", nil, 401)

	if len(c.secrets) < 100 {
		t.Fatalf("only %d canaries: the corpus must hold at least 100", len(c.secrets))
	}
	if code := d.stop(60 * time.Second); code != 0 {
		t.Fatalf("exit code %d", code)
	}

	all := storedText(t, d)
	for _, id := range ids {
		if !strings.Contains(all, id) {
			t.Errorf("request %s is not stored at all: the search below would prove nothing", id)
		}
	}
	if !strings.Contains(all, "[REDACTED]") || !strings.Contains(all, "page=2") || !strings.Contains(all, `login failed for ann`) {
		t.Errorf("stored events show no redaction marker, or lost a harmless query parameter or the application log")
	}
	consoleOut, err := os.ReadFile(consoleFile)
	if err != nil {
		t.Fatal(err)
	}
	out := d.stdout.String() + "\n" + d.stderr.String() + "\n" + string(consoleOut)
	if !strings.Contains(out, "login failed for ann") || !strings.Contains(string(consoleOut), "canary-request-00") {
		t.Errorf("the application log or the requests did not reach the console: the console search would prove nothing")
	}
	leaks := 0
	for i, secret := range c.secrets {
		for where, text := range map[string]string{"storage": all, "console sink, stdout, stderr and sluice's own logs": out} {
			if k := strings.Index(text, secret); k >= 0 {
				leaks++
				t.Errorf("%s: the secret sent as %s: …%s…", where, c.ways[i], text[max(0, k-120):min(len(text), k+60)])
			}
		}
	}
	t.Logf("%d canaries sent in %d requests; %d found in PostgreSQL rows, dead letters, blobs, console output and sluice's own logs",
		len(c.secrets), len(ids), leaks)
}

// storedText returns everything the demo stored, as text: every row of every sluice table and every
// blob decompressed (dead letters' raw bytes included).
func storedText(t *testing.T, d *demo) string {
	t.Helper()
	var stored strings.Builder
	ctx, conn := connect(t, d.dsn)
	for _, query := range []string{
		"SELECT t::text FROM application_logs t",
		// bytea prints as hex in t::text: add the raw bytes themselves
		"SELECT t::text || encode(t.raw, 'escape') FROM application_logs_dead_letter t",
	} {
		rows, err := conn.Query(ctx, query)
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var s string
			if err := rows.Scan(&s); err != nil {
				t.Fatal(err)
			}
			stored.WriteString(s + "\n")
		}
		rows.Close()
	}
	store, err := azurestore.Open(ctx, azurestore.Config{ConnectionString: d.azure, Container: d.cont})
	if err != nil {
		t.Fatal(err)
	}
	names, err := store.List(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range names {
		data, err := store.Get(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		if blobsink.IsDeadLetter(name) {
			letters, err := blobsink.DecodeDeadLetters(data)
			if err != nil {
				t.Fatal(err)
			}
			for _, l := range letters {
				stored.Write(l.Raw) // base64 in the blob: search the bytes themselves
				stored.WriteString("\n" + l.Detail + "\n")
			}
			continue
		}
		events, err := blobsink.Decode(data)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range events {
			stored.Write(e.Raw)
			stored.WriteString("\n")
		}
	}
	return stored.String()
}
