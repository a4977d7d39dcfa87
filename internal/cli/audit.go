package cli

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/vramseal/vramseal/audit"
)

// newAuditCmd returns `vramseal audit`: init, verify, query, tail, prune,
// checkpoint, prove, check-proof.
func newAuditCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use: "audit",
		Example: `  vramseal audit init /var/lib/vramseal/audit --verification-key ./audit.key
  vramseal audit verify /var/lib/vramseal/audit --verification-key ./audit.key
  vramseal audit tail -f /var/lib/vramseal/audit`,
		Short: "Create, verify and read the tamper-evident audit log",
	}
	cmd.AddCommand(newAuditInitCmd(), newAuditVerifyCmd(), newAuditQueryCmd(), newAuditTailCmd(), newAuditPruneCmd(),
		newAuditCheckpointCmd(), newAuditProveCmd(), newAuditCheckProofCmd())
	return cmd
}

func newAuditInitCmd() *cobra.Command {
	var (
		keyFile, pubFile string
		asJSON           bool
	)
	cmd := &cobra.Command{
		Use: "init DIR --verification-key FILE [--public-key FILE]",
		Example: `  # before the first serve, to hold the key yourself from the start:
  vramseal audit init vramseal-data/audit --verification-key ~/audit-verification.key`,
		Short: "Create an audit log, its verification key and its checkpoint key",
		Long: `Create the audit log directory DIR (mode 0700) with a fresh random key.
The verification key is written to FILE (mode 0600, must not exist): move it
off this machine. Whoever holds it can verify, and forge, the whole log; the
machine keeps only a key that evolves one way, so whoever takes the machine
later cannot rewrite earlier epochs.

The log also gets an Ed25519 checkpoint key: its private half stays in DIR
(checkpoint.key) and signs the log's checkpoints; its public half is
printed and written to --public-key (default FILE.pub, must not exist).
The public key can verify the log's structure, tree and checkpoints and
check proofs (audit verify --public-key, audit check-proof), and forge
nothing: hand it to auditors.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if keyFile == "" {
				return &ExitError{Code: 2, Err: errors.New("audit init: --verification-key FILE is required")}
			}
			if pubFile == "" {
				pubFile = keyFile + ".pub"
			}
			pf, err := createPublic(pubFile)
			if err != nil {
				err = fmt.Errorf("audit init: public key: %w", err)
				if errors.Is(err, fs.ErrExist) {
					return &ExitError{Code: 2, Err: err}
				}
				return err
			}
			vk, err := initAudit(args[0], keyFile, writeKeyFile)
			if err != nil {
				pf.Close()
				os.Remove(pubFile)
				return err
			}
			out := cmd.OutOrStdout()
			if !asJSON {
				fmt.Fprintf(out, "created audit log %s in %s\nverification key written to %s: move it off this machine\n",
					vk.LogID(), safeText(args[0]), safeText(keyFile))
			}
			pk, err := writeCheckpointPub(pf, args[0])
			if err != nil {
				return fmt.Errorf("audit init: %w", err)
			}
			if asJSON {
				return writeJSON(out, initJSON{LogID: vk.LogID(), Dir: args[0], VerificationKey: keyFile, PublicKeyFile: pubFile, PublicKey: pk.String()})
			}
			fmt.Fprintln(out, publicKeyLine(pubFile, pk))
			return nil
		},
	}
	cmd.Flags().StringVar(&keyFile, "verification-key", "", "file to write the verification key to (required)")
	cmd.Flags().StringVar(&pubFile, "public-key", "", "file to write the checkpoint public key to (default: the verification key file + .pub)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

// initAudit creates the audit log dir and writes its verification key to
// keyFile so that the log never exists without its key: a log whose key is
// lost can never be verified again. The key file is created first (new,
// 0600), so a bad, unwritable or existing key path fails before the log
// exists. Once [audit.Init] has created the log, a failure to make the key
// durable with writeKey removes the log again (see [undoInit]) and the
// error says what is left.
func initAudit(dir, keyFile string, writeKey func(f *os.File, data []byte) error) (*audit.VerificationKey, error) {
	f, err := createPrivate(keyFile)
	qdir, qkey := safeText(dir), safeText(keyFile)
	if err != nil {
		err = fmt.Errorf("audit init: verification key: %w", quotePathError(err))
		if errors.Is(err, fs.ErrExist) {
			// A key file is never overwritten; naming one that exists is bad input.
			return nil, &ExitError{Code: 2, Err: err}
		}
		return nil, err
	}
	_, serr := os.Lstat(dir)
	existed := serr == nil
	vk, err := audit.Init(dir, audit.Options{})
	if err != nil {
		f.Close()
		os.Remove(keyFile)
		return nil, err
	}
	data := vk.Encode()
	defer clear(data)
	werr := writeKey(f, data)
	if werr == nil {
		return vk, nil
	}
	if uerr := undoInit(dir, existed); uerr != nil {
		if _, err := os.Stat(keyFile); err == nil {
			return nil, fmt.Errorf("audit init: write verification key %s: %w; removing the new audit log in %s failed too (%v): "+
				"keep %s, it may be the only copy of the key of log %s", qkey, werr, qdir, uerr, qkey, vk.LogID())
		}
		return nil, fmt.Errorf("audit init: write verification key %s: %w; removing the new audit log in %s failed too (%v): "+
			"its key is lost, so it can never be verified: delete it by hand and run init again", qkey, werr, qdir, uerr)
	}
	if err := os.Remove(keyFile); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("audit init: write verification key %s: %w; removed the new audit log in %s, but not the key file: %v", qkey, werr, qdir, err)
	}
	return nil, fmt.Errorf("audit init: write verification key %s: %w; removed the new audit log in %s: nothing was created", qkey, werr, qdir)
}

// writeCheckpointPub writes the checkpoint public key of the new log in
// dir to pf, a new file from [createPublic], and returns the key. On
// failure pf is removed, and the error says where the key still is.
func writeCheckpointPub(pf *os.File, dir string) (*audit.PublicKey, error) {
	pk, err := audit.ReadPublicKey(dir, nil)
	if err == nil {
		err = finishPrivate(pf, pk.Encode())
	} else {
		pf.Close()
		os.Remove(pf.Name())
	}
	if err != nil {
		return nil, fmt.Errorf("the log and its verification key were created, but the checkpoint public key was not written to %s (it is also in %s): %w",
			safeText(pf.Name()), safeText(filepath.Join(dir, "checkpoint.pub")), err)
	}
	return pk, nil
}

// publicKeyLine tells where the checkpoint public key pk was written, and
// the key itself, on two lines.
func publicKeyLine(path string, pk *audit.PublicKey) string {
	return fmt.Sprintf("checkpoint public key written to %s: give it to auditors\n  %s", safeText(path), pk)
}

// writeKeyFile writes the verification key to the new file f, makes it
// durable and closes it, then syncs its directory so that its name
// survives a crash too. On failure the file may remain.
func writeKeyFile(f *os.File, data []byte) error {
	if err := finishPrivate(f, data); err != nil {
		return err
	}
	d, err := os.Open(filepath.Dir(f.Name()))
	if err != nil {
		return err
	}
	return errors.Join(d.Sync(), d.Close())
}

// undoInit removes what [audit.Init] created in dir: every entry, since
// Init refuses a directory that is not empty, and dir itself unless it
// existed before (existed). It removes nothing recursively.
func undoInit(dir string, existed bool) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range ents {
		errs = append(errs, os.Remove(filepath.Join(dir, e.Name())))
	}
	if !existed {
		errs = append(errs, os.Remove(dir))
	}
	return errors.Join(errs...)
}

// maxKeyFileBytes bounds what readKey reads: a key file is 117 bytes.
const maxKeyFileBytes = 4 << 10

// readKey reads the verification key file at path, or returns nil for "".
// A file that is missing or is not a verification key is bad input (exit
// status 2); one that cannot be read is another failure (1).
func readKey(path string) (*audit.VerificationKey, error) {
	if path == "" {
		return nil, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, quotePathError(err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxKeyFileBytes+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxKeyFileBytes {
		return nil, &ExitError{Code: 2, Err: fmt.Errorf("%s: larger than %d bytes: not a verification key", safeText(path), maxKeyFileBytes)}
	}
	vk, err := audit.ParseVerificationKey(b)
	if err != nil {
		return nil, &ExitError{Code: 2, Err: fmt.Errorf("%s: %w", safeText(path), err)}
	}
	return vk, nil
}

// exitVerifyFailed is the exit status of audit verify for a log that fails
// verification: the integrity status of [ExitCode].
const exitVerifyFailed = 4

func newAuditVerifyCmd() *cobra.Command {
	var (
		keyFile  string
		pubFiles []string
		replica  replicaFlags
		asJSON   bool
	)
	cmd := &cobra.Command{
		Use: "verify {DIR | --from nats://HOST:PORT [--node NODE] [--local DIR]} [--verification-key FILE] [--public-key FILE]",
		Example: `  vramseal audit verify vramseal-data/audit --verification-key ~/audit-verification.key
  vramseal audit verify vramseal-data/audit --public-key ~/audit-verification.key.pub   # an auditor: no secret
  vramseal audit verify vramseal-data/audit    # links, epochs, checksums; no MACs
  vramseal audit verify --from nats://nats-1:4222 --public-key gpu-1.pub --public-key gpu-2.pub
  vramseal audit verify --from nats://nats-1:4222 --node gpu-1 --local /var/lib/vramseal/audit --public-key gpu-1.pub`,
		Short: "Verify every record, link, epoch, checksum, the manifest and the signed checkpoints",
		Long: `Verify the audit log in DIR, streaming. With the verification key every
MAC is checked too; without it, everything else, and the output says so.
With the checkpoint public key (written by audit init), the Merkle tree over
the records is rebuilt and every signed checkpoint is checked: its
signature, that its root is the tree's at its size (so each checkpoint is
consistent with the ones before it), and that every closed segment ends
with one. The public key is no secret, so an auditor can run this anywhere.

With --from, verify instead the copies that serve --audit-replicate shipped
to a NATS JetStream stream: for each node (or the one --node names), every
message must be the next record or checkpoint of that node's log (no gap,
duplicate, record of another node, forged checkpoint or checkpoint of
another key), and the copy is verified as a log, with the public keys given
(repeat --public-key, one per node's log). With --local DIR the copy is also
compared with that node's local log: a local log that was truncated, rolled
back, forked or rewritten is named with the first sequence number where the
copies differ.

Exit status:
  0  everything verified
  1  any other failure, such as an I/O error
  2  bad input: wrong arguments or flags, DIR does not exist, the key file
     does not exist or is not a verification key
  4  the log fails verification: a record or file was modified, deleted,
     inserted, reordered or duplicated, the manifest is missing or does not
     match, a signed checkpoint does not verify or disagrees with the
     records, or the log is not the one the key belongs to`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(replica.from) > 0 {
				if len(args) > 0 || keyFile != "" {
					return &ExitError{Code: 2, Err: errors.New("audit verify --from takes no DIR and no --verification-key: use --local DIR and --public-key")}
				}
				return verifyReplicas(cmd, replica, pubFiles)
			}
			if len(args) != 1 {
				return &ExitError{Code: 2, Err: errors.New("audit verify: give the log's DIR, or --from nats://HOST:PORT")}
			}
			if replica.node != "" || replica.local != "" {
				return &ExitError{Code: 2, Err: errors.New("audit verify: --node and --local need --from")}
			}
			if len(pubFiles) > 1 {
				return &ExitError{Code: 2, Err: errors.New("audit verify DIR: one --public-key")}
			}
			vk, err := readKey(keyFile)
			if err != nil {
				return fmt.Errorf("audit verify: verification key: %w", err)
			}
			var pk *audit.PublicKey
			if len(pubFiles) == 1 {
				if pk, err = readPublicKey(pubFiles[0]); err != nil {
					return fmt.Errorf("audit verify: %w", err)
				}
			}
			out := cmd.OutOrStdout()
			rep, err := audit.Verify(cmd.Context(), args[0], audit.VerifyOptions{Key: vk, PublicKey: pk})
			var ve *audit.VerifyError
			if errors.As(err, &ve) && asJSON {
				return &ExitError{Code: exitVerifyFailed, Err: err}
			}
			if errors.As(err, &ve) {
				fmt.Fprintf(out, "FAIL: %s\n  file:    %s\n", ve.Problem, safeText(ve.File))
				if ve.Line > 0 {
					fmt.Fprintf(out, "  line:    %d (offset %d)\n", ve.Line, ve.Offset)
				}
				if ve.Seq > 0 {
					fmt.Fprintf(out, "  seq:     %d\n", ve.Seq)
				}
				fmt.Fprintf(out, "  detail:  %s\n", terminalLine(fmt.Sprint(ve.Err)))
				fmt.Fprintf(out, "checked before the failure: %d records in %d segments\n", rep.Records, rep.Segments)
				return &ExitError{Code: exitVerifyFailed, Err: err}
			}
			if errors.Is(err, audit.ErrWrongKey) {
				// Either the wrong key or a log replaced wholesale: a
				// verification failure either way, never "bad input" that a
				// monitoring script might shrug off.
				if asJSON {
					return &ExitError{Code: exitVerifyFailed, Err: err}
				}
				fmt.Fprintf(out, "FAIL: the log in %s is not the log of this key\n", safeText(args[0]))
				return &ExitError{Code: exitVerifyFailed, Err: err}
			}
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(out, toVerifyJSON(rep))
			}
			fmt.Fprintf(out, "OK: %d records (seq %d..%d), %d segments, %d epochs (%d..%d)",
				rep.Records, rep.FirstSeq, rep.LastSeq, rep.Segments, rep.Epochs, rep.FirstEpoch, rep.LastEpoch)
			if rep.Pruned > 0 {
				fmt.Fprintf(out, ", %d segments pruned by retention", rep.Pruned)
			}
			fmt.Fprintln(out)
			if rep.MACsChecked {
				fmt.Fprintln(out, "MACs: checked with the verification key")
			} else {
				fmt.Fprintln(out, "MACs: NOT checked (no --verification-key): links, sequence, epochs, times, checksums and manifest only")
			}
			switch {
			case rep.Version < 2:
				fmt.Fprintf(out, "epochs: format version %d: epochs are not bound to a time (a key taken from the machine could relabel old records; start a new log for the time bound)\n", rep.Version)
			case rep.MACsChecked:
				fmt.Fprintf(out, "epochs: every record lies in its epoch's window; %d epoch anchors checked with the verification key\n", rep.Anchors)
			default:
				fmt.Fprintf(out, "epochs: every record lies in its epoch's window; %d epoch anchors in order, their MACs NOT checked (no --verification-key)\n", rep.Anchors)
			}
			if rep.CheckpointsChecked && rep.Checkpoints == 0 {
				fmt.Fprintln(out, "checkpoints: none yet (no records)")
			} else if rep.CheckpointsChecked {
				fmt.Fprintf(out, "checkpoints: %d signed checkpoints checked with the public key, the last of %d records", rep.Checkpoints, rep.SignedSize)
				if rep.Unsigned > 0 {
					fmt.Fprintf(out, "; %d newer records are not signed yet", rep.Unsigned)
				}
				fmt.Fprintln(out)
			} else {
				fmt.Fprintln(out, "checkpoints: NOT checked (no --public-key)")
			}
			if rep.TornBytes > 0 {
				fmt.Fprintf(out, "note: %d bytes of an unfinished last line in the live segment were not checked\n", rep.TornBytes)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&keyFile, "verification-key", "", "verification key file written by audit init")
	cmd.Flags().StringArrayVar(&pubFiles, "public-key", nil, "checkpoint public key file written by audit init (with --from: one per log)")
	replica.add(cmd)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func newAuditQueryCmd() *cobra.Command {
	var (
		types, sevs, fields []string
		minSev, since       string
		until, cid, format  string
		asJSON              bool
	)
	cmd := &cobra.Command{
		Use: "query DIR",
		Example: `  vramseal audit query vramseal-data/audit --type seal_verification_failed --since 24h
  vramseal audit query vramseal-data/audit --field shard_id=llama-tp0 --format table`,
		Short: "Select records by type, severity, time, field or correlation ID",
		Long: `Stream the records of the audit log in DIR that match every given filter.
--format ndjson (default) prints the records' exact lines (still verifiable);
--format table prints one escaped line per record; --json is --format
ndjson. Query does not verify: run audit verify for that.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			f := audit.Filter{Types: types, CorrelationID: cid}
			for _, s := range sevs {
				sv, err := audit.ParseSeverity(s)
				if err != nil {
					return &ExitError{Code: 2, Err: fmt.Errorf("audit query: --severity: %w", err)}
				}
				f.Severities = append(f.Severities, sv)
			}
			if minSev != "" {
				sv, err := audit.ParseSeverity(minSev)
				if err != nil {
					return &ExitError{Code: 2, Err: fmt.Errorf("audit query: --min-severity: %w", err)}
				}
				f.MinSeverity = sv
			}
			var err error
			if f.Since, err = parseTime(since); err != nil {
				return &ExitError{Code: 2, Err: fmt.Errorf("audit query: --since: %w", err)}
			}
			if f.Until, err = parseTime(until); err != nil {
				return &ExitError{Code: 2, Err: fmt.Errorf("audit query: --until: %w", err)}
			}
			for _, kv := range fields {
				k, v, ok := strings.Cut(kv, "=")
				if !ok || k == "" {
					return &ExitError{Code: 2, Err: fmt.Errorf("audit query: --field %q: want KEY=VALUE", kv)}
				}
				f.Fields = append(f.Fields, audit.FieldMatch{Key: k, Value: v})
			}
			if asJSON {
				if cmd.Flags().Changed("format") && format != "ndjson" {
					return &ExitError{Code: 2, Err: fmt.Errorf("audit query: --json prints the records as NDJSON: it cannot be combined with --format %s", safeText(format))}
				}
				format = "ndjson"
			}
			w := bufio.NewWriter(cmd.OutOrStdout())
			defer w.Flush()
			var emit func(*audit.Record) error
			switch format {
			case "ndjson":
				emit = func(r *audit.Record) error {
					w.Write(r.Line)
					return w.WriteByte('\n')
				}
			case "table":
				tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
				defer tw.Flush()
				fmt.Fprintln(tw, "TIME\tSEVERITY\tTYPE\tSEQ\tCID\tFIELDS")
				var buf []byte
				emit = func(r *audit.Record) error {
					buf = tableRow(buf[:0], r)
					_, err := tw.Write(buf)
					return err
				}
			default:
				return &ExitError{Code: 2, Err: fmt.Errorf("audit query: --format %q: want ndjson or table", format)}
			}
			return audit.Query(cmd.Context(), args[0], f, audit.ReadOptions{}, emit)
		},
	}
	fl := cmd.Flags()
	fl.StringSliceVar(&types, "type", nil, "event type (repeatable)")
	fl.StringSliceVar(&sevs, "severity", nil, "severity: critical, high, medium, low, info (repeatable)")
	fl.StringVar(&minSev, "min-severity", "", "lowest severity to show")
	fl.StringVar(&since, "since", "", "first time (RFC 3339, or a duration such as 24h back from now)")
	fl.StringVar(&until, "until", "", "end time, exclusive (RFC 3339 or duration back from now)")
	fl.StringVar(&cid, "cid", "", "correlation ID")
	fl.StringArrayVar(&fields, "field", nil, "field value KEY=VALUE, e.g. shard_id=abc (repeatable)")
	fl.StringVar(&format, "format", "ndjson", "output: ndjson or table")
	fl.BoolVar(&asJSON, "json", false, "print the records' exact lines, NDJSON (the same as --format ndjson)")
	return cmd
}

// tableRow renders r as one row of the query table, each cell holding
// exactly its value: time, severity, type, sequence number, correlation ID
// (empty if none), then the worker and the fields as space-separated
// key=value pairs, the values as [audit.Field.AppendHuman] writes them
// (sizes and "_us" durations in units). Every string goes through
// appendCell or AppendHuman, which quote alike, so no cell holds a tab,
// newline or any other character that would move the columns or that a
// terminal would interpret.
func tableRow(dst []byte, r *audit.Record) []byte {
	dst = r.Time.UTC().AppendFormat(dst, "2006-01-02T15:04:05.000Z")
	dst = append(dst, '\t')
	dst = appendCell(dst, r.Severity.String())
	dst = append(dst, '\t')
	dst = appendCell(dst, r.Type)
	dst = append(dst, '\t')
	dst = strconv.AppendUint(dst, r.Seq, 10)
	dst = append(dst, '\t')
	if r.CorrelationID != "" {
		dst = appendCell(dst, r.CorrelationID)
	}
	dst = append(dst, '\t')
	sep := ""
	if r.Worker != "" {
		dst = append(dst, "worker="...)
		dst = appendCell(dst, r.Worker)
		sep = " "
	}
	for _, f := range r.Fields {
		dst = append(dst, sep...)
		sep = " "
		dst = appendCell(dst, f.Key)
		dst = append(dst, '=')
		dst = f.AppendHuman(dst)
	}
	return append(dst, '\n')
}

// appendCell appends s bare if it is non-empty and made only of ASCII
// letters, digits and _-.:/@+, else quoted by [strconv.AppendQuote], which
// escapes every control, format (bidirectional) and non-printable
// character, tabs, newlines and invalid UTF-8 (so also the tabwriter's
// escape byte 0xff). Spaces stay, inside the quotes.
func appendCell(dst []byte, s string) []byte {
	plain := s != ""
	for i := 0; i < len(s) && plain; i++ {
		c := s[i]
		plain = c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
			c == '_' || c == '-' || c == '.' || c == ':' || c == '/' || c == '@' || c == '+'
	}
	if plain {
		return append(dst, s...)
	}
	return strconv.AppendQuote(dst, s)
}

func parseTime(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if d, err := parseDuration(s); err == nil {
		return time.Now().Add(-d), nil
	}
	return time.Parse(time.RFC3339Nano, s)
}

// parseDuration accepts Go durations and whole days ("2555d").
func parseDuration(s string) (time.Duration, error) {
	if n, ok := strings.CutSuffix(s, "d"); ok {
		d, err := strconv.ParseUint(n, 10, 32)
		if err != nil {
			return 0, fmt.Errorf("bad duration %q", s)
		}
		return time.Duration(d) * 24 * time.Hour, nil
	}
	return time.ParseDuration(s)
}

func newAuditTailCmd() *cobra.Command {
	var (
		follow bool
		n      int
		jsonl  bool
	)
	cmd := &cobra.Command{
		Use: "tail [-f] [-n N] DIR",
		Example: `  vramseal audit tail vramseal-data/audit
  vramseal audit tail -f -n 0 vramseal-data/audit`,
		Short: "Show the newest records for people (escaped)",
		Long: `Show the last N records of the audit log in DIR, one line each, and with -f
keep showing new ones. Control characters, ANSI escapes and bidirectional
overrides in values are shown escaped, never interpreted by the terminal.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if n < 0 {
				return &ExitError{Code: 2, Err: fmt.Errorf("audit tail: -n %d: want 0 or more records", n)}
			}
			out := cmd.OutOrStdout()
			var buf []byte
			return audit.Tail(cmd.Context(), args[0], n, follow, audit.ReadOptions{}, func(r *audit.Record) error {
				if jsonl {
					buf = append(append(buf[:0], r.Line...), '\n')
				} else {
					buf = append(r.AppendText(buf[:0]), '\n')
				}
				_, err := out.Write(buf)
				return err
			})
		},
	}
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep showing new records")
	cmd.Flags().IntVarP(&n, "lines", "n", 10, "how many of the newest records to show first")
	cmd.Flags().BoolVar(&jsonl, "json", false, "print the records' exact lines instead, NDJSON")
	return cmd
}

func newAuditPruneCmd() *cobra.Command {
	var (
		retain string
		asJSON bool
	)
	cmd := &cobra.Command{
		Use: "prune DIR --retain 2555d",
		Example: `  # with the daemon stopped (it holds the log's lock):
  vramseal audit prune vramseal-data/audit --retain 2555d`,
		Short: "Delete closed, checked segments older than the retention period",
		Long: `Delete the closed segments of the audit log in DIR whose newest record is
older than --retain (days such as 2555d, or a Go duration). Each is checked
(checksum, records, links) first; the manifest keeps its last MAC and
checksum; the deletion is recorded in the log. Needs the directory lock:
stop the daemon first, or set its retention instead.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			d, err := parseDuration(retain)
			if err != nil || d <= 0 {
				return &ExitError{Code: 2, Err: fmt.Errorf("audit prune: --retain %q: want a positive duration such as 2555d", retain)}
			}
			l, err := audit.Open(args[0], audit.Options{Service: "vramseal"})
			if errors.Is(err, audit.ErrNotInitialized) {
				// No log in DIR: bad input, as for query and tail.
				return &ExitError{Code: 2, Err: err}
			}
			if err != nil {
				return err
			}
			rep, err := l.Prune(cmd.Context(), time.Now().Add(-d))
			if cerr := l.Close(cmd.Context()); err == nil {
				err = cerr
			}
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(cmd.OutOrStdout(), pruneJSON{PrunedSegments: rep.Segments, PrunedRecords: rep.Records, ThroughSeq: rep.ThroughSeq})
			}
			fmt.Fprintf(cmd.OutOrStdout(), "pruned %d segments (%d records); pruned through seq %d\n", rep.Segments, rep.Records, rep.ThroughSeq)
			return nil
		},
	}
	cmd.Flags().StringVar(&retain, "retain", "", "retention period, e.g. 2555d (required)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}
