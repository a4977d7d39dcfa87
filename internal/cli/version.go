package cli

import (
	"runtime/debug"
	"strings"
)

// version describes the binary from its build information: the module
// version ("(devel)" for a build from a work tree), the VCS commit with
// its time and whether the tree was modified, and the Go version, e.g.
// "v1.2.0 (commit 69cacd8a1b2c, 2026-12-02T13:00:00Z, modified; go1.26.8)".
func version(info *debug.BuildInfo, ok bool) string {
	if !ok || info == nil {
		return "unknown (no build information)"
	}
	v := info.Main.Version
	if v == "" {
		v = "(devel)"
	}
	var rev, at string
	modified := false
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.time":
			at = s.Value
		case "vcs.modified":
			modified = s.Value == "true"
		}
	}
	var parts []string
	if rev != "" {
		parts = append(parts, "commit "+rev[:min(len(rev), 12)])
	} else {
		parts = append(parts, "commit unknown")
	}
	if at != "" {
		parts = append(parts, at)
	}
	if modified {
		parts = append(parts, "modified")
	}
	return v + " (" + strings.Join(parts, ", ") + "; " + info.GoVersion + ")"
}
