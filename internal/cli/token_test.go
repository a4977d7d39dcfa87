package cli

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestServeTokenFile(t *testing.T) {
	const secret = "s3cr3t-t0ken-0123456789"
	tests := []struct {
		name    string
		content string
		mode    os.FileMode
		want    string // "" means accepted
	}{
		{"trailing newline", secret + "\n", 0o600, ""},
		{"owner read only", secret, 0o400, ""},
		{"newline inside", secret[:8] + "\n" + secret[8:], 0o600, "a newline at offset 8"},
		{"two trailing newlines", secret + "\n\n", 0o600, "a newline at offset 23"},
		{"carriage return", secret + "\r\n", 0o600, "a control byte at offset 23"},
		{"escape byte", secret[:4] + "\x1b" + secret[4:], 0o600, "a control byte at offset 4"},
		{"space inside", secret[:4] + " " + secret[4:], 0o600, "a space at offset 4"},
		{"non-ASCII", secret + "é", 0o600, "a non-ASCII byte at offset 23"},
		{"too short", "short\n", 0o600, "holds 5 characters"},
		{"group readable", secret, 0o640, "mode 0640"},
		{"others readable", secret, 0o604, "mode 0604"},
		{"group writable", secret, 0o620, "mode 0620"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "token")
			if err := os.WriteFile(p, []byte(tt.content), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(p, tt.mode); err != nil {
				t.Fatal(err)
			}
			tok, err := readTokenFile("--token-file", p, true)
			if tt.want == "" {
				if err != nil || tok != secret {
					t.Fatalf("readTokenFile(%q) = %q, %v; want the token", tt.content, tok, err)
				}
				return
			}
			if err == nil || ExitCode(err) != 2 || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("readTokenFile(%q, mode %04o) = %q, %v; want exit 2 saying %q", tt.content, tt.mode, tok, err, tt.want)
			}
			if strings.Contains(err.Error(), secret[:8]) {
				t.Errorf("error %q shows the token", err)
			}
			// serve refuses it before it creates anything.
			data := filepath.Join(t.TempDir(), "data")
			var out, errb bytes.Buffer
			if got := Run(context.Background(), []string{"serve", "--token-file", p, "--data-dir", data, "--device", "sim"}, &out, &errb); got != 2 || !strings.Contains(errb.String(), tt.want) {
				t.Errorf("serve --token-file: exit %d, %q; want 2 saying %q", got, errb.String(), tt.want)
			}
			if _, err := os.Stat(data); !os.IsNotExist(err) {
				t.Errorf("serve created %s before refusing the token file (%v)", data, err)
			}
		})
	}
	// A credential another user (root) owns may be group-readable: the
	// daemon's user reads it through its group, as with a Kubernetes
	// secret mounted with fsGroup and mode 0440.
	if os.Getuid() == 0 {
		p := filepath.Join(t.TempDir(), "token")
		if err := os.WriteFile(p, []byte(secret), 0o440); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(p, 65534, os.Getgid()); err != nil {
			t.Fatal(err)
		}
		if tok, err := readTokenFile("--token-file", p, true); err != nil || tok != secret {
			t.Errorf("0440 owned by another user: %q, %v; want the token", tok, err)
		}
		if err := os.Chmod(p, 0o444); err != nil {
			t.Fatal(err)
		}
		if _, err := readTokenFile("--token-file", p, true); ExitCode(err) != 2 {
			t.Errorf("0444 owned by another user: %v, want refused", err)
		}
	}
	// A client reads the same format but does not judge the mode.
	p := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(p, []byte(secret+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cf := clientFlags{addr: "127.0.0.1:1", tokenFile: p}
	if c, err := cf.client(); err != nil || c.token != secret {
		t.Errorf("client token from a 0644 file = %v, want the token", err)
	}
}
