package server

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/vramseal/vramseal/replicate"
)

func TestReplicationCollector(t *testing.T) {
	tests := []struct {
		name   string
		status func() replicate.Status
		want   string
	}{
		{"not configured", nil, `
vramseal_audit_replication_configured 0
vramseal_audit_replication_connected 0
vramseal_audit_replication_lag_records 0
`},
		{"behind", func() replicate.Status {
			return replicate.Status{Connected: true, Acked: 90, LagRecords: 10, Lag: 1500 * time.Millisecond, Shipped: 90, Errors: 2}
		}, `
vramseal_audit_replication_configured 1
vramseal_audit_replication_connected 1
vramseal_audit_replication_lag_records 10
`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reg := prometheus.NewPedanticRegistry()
			reg.MustRegister(NewReplicationCollector(tt.status))
			names := []string{"vramseal_audit_replication_configured", "vramseal_audit_replication_connected", "vramseal_audit_replication_lag_records"}
			var want strings.Builder
			for _, line := range strings.Split(strings.TrimSpace(tt.want), "\n") {
				name := strings.Fields(line)[0]
				want.WriteString("# HELP " + name + " " + helpOf(t, reg, name) + "\n# TYPE " + name + " gauge\n" + line + "\n")
			}
			if err := testutil.GatherAndCompare(reg, strings.NewReader(want.String()), names...); err != nil {
				t.Error(err)
			}
			if n, err := testutil.GatherAndCount(reg); err != nil || n != 8 {
				t.Errorf("GatherAndCount = %d, %v; want 8 series", n, err)
			}
		})
	}
}

func helpOf(t *testing.T, reg *prometheus.Registry, name string) string {
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetHelp()
		}
	}
	t.Fatalf("no metric %s", name)
	return ""
}
