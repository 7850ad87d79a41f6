package sluice

import (
	"os"
	"strings"
	"testing"
)

// The README's embedding guide is the example module's main.go, whole: what the README shows
// compiles (CI builds the example).
func TestReadmeQuotesTheEmbeddingExample(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	example, err := os.ReadFile("examples/embed/main.go")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(readme), "```go\n"+string(example)+"```\n") {
		t.Error("README.md does not quote examples/embed/main.go whole in a go block: copy it again")
	}
}
