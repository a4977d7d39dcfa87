package deploy

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

const unitPath = "systemd/vramseal.service"

// unitSettings returns the unit file's settings as key and value, in
// order, with continuation lines joined and comments dropped.
func unitSettings(t *testing.T) [][2]string {
	t.Helper()
	text := strings.ReplaceAll(readFile(t, unitPath), "\\\n", " ")
	var out [][2]string
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' || line[0] == ';' || line[0] == '[' {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("%s: line %q is not a setting", unitPath, line)
		}
		out = append(out, [2]string{strings.TrimSpace(k), strings.TrimSpace(v)})
	}
	return out
}

// unitExecStart returns the unit's ExecStart binary and its arguments.
func unitExecStart(t *testing.T) (bin string, args []string) {
	t.Helper()
	var cmdline []string
	for _, kv := range unitSettings(t) {
		if kv[0] == "ExecStart" {
			if cmdline != nil {
				t.Fatalf("%s has more than one ExecStart", unitPath)
			}
			if strings.ContainsAny(kv[1], `"'$`) {
				t.Fatalf("%s: ExecStart uses quotes or variables, which this test does not expand: %s", unitPath, kv[1])
			}
			cmdline = strings.Fields(kv[1])
		}
	}
	if len(cmdline) < 2 || cmdline[1] != "serve" {
		t.Fatalf("%s: ExecStart %q does not run vramseal serve", unitPath, cmdline)
	}
	return cmdline[0], cmdline[2:]
}

// TestSystemdUnit checks the unit's flags against vramseal serve, and
// that it keeps its hardening: no new privileges, a read-only system, no
// home, a private /tmp, only the NVIDIA device nodes, the data directory
// as the state directory, and the worker secret and the token passed as
// credentials.
func TestSystemdUnit(t *testing.T) {
	_, args := unitExecStart(t)
	flags := checkServeArgs(t, unitPath, args)
	set := map[string][]string{}
	for _, kv := range unitSettings(t) {
		set[kv[0]] = append(set[kv[0]], kv[1])
	}
	for k, want := range map[string]string{
		"NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes",
		"DevicePolicy": "closed", "StateDirectory": "vramseal", "CapabilityBoundingSet": "",
	} {
		if got := set[k]; len(got) != 1 || got[0] != want {
			t.Errorf("%s: %s = %q, want %q", unitPath, k, got, want)
		}
	}
	if len(set["DeviceAllow"]) == 0 {
		t.Errorf("%s: no DeviceAllow: the daemon would see no GPU", unitPath)
	}
	nvidia := regexp.MustCompile(`^(/dev/nvidia[\w/-]*|char-nvidia[\w*-]*) [rwm]+$`)
	for _, d := range set["DeviceAllow"] {
		if !nvidia.MatchString(d) {
			t.Errorf("%s: DeviceAllow=%s: want only the NVIDIA device nodes", unitPath, d)
		}
	}
	if got := flags["data-dir"]; got != "%S/vramseal" {
		t.Errorf("%s: --data-dir %q, want %%S/vramseal (the StateDirectory)", unitPath, got)
	}
	creds := map[string]bool{}
	for _, c := range set["LoadCredential"] {
		id, _, _ := strings.Cut(c, ":")
		creds[id] = true
	}
	for _, flag := range []string{"secret-file", "token-file"} {
		v := flags[flag]
		id, ok := strings.CutPrefix(v, "%d/")
		if !ok || !creds[id] {
			t.Errorf("%s: --%s %q: want %%d/ID with LoadCredential=ID:... (loaded: %v)", unitPath, flag, v, creds)
		}
	}
	if _, ok := flags["audit-dir"]; ok {
		t.Errorf("%s: --audit-dir: keep the audit log in the state directory (DATA-DIR/audit)", unitPath)
	}
}

// TestSystemdAnalyzeVerify runs systemd-analyze verify on the unit, with
// ExecStart pointed at an executable that exists here. Any message fails
// the test: verify exits 0 on unknown keys and bad values, which it only
// reports.
func TestSystemdAnalyzeVerify(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		if os.Getenv("VRAMSEAL_REQUIRE_SYSTEMD_ANALYZE") != "" {
			t.Fatal("systemd-analyze not found and VRAMSEAL_REQUIRE_SYSTEMD_ANALYZE is set: install Debian's systemd package")
		}
		t.Skip("systemd-analyze not found (Debian package systemd); set VRAMSEAL_REQUIRE_SYSTEMD_ANALYZE=1 to make this a failure")
	}
	bin, _ := unitExecStart(t)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	unit := strings.Replace(readFile(t, unitPath), "ExecStart="+bin+" ", "ExecStart="+self+" ", 1)
	path := filepath.Join(t.TempDir(), "vramseal.service")
	if err := os.WriteFile(path, []byte(unit), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(analyze, "verify", path).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("systemd-analyze verify %s: %v\n%s", unitPath, err, out)
	}
}
