// Package e2e holds hostroute's end-to-end tests (see the _test files) and the helper
// programs they run inside pod namespaces.
package e2e
