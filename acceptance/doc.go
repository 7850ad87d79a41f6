// Package acceptance holds sluice's acceptance tests: they run the real `sluice` binary and the
// library against a real PostgreSQL and a real Azurite (started by .ci/run), over real connections,
// and check what users see: rows, blobs, exit codes and error messages.
package acceptance
