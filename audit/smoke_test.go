package audit

import (
	"os"
	"testing"
)

func TestSmokeDump(t *testing.T) {
	dir, _, l := newLog(t, Options{Service: "vramseal", Node: "n1", Worker: "w1"})
	e := testEvent(1)
	e.Fields = append(e.Fields, String("evil", "a\x1b[31m\u202e\"\\\n"))
	mustAppend(t, l, e)
	mustClose(t, l)
	ents, _ := os.ReadDir(dir)
	for _, en := range ents {
		b, _ := os.ReadFile(dir + "/" + en.Name())
		t.Logf("== %s\n%s", en.Name(), b)
	}
}
