package seal

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestJSONRoundTrip(t *testing.T) {
	s := signedSeal(t)
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	// Pointer and value marshal alike.
	if bp, _ := json.Marshal(&s); !bytes.Equal(b, bp) {
		t.Errorf("json.Marshal(&s) = %s, want %s", bp, b)
	}
	got, err := DecodeJSON(b)
	if err != nil {
		t.Fatalf("DecodeJSON(%s) = %v", b, err)
	}
	if diff := cmp.Diff(s, *got); diff != "" {
		t.Errorf("DecodeJSON(MarshalJSON(s)) differs (-want +got):\n%s", diff)
	}
	if err := testKey(t).Verify(got); err != nil {
		t.Errorf("Verify(seal from JSON) = %v", err)
	}
	// A Seal embedded in another document decodes strictly too.
	var doc struct{ Seal Seal }
	if err := json.Unmarshal([]byte(`{"Seal":`+string(b)+`}`), &doc); err != nil || doc.Seal != s {
		t.Errorf("json.Unmarshal(embedded seal) = %v", err)
	}
	if err := json.Unmarshal([]byte(`{"Seal":{"shard_id":"x"}}`), &doc); err == nil {
		t.Errorf("json.Unmarshal(embedded partial seal) = nil, want error")
	}

	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	var names []string
	for k := range m {
		names = append(names, k)
	}
	if len(names) != len(jsonFields) {
		t.Errorf("JSON has members %v, want exactly %v", names, jsonFields)
	}
	for _, k := range []string{"digest", "tree_root", "signature"} {
		if v := m[k].(string); v != strings.ToLower(v) || len(v) != 64 {
			t.Errorf("JSON %s = %q, want 64 lowercase hex digits", k, v)
		}
	}
	if m["sealed_at"] != "2026-03-14T15:09:26.535897932Z" {
		t.Errorf("JSON sealed_at = %v", m["sealed_at"])
	}
}

func TestDecodeJSONStrict(t *testing.T) {
	s := signedSeal(t)
	good, _ := json.Marshal(s)
	g := string(good)
	// replace swaps one member's value in the good encoding.
	replace := func(old, new string) string {
		if !strings.Contains(g, old) {
			t.Fatalf("%q not in %s", old, g)
		}
		return strings.Replace(g, old, new, 1)
	}
	upperDigest := replace(`"digest":"`+s.Digest.String(), `"digest":"`+strings.ToUpper(s.Digest.String()))
	tests := []struct {
		name    string
		in      string
		wantErr string // "" means success
	}{
		{"good", g, ""},
		{"whitespace", "\n  " + strings.ReplaceAll(g, ",", ",\n ") + " \n", ""},
		{"uppercase hex", upperDigest, ""},
		{"empty", ``, "not a JSON object"},
		{"array", `[` + g + `]`, "not a JSON object"},
		{"null", `null`, "not a JSON object"},
		{"two objects", g + g, "after the seal object"},
		{"trailing garbage", g + "x", "after the seal object"},
		{"unterminated", g[:len(g)-1], "decode json"},
		{"unknown member", `{"extra":1,` + g[1:], `unknown member "extra"`},
		{"case-folded member", replace(`"shard_id"`, `"Shard_ID"`), "unknown member"},
		{"duplicate member", `{"shard_id":"x",` + g[1:], "duplicate member"},
		{"missing member", replace(`"model_ref":"`+s.ModelRef+`",`, ``), "missing member model_ref"},
		{"null member", replace(`"worker_id":"worker-a"`, `"worker_id":null`), "is null"},
		{"short digest", replace(`"digest":"`+s.Digest.String(), `"digest":"`+s.Digest.String()[2:]), "hash is 62 characters"},
		{"long digest", replace(`"digest":"`, `"digest":"00`), "hash is 66 characters"},
		{"non-hex root", replace(`"tree_root":"`+s.Root.String()[:2], `"tree_root":"zz`), "not hexadecimal"},
		{"number digest", replace(`"digest":"`+s.Digest.String()+`"`, `"digest":1`), "digest"},
		{"string index", replace(`"shard_index":0`, `"shard_index":"0"`), "shard_index"},
		{"float index", replace(`"shard_index":0`, `"shard_index":0.5`), "shard_index"},
		{"exponent size", replace(`"size_bytes":12388`, `"size_bytes":1e4`), "size_bytes"},
		{"negative size", replace(`"size_bytes":12388`, `"size_bytes":-1`), "size -1"},
		{"overflow size", replace(`"size_bytes":12388`, `"size_bytes":99999999999999999999`), "size_bytes"},
		{"zone offset time", replace(`"sealed_at":"2026-03-14T15:09:26.535897932Z"`, `"sealed_at":"2026-03-14T16:09:26.535897932+01:00"`), "canonical form"},
		{"trailing zero time", replace(`.535897932Z`, `.5358979320Z`), "canonical form"},
		{"bad time", replace(`.535897932Z`, `Z junk`), "canonical form"},
		{"empty key id", replace(`"key_id":"`+s.KeyID+`"`, `"key_id":""`), "key id is empty"},
		{"control in id", replace(`"shard_id":"`, `"shard_id":"\u0000`), "control character"},
		{"invalid utf-8", replace(`"worker-a"`, "\"worker-\xff\""), "UTF-8"},
		{"too large", `{"model_ref":"` + strings.Repeat("a", MaxJSONLen) + `"}`, "limit"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DecodeJSON([]byte(tt.in))
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("DecodeJSON = %v, want success", err)
				}
				if diff := cmp.Diff(s, *got); diff != "" {
					t.Errorf("DecodeJSON differs (-want +got):\n%s", diff)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.HasPrefix(err.Error(), "seal: ") {
				t.Fatalf("DecodeJSON = %v, want error containing %q", err, tt.wantErr)
			}
			if got != nil {
				t.Errorf("DecodeJSON returned a seal with an error")
			}
			var keep Seal = s
			if err := keep.UnmarshalJSON([]byte(tt.in)); err == nil || keep != s {
				t.Errorf("failed UnmarshalJSON changed the seal or succeeded")
			}
		})
	}
}
