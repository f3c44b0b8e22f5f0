// Package version holds the build's version, stamped by the Makefile with
// -ldflags "-X github.com/robotfleet/fleetlink/internal/version.Version=...".
package version

// Version is the release version, or "dev" for unstamped builds.
var Version = "dev"

// Commit is the git commit the binary was built from.
var Commit = "unknown"

// String returns "VERSION (COMMIT)".
func String() string { return Version + " (" + Commit + ")" }
