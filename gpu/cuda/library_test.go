package cuda

import (
	"errors"
	"strings"
	"testing"
)

func TestDlopenErrorNamesThePathOnce(t *testing.T) {
	for _, tt := range []struct{ path, msg, want string }{
		{"libcuda.so.1", "libcuda.so.1: cannot open shared object file: No such file or directory", "load libcuda.so.1: cannot open shared object file: No such file or directory"},
		{"/opt/x/libcuda.so", "file too short", "load /opt/x/libcuda.so: file too short"},
	} {
		if got := dlopenError(tt.path, errors.New(tt.msg)).Error(); got != tt.want || strings.Count(got, tt.path) != 1 {
			t.Errorf("dlopenError(%q, %q) = %q, want %q", tt.path, tt.msg, got, tt.want)
		}
	}
}
