package main

import (
	"bytes"
	"os"
	"strings"
	"testing"
)

// sluice prune's flags: its help, and bad values refused as usage (exit 2) before anything is opened.
func TestPruneCommandLine(t *testing.T) {
	environ = func() []string { return nil }
	t.Cleanup(func() { environ = os.Environ })
	for _, c := range []struct {
		args      []string
		code      int
		out, errs string
	}{
		{[]string{"help", "prune"}, 0, "-older-than duration", ""},
		{[]string{"help"}, 0, "prune ", ""},
		{[]string{"prune", "-sink", "s3"}, 2, "", `-sink "s3": want postgres or blob`},
		{[]string{"prune", "-older-than", "-5h"}, 2, "", "-older-than -5h0m0s: must be positive"},
		{[]string{"prune", "-older-than", "soon"}, 2, "", "invalid value"},
	} {
		var out, errs bytes.Buffer
		code := run(c.args, &out, &errs)
		if code != c.code || !strings.Contains(out.String(), c.out) || !strings.Contains(errs.String(), c.errs) {
			t.Errorf("sluice %s: exit %d, want %d\nstdout: %s\nstderr: %s", strings.Join(c.args, " "), code, c.code, out.String(), errs.String())
		}
	}
}
