package cli

import (
	"encoding/json"
	"io"

	"github.com/vramseal/vramseal/audit"
)

// The --json answers of the audit commands on success: one compact JSON
// object on one line, snake_case keys, as every --json output. (query and
// tail print the records' own lines, NDJSON; checkpoint, prove and
// check-proof are in audit_proof.go.)

// initJSON is the --json form of audit init.
type initJSON struct {
	LogID           string `json:"log_id"`
	Dir             string `json:"dir"`
	VerificationKey string `json:"verification_key_file"`
	PublicKeyFile   string `json:"public_key_file"`
	PublicKey       string `json:"public_key"`
}

// verifyJSON is the --json form of a log that verified. A log that does
// not is an error object (exit status 4), as for every failure.
type verifyJSON struct {
	OK                 bool   `json:"ok"`
	Records            uint64 `json:"records"`
	FirstSeq           uint64 `json:"first_seq"`
	LastSeq            uint64 `json:"last_seq"`
	Segments           int    `json:"segments"`
	PrunedSegments     int    `json:"pruned_segments"`
	Epochs             uint64 `json:"epochs"`
	FirstEpoch         uint64 `json:"first_epoch"`
	LastEpoch          uint64 `json:"last_epoch"`
	MACsChecked        bool   `json:"macs_checked"`
	CheckpointsChecked bool   `json:"checkpoints_checked"`
	Checkpoints        int    `json:"checkpoints"`
	SignedSize         uint64 `json:"signed_size"`
	UnsignedRecords    uint64 `json:"unsigned_records"`
	TornBytes          int64  `json:"torn_bytes"`
	FormatVersion      int    `json:"format_version"`
	EpochsTimeBound    bool   `json:"epochs_time_bound"`
	EpochAnchors       int    `json:"epoch_anchors"`
}

func toVerifyJSON(r *audit.VerifyReport) verifyJSON {
	return verifyJSON{OK: true, Records: r.Records, FirstSeq: r.FirstSeq, LastSeq: r.LastSeq, Segments: r.Segments,
		PrunedSegments: r.Pruned, Epochs: r.Epochs, FirstEpoch: r.FirstEpoch, LastEpoch: r.LastEpoch,
		MACsChecked: r.MACsChecked, CheckpointsChecked: r.CheckpointsChecked, Checkpoints: r.Checkpoints,
		SignedSize: r.SignedSize, UnsignedRecords: r.Unsigned, TornBytes: r.TornBytes,
		FormatVersion: r.Version, EpochsTimeBound: r.Version >= 2, EpochAnchors: r.Anchors}
}

// pruneJSON is the --json form of audit prune.
type pruneJSON struct {
	PrunedSegments int    `json:"pruned_segments"`
	PrunedRecords  uint64 `json:"pruned_records"`
	ThroughSeq     uint64 `json:"through_seq"`
}

// writeJSON prints v as one compact JSON line.
func writeJSON(w io.Writer, v any) error {
	return json.NewEncoder(w).Encode(v)
}
