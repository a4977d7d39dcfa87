package audit_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/vramseal/vramseal/audit"
)

func Example() {
	tmp, _ := os.MkdirTemp("", "audit-example")
	defer os.RemoveAll(tmp)
	dir := filepath.Join(tmp, "audit")

	// Once: create the log; keep the verification key off the machine.
	vk, err := audit.Init(dir, audit.Options{})
	if err != nil {
		panic(err)
	}

	l, err := audit.Open(dir, audit.Options{Service: "vramseal", Node: "gpu-node-1", Worker: "w0"})
	if err != nil {
		panic(err)
	}
	ctx := context.Background()
	r, err := l.Append(ctx, audit.Event{
		Type:          "shard_sealed",
		Severity:      audit.SeverityCritical, // durable before Append returns
		CorrelationID: "req-42",
		Fields: []audit.Field{
			audit.String("shard_id", "llama-3-8b/0"),
			audit.Bytes("size", 16<<30),
			audit.Digest("root", [32]byte{0xab}),
		},
	})
	if err != nil {
		panic(err) // fail-closed: refuse the operation
	}
	fmt.Println("durable:", r.Durable, "seq:", r.Seq)
	if err := l.Close(ctx); err != nil {
		panic(err)
	}

	rep, err := audit.Verify(ctx, dir, audit.VerifyOptions{Key: vk})
	fmt.Println("verified:", err == nil, rep.Records, "record(s), MACs checked:", rep.MACsChecked)
	// Output:
	// durable: true seq: 1
	// verified: true 1 record(s), MACs checked: true
}

func ExampleRecord_AppendText() {
	r, err := audit.ParseRecord([]byte(`{"v":1,"seq":7,"time":"2026-01-02T03:04:05.000000000Z","id":"0123456789abcdef-7","type":"shard_loaded","sev":"info","service":"vramseal","node":"n1","worker":"","cid":"","fields":{"path":"\u001b[2Jevil\u202etxt","size":{"bytes":1073741824}},"epoch":0,"prev":"f0780beb7c764a22cd2e3508c8593dece9241bf0de8ceda142f6f8875a9c6a85","mac":"0000000000000000000000000000000000000000000000000000000000000000"}`))
	if err != nil {
		panic(err)
	}
	fmt.Println(string(r.AppendText(nil)))
	// Output:
	// 2026-01-02T03:04:05.000Z info     shard_loaded seq=7 path="\x1b[2Jevil\u202etxt" size=1.0GiB
}
