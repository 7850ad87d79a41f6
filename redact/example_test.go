package redact_test

import (
	"fmt"

	"github.com/sluicelog/sluice/redact"
)

func Example() {
	r, err := redact.Policy{Keep: []string{"author"}}.Compile()
	if err != nil {
		panic(err)
	}
	fmt.Println(r.Query("user[password]=hunter2&author=ann;api-key=k1"))
	fmt.Println(r.Text(`login failed: {"user":"ann","secret":{"value":"s3"}, "note":"Bearer abcdefgh12`))
	fmt.Println(r.Key("X-Amz-Security-Token"), r.Key("author"))
	// Output:
	// user[password]=[REDACTED]&author=ann;api-key=[REDACTED]
	// login failed: {"user":"ann","secret":[REDACTED], "note":"Bearer [REDACTED]
	// true false
}
