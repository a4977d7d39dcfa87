package cli

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/vramseal/vramseal/audit"
)

// The signed checkpoints of the audit log and proofs against them:
// audit checkpoint, audit prove and audit check-proof.

// maxProofFileBytes bounds what check-proof reads: a proof is two notes,
// some hashes and at most one record of 1 MiB in base64.
const maxProofFileBytes = 4 << 20

// readArgFile reads the regular file at path, named as an argument, of
// at most limit bytes; anything else is bad input (what names what it
// should be).
func readArgFile(path, what string, limit int64) ([]byte, error) {
	f, st, err := openInput(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if st.Size() > limit {
		return nil, &ExitError{Code: 2, Err: fmt.Errorf("%s is %s, more than %s: not %s", safeText(path), FormatBytes(st.Size()), FormatBytes(limit), what)}
	}
	return io.ReadAll(io.LimitReader(f, limit))
}

// readPublicKey reads a checkpoint public key file (--public-key). A file
// that is missing or is not a public key is bad input (exit status 2).
func readPublicKey(path string) (*audit.PublicKey, error) {
	b, err := readSmall("public-key", path, maxKeyFileBytes)
	if err != nil {
		return nil, err
	}
	pk, err := audit.ParsePublicKey(b)
	if err != nil {
		return nil, &ExitError{Code: 2, Err: fmt.Errorf("--public-key: %s: %w", safeText(path), err)}
	}
	return pk, nil
}

// createPublic creates path for writing, new, with mode 0644: for what is
// not secret (a public key, a proof).
func createPublic(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
}

// proofExit maps a failure of a checkpoint or proof to its exit status: 4
// for one that does not verify, 2 for a log without the checkpoint asked
// for; other errors keep theirs.
func proofExit(err error) error {
	switch {
	case errors.Is(err, audit.ErrBadCheckpoint), errors.Is(err, audit.ErrBadProof):
		return &ExitError{Code: exitVerifyFailed, Err: err}
	case errors.Is(err, audit.ErrNoCheckpoint):
		return &ExitError{Code: 2, Err: err}
	}
	return err
}

// checkpointJSON is the --json form of a checkpoint.
type checkpointJSON struct {
	Origin     string `json:"origin"`
	TreeSize   uint64 `json:"tree_size"`
	Root       string `json:"root"`
	Checkpoint string `json:"checkpoint"`
}

func toCheckpointJSON(ck *audit.Checkpoint) checkpointJSON {
	return checkpointJSON{Origin: ck.Origin, TreeSize: ck.Size, Root: base64.StdEncoding.EncodeToString(ck.Root[:]), Checkpoint: string(ck.Note)}
}

func newAuditCheckpointCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use: "checkpoint DIR",
		Example: `  vramseal audit checkpoint vramseal-data/audit > checkpoint-$(date +%F)   # keep copies off the machine
  vramseal audit checkpoint vramseal-data/audit --json`,
		Short: "Print the latest signed checkpoint (C2SP tlog-checkpoint)",
		Long: `Print the newest signed checkpoint of the audit log in DIR: the log's
origin, the number of records in its Merkle tree and the tree's root hash,
signed with the log's checkpoint key. Keep copies off the machine: with them
an auditor can prove later that the log was only appended to
(audit prove --consistency).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ck, err := audit.LatestCheckpoint(args[0], audit.ReadOptions{})
			if err != nil {
				return proofExit(fmt.Errorf("audit checkpoint: %w", err))
			}
			if asJSON {
				return json.NewEncoder(cmd.OutOrStdout()).Encode(toCheckpointJSON(ck))
			}
			_, err = cmd.OutOrStdout().Write(ck.Note)
			return err
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

// parseCount parses a record count or sequence number argument.
func parseCount(what, s string) (uint64, error) {
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil || n == 0 {
		return 0, &ExitError{Code: 2, Err: fmt.Errorf("%s %q: want a number from 1", what, s)}
	}
	return n, nil
}

func newAuditProveCmd() *cobra.Command {
	var (
		size, consistency string
		outFile           string
		asJSON            bool
	)
	cmd := &cobra.Command{
		Use: "prove DIR SEQ | prove DIR --consistency OLD_SIZE",
		Example: `  vramseal audit prove vramseal-data/audit 42 > r42.tlog-proof
  vramseal audit prove vramseal-data/audit 42 --size 1000 --out r42-1000.tlog-proof
  vramseal audit prove vramseal-data/audit --consistency 1000 > since-1000.proof`,
		Short: "Write an inclusion or consistency proof against a signed checkpoint",
		Long: `Write a proof that record SEQ of the audit log in DIR is in the tree of the
latest signed checkpoint (or of the checkpoint of --size records), in C2SP
tlog-proof form with the record carried as its extra data; or, with
--consistency OLD_SIZE, a proof that the latest checkpoint (or --size)
extends the checkpoint of OLD_SIZE records. Check either offline with
audit check-proof and the log's public key. Needs no lock.

Exit status: 0 written; 2 bad input (no such record, no checkpoint of that
size, DIR missing); 4 the log's tree file disagrees with its signed
checkpoint (run audit verify); 1 any other failure.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if consistency != "" {
				return cobra.ExactArgs(1)(cmd, args)
			}
			return cobra.ExactArgs(2)(cmd, args)
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			var newSize uint64
			var err error
			if size != "" {
				if newSize, err = parseCount("audit prove: --size", size); err != nil {
					return err
				}
			}
			var proof []byte
			out := map[string]any{}
			if consistency != "" {
				old, err := parseCount("audit prove: --consistency", consistency)
				if err != nil {
					return err
				}
				p, err := audit.ProveConsistency(cmd.Context(), args[0], old, newSize, audit.ReadOptions{})
				if err != nil {
					return proofExit(fmt.Errorf("audit prove: %w", err))
				}
				proof = p.Encode()
				out["kind"], out["old_size"], out["tree_size"] = "consistency", p.OldSize, p.NewSize
			} else {
				seq, err := parseCount("audit prove: SEQ", args[1])
				if err != nil {
					return err
				}
				p, err := audit.ProveInclusion(cmd.Context(), args[0], seq, newSize, audit.ReadOptions{})
				if err != nil {
					return proofExit(fmt.Errorf("audit prove: %w", err))
				}
				proof = p.Encode()
				out["kind"], out["seq"], out["index"] = "inclusion", seq, p.Index
			}
			if outFile != "" {
				f, err := createPublic(outFile)
				if err != nil {
					return fmt.Errorf("audit prove: --out: %w", err)
				}
				if err := finishPrivate(f, proof); err != nil {
					return fmt.Errorf("audit prove: --out: %w", err)
				}
				out["file"] = outFile
			}
			w := cmd.OutOrStdout()
			switch {
			case asJSON:
				out["proof"] = string(proof)
				return json.NewEncoder(w).Encode(out)
			case outFile != "":
				_, err = fmt.Fprintf(w, "%s proof written to %s\n", out["kind"], safeText(outFile))
			default:
				_, err = w.Write(proof)
			}
			return err
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&size, "size", "", "prove against the signed checkpoint of this many records (default: the latest)")
	fl.StringVar(&consistency, "consistency", "", "prove that the checkpoint extends the checkpoint of OLD_SIZE records")
	fl.StringVar(&outFile, "out", "", "write the proof to this new file instead of stdout (.tlog-proof)")
	fl.BoolVar(&asJSON, "json", false, "print JSON (with the proof)")
	return cmd
}

func newAuditCheckProofCmd() *cobra.Command {
	var (
		pubFile string
		asJSON  bool
	)
	cmd := &cobra.Command{
		Use: "check-proof --public-key FILE PROOF [RECORD | OLD_CHECKPOINT]",
		Example: `  vramseal audit check-proof --public-key audit.key.pub r42.tlog-proof
  vramseal audit check-proof --public-key audit.key.pub r42.tlog-proof record-42.ndjson
  vramseal audit check-proof --public-key audit.key.pub since-1000.proof checkpoint-2026-12-01`,
		Short: "Verify an inclusion or consistency proof offline with the public key",
		Long: `Verify PROOF, written by audit prove, with the log's checkpoint public key
only: the checkpoint's signature and that the record (the file RECORD,
holding the record's line, or else the record the proof carries) is the
one at its sequence number in the signed tree. For a consistency proof:
both checkpoints' signatures and that the newer tree extends the older one;
OLD_CHECKPOINT, a checkpoint kept from earlier (audit checkpoint), must
then be the proof's older one.

Exit status:
  0  the proof verifies
  1  any other failure, such as an I/O error
  2  bad input: missing or malformed files or arguments
  4  the proof does not verify: a signature that is not the key's (forged,
     altered or another key), a record that is not the one in the tree, or
     trees that are not consistent (the log was rewritten)`,
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if pubFile == "" {
				return &ExitError{Code: 2, Err: errors.New("audit check-proof: --public-key FILE is required")}
			}
			pk, err := readPublicKey(pubFile)
			if err != nil {
				return fmt.Errorf("audit check-proof: %w", err)
			}
			b, err := readArgFile(args[0], "a proof", maxProofFileBytes)
			if err != nil {
				return fmt.Errorf("audit check-proof: %w", err)
			}
			var extra []byte
			if len(args) == 2 {
				if extra, err = readArgFile(args[1], "a record or checkpoint", maxProofFileBytes); err != nil {
					return fmt.Errorf("audit check-proof: %w", err)
				}
			}
			w := cmd.OutOrStdout()
			fail := func(err error) error {
				err = proofExit(fmt.Errorf("audit check-proof: %w", err))
				if ExitCode(err) == exitVerifyFailed && !asJSON {
					fmt.Fprintf(w, "FAIL: %s\n", terminalLine(errors.Unwrap(err).Error()))
				}
				if ExitCode(err) == 1 {
					return &ExitError{Code: 2, Err: err} // malformed input
				}
				return err
			}
			if audit.IsConsistencyProof(b) {
				p, err := audit.ParseConsistencyProof(b)
				if err != nil {
					return fail(err)
				}
				old, cur, err := audit.CheckConsistency(p, pk)
				if err != nil {
					return fail(err)
				}
				if extra != nil {
					held, err := audit.ParseCheckpoint(extra, pk)
					if err != nil {
						return fail(fmt.Errorf("%s: %w", safeText(args[1]), err))
					}
					if held.Size != old.Size || held.Root != old.Root {
						return fail(fmt.Errorf("%w: %s is the checkpoint of %d records, the proof starts from one of %d records", audit.ErrBadProof, safeText(args[1]), held.Size, old.Size))
					}
				}
				if asJSON {
					return json.NewEncoder(w).Encode(map[string]any{"ok": true, "kind": "consistency",
						"old": toCheckpointJSON(old), "new": toCheckpointJSON(cur)})
				}
				_, err = fmt.Fprintf(w, "OK: the tree of %d records extends the tree of %d records; both checkpoints are signed by %s\n",
					cur.Size, old.Size, pk.String())
				return err
			}
			p, err := audit.ParseInclusionProof(b)
			if err != nil {
				return fail(err)
			}
			ck, r, err := audit.CheckInclusion(p, pk, extra)
			if err != nil {
				return fail(err)
			}
			if asJSON {
				return json.NewEncoder(w).Encode(map[string]any{"ok": true, "kind": "inclusion", "seq": r.Seq,
					"type": r.Type, "time": r.Time, "record": string(r.Line), "checkpoint": toCheckpointJSON(ck)})
			}
			_, err = fmt.Fprintf(w, "OK: record seq %d (%s, %s) is in the tree of %d records signed by %s\n",
				r.Seq, appendCell(nil, r.Type), r.Time.UTC().Format("2006-01-02T15:04:05.000Z"), ck.Size, pk.String())
			return err
		},
	}
	cmd.Flags().StringVar(&pubFile, "public-key", "", "the log's checkpoint public key file (required)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}
