package acceptance_test

import (
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/sluicelog/sluice/subscribers/blobsink"
)

// Canary secrets sent every way a client can send them must appear in no PostgreSQL row and no blob,
// while the request ids that carry them do.
func TestCanarySecretsReachNoStore(t *testing.T) {
	d := startDemo(t, shortFlush)
	canaries := map[string]string{
		"authorization header": "CANARY-auth-7f1c",
		"cookie header":        "CANARY-cookie-29ab",
		"x-api-key header":     "CANARY-apikey-88d0",
		"proxy-authorization":  "CANARY-proxy-1e5e",
		"query token":          "CANARY-query-token-4c2b",
		"query api_key":        "CANARY-query-apikey-9d9d",
		"body password":        "CANARY-body-password-5a5a",
		"body nested token":    "CANARY-body-nested-3b3b",
		"body card number":     "CANARY-body-card-6c6c",
		"body mixed case":      "CANARY-body-mixedcase-0f0f",
	}
	body := `{"user":"ann","password":"` + canaries["body password"] + `",` +
		`"payment":{"card_number":"` + canaries["body card number"] + `","items":[{"Access_Token":"` + canaries["body nested token"] + `"}]},` +
		`"SECRET":"` + canaries["body mixed case"] + `"}`
	query := url.Values{"token": {canaries["query token"]}, "api_key": {canaries["query api_key"]}, "page": {"2"}}.Encode()
	client := &http.Client{Timeout: 10 * time.Second}
	var ids []string
	for i, target := range []struct {
		method, path string
		status       int
	}{
		{http.MethodPost, "/echo", 200},     // INFO: archive only; the response echoes the secrets back
		{http.MethodPost, "/missing", 404},  // WARN: archive and PostgreSQL
		{http.MethodGet, "/fail", 500},      // ERROR: archive and PostgreSQL
		{http.MethodPost, "/echo/bad", 404}, // WARN with a body
	} {
		req, _ := http.NewRequest(target.method, d.base+target.path+"?"+query, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+canaries["authorization header"])
		req.Header.Set("Cookie", "session="+canaries["cookie header"])
		req.Header.Set("X-Api-Key", canaries["x-api-key header"])
		req.Header.Set("Proxy-Authorization", "Basic "+canaries["proxy-authorization"])
		id := "canary-" + string(rune('a'+i))
		req.Header.Set("X-Request-ID", id)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		echoed, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != target.status {
			t.Fatalf("%s %s: %d, want %d", target.method, target.path, resp.StatusCode, target.status)
		}
		if target.path == "/echo" && !strings.Contains(string(echoed), canaries["body password"]) {
			t.Fatal("the demo did not echo the body: the response-body path is not exercised")
		}
		ids = append(ids, id)
	}

	eventually(t, 30*time.Second, "3 rows and 4 blob lines", func() bool {
		lines, _ := blobEvents(t, d.azure, d.cont)
		return len(httpRows(t, d.dsn)) >= 3 && len(lines) >= 4
	})
	if code := d.stop(60 * time.Second); code != 0 {
		t.Fatalf("exit code %d", code)
	}

	// Everything stored, as text: every row of every sluice table, every blob decompressed.
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
	store, err := blobsink.OpenAzure(ctx, blobsink.AzureConfig{ConnectionString: d.azure, Container: d.cont})
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
	all := stored.String()
	for _, id := range ids {
		if !strings.Contains(all, id) {
			t.Errorf("request %s is not stored at all: the search below would prove nothing", id)
		}
	}
	if !strings.Contains(all, "[REDACTED]") || !strings.Contains(all, `"page"`) && !strings.Contains(all, "page=2") {
		t.Errorf("stored events show no redaction marker or lost the harmless query parameter")
	}
	for way, canary := range canaries {
		if strings.Contains(all, canary) {
			i := strings.Index(all, canary)
			t.Errorf("the secret sent by %s is stored: …%s…", way, all[max(0, i-120):min(len(all), i+60)])
		}
	}
}
