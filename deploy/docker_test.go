package deploy

import (
	"bufio"
	"debug/elf"
	"encoding/json"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/vramseal/vramseal/internal/daemontest"
)

const (
	dockerfilePath   = "../Dockerfile"
	dockerignorePath = "../.dockerignore"
	repoRoot         = ".."
)

// dockerInstr is one Dockerfile instruction, continuation lines joined.
type dockerInstr struct {
	cmd   string // upper case: FROM, RUN, COPY, ...
	args  string
	stage int // index of the FROM it follows
}

func readDockerfile(t *testing.T) []dockerInstr {
	t.Helper()
	var out []dockerInstr
	stage := -1
	var cur strings.Builder
	sc := bufio.NewScanner(strings.NewReader(readFile(t, dockerfilePath)))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if cur.Len() == 0 && (line == "" || strings.HasPrefix(line, "#")) {
			continue
		}
		if strings.HasSuffix(line, "\\") {
			cur.WriteString(strings.TrimSuffix(line, "\\") + " ")
			continue
		}
		cur.WriteString(line)
		cmd, args, _ := strings.Cut(cur.String(), " ")
		cur.Reset()
		cmd = strings.ToUpper(cmd)
		if cmd == "FROM" {
			stage++
		}
		out = append(out, dockerInstr{cmd: cmd, args: strings.TrimSpace(args), stage: stage})
	}
	if len(out) == 0 || out[0].cmd != "FROM" && out[0].cmd != "ARG" {
		t.Fatalf("%s does not start with FROM (or ARG)", dockerfilePath)
	}
	return out
}

// execForm decodes an instruction's exec (JSON array) form.
func execForm(t *testing.T, in dockerInstr) []string {
	t.Helper()
	var v []string
	if err := json.Unmarshal([]byte(in.args), &v); err != nil {
		t.Fatalf("%s: %s %s: want the exec (JSON array) form: %v", dockerfilePath, in.cmd, in.args, err)
	}
	return v
}

// dockerBuild is the Dockerfile's go build command.
type dockerBuild struct {
	env    []string // VAR=value before go
	args   []string // after "go"
	output string   // -o
}

// readDockerBuild finds the go build command among the RUN instructions.
func readDockerBuild(t *testing.T, ins []dockerInstr) dockerBuild {
	t.Helper()
	for _, in := range ins {
		if in.cmd != "RUN" {
			continue
		}
		for _, seg := range strings.Split(in.args, "&&") {
			f := strings.Fields(seg)
			i := slices.Index(f, "go")
			if i < 0 || i+1 >= len(f) || f[i+1] != "build" {
				continue
			}
			b := dockerBuild{env: f[:i], args: f[i+1:]}
			for _, e := range b.env {
				if !strings.Contains(e, "=") {
					t.Fatalf("%s: %q before go build is not VAR=value", dockerfilePath, e)
				}
			}
			if j := slices.Index(b.args, "-o"); j >= 0 && j+1 < len(b.args) {
				b.output = b.args[j+1]
			}
			return b
		}
	}
	t.Fatalf("%s runs no go build", dockerfilePath)
	return dockerBuild{}
}

// TestDockerfile checks the Dockerfile against the repository: a
// multi-stage build whose builder's Go is go.mod's, a cgo-free build of
// ./cmd/vramseal, its binary copied into the last stage and run as
// `vramseal serve` with flags serve documents, a non-root user, the
// listen port exposed, and the data directory a volume owned by that user.
func TestDockerfile(t *testing.T) {
	ins := readDockerfile(t)
	var froms []string
	last := 0
	for _, in := range ins {
		if in.cmd == "FROM" {
			froms = append(froms, in.args)
			last = in.stage
		}
	}
	if len(froms) < 2 {
		t.Fatalf("%s has %d stages, want a build stage and a runtime stage", dockerfilePath, len(froms))
	}
	goMod := readFile(t, filepath.Join(repoRoot, "go.mod"))
	goVersion := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindStringSubmatch(goMod)
	argGo := ""
	for _, in := range ins {
		if in.cmd == "ARG" && strings.HasPrefix(in.args, "GO_VERSION=") {
			argGo = strings.TrimPrefix(in.args, "GO_VERSION=")
		}
	}
	if goVersion == nil || argGo != goVersion[1] || !strings.Contains(froms[0], "golang:${GO_VERSION}") {
		t.Errorf("%s: the builder must be golang:${GO_VERSION} with ARG GO_VERSION=%v (go.mod's go version), have ARG %q and FROM %q", dockerfilePath, goVersion, argGo, froms[0])
	}

	b := readDockerBuild(t, ins)
	if !slices.Contains(b.env, "CGO_ENABLED=0") {
		t.Errorf("%s: go build runs without CGO_ENABLED=0 (env %q)", dockerfilePath, b.env)
	}
	if b.args[len(b.args)-1] != "./cmd/vramseal" || b.output == "" {
		t.Errorf("%s: go build %q: want -o PATH ... ./cmd/vramseal", dockerfilePath, b.args)
	}

	var entry, cmd []string
	var user, binPath string
	var exposed, volumes []string
	chowned := map[string]string{} // destination: owner
	for _, in := range ins {
		if in.stage != last {
			continue
		}
		switch in.cmd {
		case "ENTRYPOINT":
			entry = execForm(t, in)
		case "CMD":
			cmd = execForm(t, in)
		case "USER":
			user = in.args
		case "EXPOSE":
			exposed = append(exposed, strings.Fields(in.args)...)
		case "VOLUME":
			volumes = append(volumes, execForm(t, in)...)
		case "COPY":
			f := strings.Fields(in.args)
			var opts, paths []string
			for _, x := range f {
				if strings.HasPrefix(x, "--") {
					opts = append(opts, x)
				} else {
					paths = append(paths, x)
				}
			}
			if len(paths) == 2 && paths[0] == b.output {
				binPath = paths[1]
			}
			for _, o := range opts {
				if owner, ok := strings.CutPrefix(o, "--chown="); ok && len(paths) == 2 {
					chowned[paths[1]] = owner
				}
			}
		}
	}
	if binPath == "" {
		t.Errorf("%s: the last stage copies no %s (the go build output)", dockerfilePath, b.output)
	}
	uid, _, _ := strings.Cut(user, ":")
	if uid == "" || uid == "root" || uid == "0" {
		t.Errorf("%s: USER %q: want a non-root user", dockerfilePath, user)
	}
	if len(entry) != 2 || entry[0] != binPath || entry[1] != "serve" {
		t.Errorf("%s: ENTRYPOINT %q, want [%q, \"serve\"]", dockerfilePath, entry, binPath)
	}
	flags := checkServeArgs(t, dockerfilePath+" CMD", cmd)
	port := listenPort(t, dockerfilePath, flags["listen"])
	if !slices.Contains(exposed, port) && !slices.Contains(exposed, port+"/tcp") {
		t.Errorf("%s: EXPOSE %q does not include the --listen port %s", dockerfilePath, exposed, port)
	}
	data := flags["data-dir"]
	if !slices.Contains(volumes, data) {
		t.Errorf("%s: --data-dir %s is not a VOLUME (%q)", dockerfilePath, data, volumes)
	}
	if owner, _, _ := strings.Cut(chowned[data], ":"); owner != uid {
		t.Errorf("%s: --data-dir %s is owned by %q in the image, want the USER %s, who must write there", dockerfilePath, data, chowned[data], uid)
	}
}

// dockerignore is a .dockerignore's patterns, in the subset of the syntax
// this test implements: paths relative to the context root, * ? and [...]
// within a path element, a leading **/ for any depth; a pattern that
// matches a directory excludes what is under it. Exceptions (!) fail the
// test rather than be misread.
type dockerignore [][]string

func readDockerignore(t *testing.T) dockerignore {
	t.Helper()
	var pats dockerignore
	for _, line := range strings.Split(readFile(t, dockerignorePath), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' {
			continue
		}
		if line[0] == '!' || strings.Contains(strings.TrimPrefix(line, "**/"), "**") {
			t.Fatalf("%s: pattern %q uses syntax this test does not implement", dockerignorePath, line)
		}
		p := path.Clean(strings.TrimPrefix(line, "/"))
		pats = append(pats, strings.Split(p, "/"))
	}
	return pats
}

// excludes reports whether the context path rel (slash-separated) is left
// out of the build context.
func (d dockerignore) excludes(rel string) bool {
	elems := strings.Split(rel, "/")
	prefix := func(pat, el []string) bool {
		if len(el) < len(pat) {
			return false
		}
		for i, p := range pat {
			if ok, err := path.Match(p, el[i]); err != nil || !ok {
				return false
			}
		}
		return true
	}
	for _, p := range d {
		if p[0] == "**" {
			for i := range elems {
				if prefix(p[1:], elems[i:]) {
					return true
				}
			}
		} else if prefix(p, elems) {
			return true
		}
	}
	return false
}

func TestDockerignoreMatch(t *testing.T) {
	d := dockerignore{{".git"}, {"**", "*_test.go"}, {"**", "testdata"}, {"*.test"}, {"deploy"}}
	for _, tt := range []struct {
		path string
		want bool
	}{
		{".git/config", true},
		{"audit/log_test.go", true},
		{"audit/log.go", false},
		{"gpu/cuda/cudatest/testdata/fakecuda.c", true},
		{"vram.test", true},
		{"cmd/vram.test", false},
		{"deploy/deploy_test.go", true},
		{"deployment.go", false},
		{"go.mod", false},
	} {
		if got := d.excludes(tt.path); got != tt.want {
			t.Errorf("excludes(%q) = %v, want %v", tt.path, got, tt.want)
		}
	}
}

// TestDockerfileBuild checks the Dockerfile's go build against the build
// context that .dockerignore leaves: go list, with the same environment
// and flags, resolves ./cmd/vramseal and everything it needs (sources and
// embedded files) in a copy of that context. It then checks how the
// binary, built without cgo as the Dockerfile does, links against the
// runtime base: a binary that needs the dynamic loader and libc cannot
// start on a static base (distroless static, scratch). (Compiling in the
// copied context would double the test's compile time on a cold cache:
// -trimpath and the directory are part of the build cache's keys.)
func TestDockerfileBuild(t *testing.T) {
	if testing.Short() {
		t.Skip("copies the build context and builds the daemon")
	}
	ins := readDockerfile(t)
	b := readDockerBuild(t, ins)
	ctx := copyBuildContext(t, readDockerignore(t))
	args := []string{"list", "-deps", "-f", "{{with .Error}}{{.}}{{end}}{{range .DepsErrors}}{{.}}{{end}}"}
	for i := 1; i < len(b.args); i++ {
		switch a := b.args[i]; {
		case a == "-o":
			i++
		case strings.HasPrefix(a, "-"):
			args = append(args, a)
		}
	}
	args = append(args, b.args[len(b.args)-1])
	cmd := exec.Command("go", args...)
	cmd.Dir = ctx
	cmd.Env = append(os.Environ(), b.env...)
	out, err := cmd.CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Fatalf("go %s in the build context .dockerignore leaves: %v\n%s", strings.Join(args, " "), err, out)
	}

	bin := daemontest.Build(t, "../cmd/vramseal")
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dynamic := slices.ContainsFunc(f.Progs, func(p *elf.Prog) bool { return p.Type == elf.PT_INTERP })
	libs, _ := f.ImportedLibraries()
	var base string
	for _, in := range ins {
		if in.cmd == "FROM" {
			base = strings.Fields(in.args)[0]
		}
	}
	if dynamic && (base == "scratch" || strings.Contains(base, "distroless/static")) {
		t.Errorf("%s: the binary needs the dynamic loader and %q, which the runtime base %s lacks", dockerfilePath, libs, base)
	}
	for _, l := range libs {
		if !strings.HasPrefix(l, "libc.so") && !strings.HasPrefix(l, "libdl.so") && !strings.HasPrefix(l, "libpthread.so") {
			t.Errorf("the binary links %s; the runtime base provides glibc only", l)
		}
	}
}

// copyBuildContext copies the repository, less what ignore excludes, into
// a temporary directory and returns it.
func copyBuildContext(t *testing.T, ignore dockerignore) string {
	t.Helper()
	ctx := t.TempDir()
	err := filepath.WalkDir(repoRoot, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(repoRoot, p)
		if err != nil || rel == "." {
			return err
		}
		if ignore.excludes(filepath.ToSlash(rel)) {
			if e.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		dst := filepath.Join(ctx, rel)
		if e.IsDir() {
			return os.MkdirAll(dst, 0o755)
		}
		if !e.Type().IsRegular() {
			return nil
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(dst, data, 0o644)
	})
	if err != nil {
		t.Fatalf("copy the build context: %v", err)
	}
	return ctx
}
