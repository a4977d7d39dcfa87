package vram

import (
	"strings"
	"testing"
)

func TestCapacityErrorRetryable(t *testing.T) {
	tests := []struct {
		e    CapacityError
		want bool
	}{
		{CapacityError{Requested: 2 << 20, Available: 1 << 20, Capacity: 4 << 20}, true},
		{CapacityError{Requested: 8 << 20, Available: 1 << 20, Capacity: 4 << 20}, false},
		{CapacityError{Requested: 8 << 20, Available: 1 << 20}, true},
	}
	for _, tt := range tests {
		if got := tt.e.Retryable(); got != tt.want {
			t.Errorf("%v: Retryable() = %v, want %v", tt.e.Error(), got, tt.want)
		}
		if !strings.Contains(tt.e.Error(), "MiB") {
			t.Errorf("Error() = %q, want sizes in binary units", tt.e.Error())
		}
	}
}

func TestStoppedErrorSaysWhatToDo(t *testing.T) {
	msg := (&StoppedError{Reason: "shard s1 failed verification"}).Error()
	for _, want := range []string{"s1", "shard rm", "reset --reason"} {
		if !strings.Contains(msg, want) {
			t.Errorf("StoppedError = %q, want it to name %q", msg, want)
		}
	}
}
