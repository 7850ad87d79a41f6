package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The command line behaves like the tools people know: help and -h exit 0 on stdout, unknown
// commands and stray arguments exit 2 saying what was wrong, -config goes before or after the
// command, and version says what was built.
func TestCommandLine(t *testing.T) {
	environ = func() []string { return nil } // the configuration must not see the test's environment
	t.Cleanup(func() { environ = os.Environ })
	file := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(file, []byte("service: from-the-file\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		args      []string
		code      int
		out, errs string // substrings of stdout and stderr
	}{
		{[]string{"help"}, 0, "commands:", ""},
		{[]string{"-h"}, 0, "commands:", ""},
		{[]string{"help", "demo"}, 0, "-logging", ""},
		{[]string{"demo", "-h"}, 0, "-cpuprofile", ""},
		{[]string{"config", "--help"}, 0, "SLUICE_* environment variable", ""},
		{[]string{}, 2, "", "usage: sluice"},
		{[]string{"serve"}, 2, "", `unknown command "serve"`},
		{[]string{"help", "serve"}, 2, "", `unknown command "serve"`},
		{[]string{"demo", "foo"}, 2, "", `unexpected arguments ["foo"]`},
		{[]string{"demo", "-port", "1"}, 2, "", "flag provided but not defined: -port"},
		{[]string{"version"}, 0, "sluice ", ""},
		{[]string{"-config", file, "config"}, 0, "service: from-the-file", ""},
		{[]string{"config", "-config", file}, 0, "service: from-the-file", ""},
		{[]string{"-config", filepath.Join(t.TempDir(), "missing.yaml"), "config"}, 2, "", "missing.yaml"},
	} {
		var out, errs bytes.Buffer
		code := run(c.args, &out, &errs)
		if code != c.code || !strings.Contains(out.String(), c.out) || !strings.Contains(errs.String(), c.errs) {
			t.Errorf("sluice %s: exit %d, want %d\nstdout: %s\nstderr: %s\nwant stdout with %q, stderr with %q",
				strings.Join(c.args, " "), code, c.code, out.String(), errs.String(), c.out, c.errs)
		}
	}
}
