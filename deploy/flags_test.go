package deploy

import (
	"bytes"
	"context"
	"io"
	"net"
	"regexp"
	"strings"
	"testing"

	"github.com/vramseal/vramseal/internal/cli"
)

// serveHelpFlags returns the long flags `vramseal serve --help` lists:
// the documented ones, so a hidden test flag is not among them.
func serveHelpFlags(t *testing.T) map[string]bool {
	t.Helper()
	var out, errb bytes.Buffer
	if code := cli.Run(context.Background(), []string{"serve", "--help"}, &out, &errb); code != 0 {
		t.Fatalf("vramseal serve --help exited %d: %s", code, errb.String())
	}
	flags := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^\s+(?:-\w, )?--([a-z0-9-]+)`).FindAllStringSubmatch(out.String(), -1) {
		flags[m[1]] = true
	}
	if !flags["listen"] || !flags["data-dir"] {
		t.Fatalf("vramseal serve --help lists no --listen or --data-dir; the help format changed:\n%s", out.String())
	}
	return flags
}

// checkServeArgs checks the arguments a deployment file passes to
// `vramseal serve`: every flag is one serve --help documents, serve's own
// flag parsers accept every value, nothing is positional, and a
// non-loopback --listen comes with --token-file (serve refuses it
// otherwise). It returns the flags' values by name.
func checkServeArgs(t *testing.T, where string, args []string) map[string]string {
	t.Helper()
	if len(args) == 0 {
		t.Fatalf("%s passes no flags to vramseal serve", where)
	}
	documented := serveHelpFlags(t)
	values := map[string]string{}
	for i := 0; i < len(args); i++ {
		a := args[i]
		name, value, hasValue := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		if !strings.HasPrefix(a, "--") || name == "" {
			t.Errorf("%s: argument %q is not a long flag", where, a)
			continue
		}
		if !documented[name] {
			t.Errorf("%s: flag --%s is not in vramseal serve --help", where, name)
		}
		if !hasValue && i+1 < len(args) && !strings.HasPrefix(args[i+1], "--") {
			i++
			value = args[i]
		}
		values[name] = value
	}
	serve, _, err := cli.New(io.Discard, io.Discard).Find([]string{"serve"})
	if err != nil {
		t.Fatal(err)
	}
	if err := serve.ParseFlags(args); err != nil {
		t.Errorf("%s: vramseal serve refuses its flags: %v", where, err)
	} else if rest := serve.Flags().Args(); len(rest) > 0 {
		t.Errorf("%s: vramseal serve takes no arguments, got %q", where, rest)
	}
	if listen, ok := values["listen"]; ok {
		host, _, err := net.SplitHostPort(listen)
		if err != nil {
			t.Errorf("%s: --listen %q: %v", where, listen, err)
		} else if ip := net.ParseIP(host); (ip == nil || !ip.IsLoopback()) && host != "localhost" && values["token-file"] == "" {
			t.Errorf("%s: --listen %s is not a loopback address but there is no --token-file: serve refuses to start", where, listen)
		}
	}
	return values
}

// listenPort returns the port of a --listen value.
func listenPort(t *testing.T, where, listen string) string {
	t.Helper()
	_, port, err := net.SplitHostPort(listen)
	if err != nil || port == "" || port == "0" {
		t.Fatalf("%s: --listen %q has no fixed port", where, listen)
	}
	return port
}
