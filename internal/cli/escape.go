package cli

import (
	"strconv"
	"unicode"
	"unicode/utf8"
)

// safeText is how the CLI prints any text that came from input (file
// names, model refs, shard IDs, device names) in a message, a success
// line or a table cell: s as it is when it is valid UTF-8 made only of
// printable characters and spaces, with no quote or backslash; otherwise
// s quoted by [strconv.Quote], the daemon's own escaping, which writes
// every control character, ANSI escape, bidirectional override, U+2028
// and U+2029 line or paragraph separator and invalid byte as a Go escape.
// A bare result never holds a quote, so the two forms cannot be confused.
func safeText(s string) string {
	if printable(s, false) {
		return s
	}
	return strconv.Quote(s)
}

// terminalLine is the last line of defence for a whole message printed on
// the terminal (an error): the message as it is when nothing in it is
// unprintable, else quoted whole by [strconv.Quote]. Quotes and
// backslashes stay, since the parts of a message that came from input are
// already [safeText] or quoted by the daemon.
func terminalLine(s string) string {
	if printable(s, true) {
		return s
	}
	return strconv.Quote(s)
}

// printable reports whether s is valid UTF-8 of printable runes and
// spaces only, and, unless quotes is set, holds no '"' or '\\'.
func printable(s string, quotes bool) bool {
	for _, r := range s {
		switch {
		case r == utf8.RuneError:
			// Invalid UTF-8, or a literal U+FFFD: quoted either way.
			return false
		case !quotes && (r == '"' || r == '\\'):
			return false
		case r != ' ' && !unicode.IsPrint(r):
			return false
		}
	}
	return true
}
