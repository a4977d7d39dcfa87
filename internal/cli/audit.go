package cli

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/vramseal/vramseal/audit"
)

// newAuditCmd returns `vramseal audit`: init, verify, query, tail, prune.
func newAuditCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "audit",
		Short: "Create, verify and read the tamper-evident audit log",
	}
	cmd.AddCommand(newAuditInitCmd(), newAuditVerifyCmd(), newAuditQueryCmd(), newAuditTailCmd(), newAuditPruneCmd())
	return cmd
}

func newAuditInitCmd() *cobra.Command {
	var keyFile string
	cmd := &cobra.Command{
		Use:   "init DIR --verification-key FILE",
		Short: "Create an audit log and its verification key",
		Long: `Create the audit log directory DIR (mode 0700) with a fresh random key.
The verification key is written to FILE (mode 0600, must not exist): move it
off this machine. Whoever holds it can verify, and forge, the whole log; the
machine keeps only a key that evolves one way, so whoever takes the machine
later cannot rewrite earlier epochs.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if keyFile == "" {
				return errors.New("audit init: --verification-key FILE is required")
			}
			f, err := createPrivate(keyFile)
			if err != nil {
				return fmt.Errorf("audit init: %w", err)
			}
			vk, err := audit.Init(args[0], audit.Options{})
			if err != nil {
				f.Close()
				os.Remove(keyFile)
				return err
			}
			if err := finishPrivate(f, vk.Encode()); err != nil {
				return fmt.Errorf("audit init: write verification key: %w", err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "created audit log %s in %s\nverification key written to %s: move it off this machine\n",
				vk.LogID(), args[0], keyFile)
			return nil
		},
	}
	cmd.Flags().StringVar(&keyFile, "verification-key", "", "file to write the verification key to (required)")
	return cmd
}

func readKey(path string) (*audit.VerificationKey, error) {
	if path == "" {
		return nil, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return audit.ParseVerificationKey(b)
}

func newAuditVerifyCmd() *cobra.Command {
	var keyFile string
	cmd := &cobra.Command{
		Use:   "verify DIR [--verification-key FILE]",
		Short: "Verify every record, link, epoch, checksum and the manifest",
		Long: `Verify the audit log in DIR, streaming. With the verification key every
MAC is checked too; without it, everything else, and the output says so.
Exit status 0 only when everything verifies; 2 when the log fails
verification; 1 for other errors.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			vk, err := readKey(keyFile)
			if err != nil {
				return fmt.Errorf("audit verify: verification key: %w", err)
			}
			out := cmd.OutOrStdout()
			rep, err := audit.Verify(cmd.Context(), args[0], audit.VerifyOptions{Key: vk})
			var ve *audit.VerifyError
			if errors.As(err, &ve) {
				fmt.Fprintf(out, "FAIL: %s\n  file:    %s\n", ve.Problem, ve.File)
				if ve.Line > 0 {
					fmt.Fprintf(out, "  line:    %d (offset %d)\n", ve.Line, ve.Offset)
				}
				if ve.Seq > 0 {
					fmt.Fprintf(out, "  seq:     %d\n", ve.Seq)
				}
				fmt.Fprintf(out, "  detail:  %v\n", ve.Err)
				fmt.Fprintf(out, "checked before the failure: %d records in %d segments\n", rep.Records, rep.Segments)
				return &ExitError{Code: 2, Err: err}
			}
			if err != nil {
				return err
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
			if rep.TornBytes > 0 {
				fmt.Fprintf(out, "note: %d bytes of an unfinished last line in the live segment were not checked\n", rep.TornBytes)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&keyFile, "verification-key", "", "verification key file written by audit init")
	return cmd
}

func newAuditQueryCmd() *cobra.Command {
	var (
		types, sevs, fields []string
		minSev, since       string
		until, cid, format  string
	)
	cmd := &cobra.Command{
		Use:   "query DIR",
		Short: "Select records by type, severity, time, field or correlation ID",
		Long: `Stream the records of the audit log in DIR that match every given filter.
--format ndjson (default) prints the records' exact lines (still verifiable);
--format table prints one escaped line per record. Query does not verify:
run audit verify for that.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			f := audit.Filter{Types: types, CorrelationID: cid}
			for _, s := range sevs {
				sv, err := audit.ParseSeverity(s)
				if err != nil {
					return err
				}
				f.Severities = append(f.Severities, sv)
			}
			if minSev != "" {
				sv, err := audit.ParseSeverity(minSev)
				if err != nil {
					return err
				}
				f.MinSeverity = sv
			}
			var err error
			if f.Since, err = parseTime(since); err != nil {
				return fmt.Errorf("audit query: --since: %w", err)
			}
			if f.Until, err = parseTime(until); err != nil {
				return fmt.Errorf("audit query: --until: %w", err)
			}
			for _, kv := range fields {
				k, v, ok := strings.Cut(kv, "=")
				if !ok {
					return fmt.Errorf("audit query: --field %q: want KEY=VALUE", kv)
				}
				f.Fields = append(f.Fields, audit.FieldMatch{Key: k, Value: v})
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
				return fmt.Errorf("audit query: --format %q: want ndjson or table", format)
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
	return cmd
}

// tableRow renders r as one tab-separated row; every value is escaped.
func tableRow(dst []byte, r *audit.Record) []byte {
	line := string(r.AppendText(nil))
	// AppendText: "<time> <severity padded> <type> seq=N [cid=..] fields"
	head, rest, _ := strings.Cut(line, " seq=")
	parts := strings.Fields(head)
	seq, rest, _ := strings.Cut(rest, " ")
	cid := ""
	if strings.HasPrefix(rest, "cid=") {
		cid, rest, _ = strings.Cut(rest[4:], " ")
	}
	if len(parts) == 3 {
		dst = fmt.Appendf(dst, "%s\t%s\t%s\t%s\t%s\t%s\n", parts[0], parts[1], parts[2], seq, cid, rest)
	} else {
		dst = fmt.Appendf(dst, "%s\t\t\t%s\t%s\t%s\n", head, seq, cid, rest)
	}
	return dst
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
		Use:   "tail [-f] [-n N] DIR",
		Short: "Show the newest records for people (escaped)",
		Long: `Show the last N records of the audit log in DIR, one line each, and with -f
keep showing new ones. Control characters, ANSI escapes and bidirectional
overrides in values are shown escaped, never interpreted by the terminal.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
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
	cmd.Flags().BoolVar(&jsonl, "json", false, "print the exact record lines instead")
	return cmd
}

func newAuditPruneCmd() *cobra.Command {
	var retain string
	cmd := &cobra.Command{
		Use:   "prune DIR --retain 2555d",
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
				return fmt.Errorf("audit prune: --retain %q: want a positive duration such as 2555d", retain)
			}
			l, err := audit.Open(args[0], audit.Options{Service: "vramseal"})
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
			fmt.Fprintf(cmd.OutOrStdout(), "pruned %d segments (%d records); pruned through seq %d\n", rep.Segments, rep.Records, rep.ThroughSeq)
			return nil
		},
	}
	cmd.Flags().StringVar(&retain, "retain", "", "retention period, e.g. 2555d (required)")
	return cmd
}
