package cli

import (
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/vramseal/vramseal/internal/server"
	"github.com/vramseal/vramseal/internal/units"
	"github.com/vramseal/vramseal/vram"
)

func newShardCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use: "shard",
		Example: `  vramseal shard add model.safetensors --shard-id llama-tp0
  vramseal shard ls
  vramseal shard verify llama-tp0 --full`,
		Short: "Add, list, verify and release shards held by the daemon",
	}
	cmd.AddCommand(newShardAddCmd(), newShardLsCmd(), newShardGetCmd(), newShardVerifyCmd(), newShardRmCmd())
	return cmd
}

func newShardAddCmd() *cobra.Command {
	var (
		cf                 clientFlags
		shardID, modelRef  string
		gpu, index, count  int
		byPath, noProgress bool
	)
	cmd := &cobra.Command{
		Use: "add FILE",
		Example: `  vramseal shard add model.safetensors --shard-id llama-tp0 --model-ref org/llama-3-8b
  vramseal shard add part-1.bin --shard-index 1 --shard-count 2 --gpu 1
  vramseal shard add /models/llama/model.safetensors --by-path`,
		Short: "Seal a model file into VRAM on the daemon",
		Long: `Add streams FILE to the daemon, which copies it into GPU memory and seals it.
With --by-path the daemon reads FILE itself; FILE must then lie under one of
the daemon's --model-root directories.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var (
				sh server.ShardJSON
				do func(ctx context.Context, c *client) ([]byte, error)
			)
			if shardID != "" {
				if err := vram.ValidateShardID(shardID); err != nil {
					return err
				}
			}
			if byPath {
				path, err := filepath.Abs(args[0])
				if err != nil {
					return err
				}
				req := server.AddRequest{ShardID: shardID, ModelRef: modelRef, ShardIndex: index, ShardCount: count, Device: gpu, Path: path}
				do = func(ctx context.Context, c *client) ([]byte, error) { return c.postJSON(ctx, "/v1/shards", req, &sh) }
			} else {
				f, st, err := openInput(args[0])
				if err != nil {
					return err
				}
				defer f.Close()
				if st.Size() == 0 {
					return &ExitError{Code: 2, Err: fmt.Errorf("%s is empty: a shard holds at least one byte", safeText(args[0]))}
				}
				if modelRef == "" {
					modelRef = st.Name()
				}
				q := url.Values{"model_ref": {modelRef}, "gpu": {strconv.Itoa(gpu)}}
				if shardID != "" {
					q.Set("shard_id", shardID)
				}
				if strings.HasSuffix(st.Name(), ".safetensors") {
					q.Set("format", vram.FormatSafetensors)
				}
				if count > 0 || index != 0 {
					q.Set("shard_index", strconv.Itoa(index))
					q.Set("shard_count", strconv.Itoa(count))
				}
				do = func(ctx context.Context, c *client) ([]byte, error) {
					// The bar ends when the daemon answers, before the table.
					bar, stop := startProgress(cmd.ErrOrStderr(), args[0], st.Size(), cf.asJSON, noProgress)
					defer stop()
					body := io.TeeReader(f, bar)
					return c.do(ctx, http.MethodPost, "/v1/shards", q, "application/octet-stream", body, st.Size(), &sh)
				}
			}
			return cf.call(cmd, do, func(w io.Writer) error { return printShardTable(w, []server.ShardJSON{sh}) })
		},
	}
	cf.long = true
	cf.register(cmd)
	f := cmd.Flags()
	f.StringVar(&shardID, "shard-id", "", "shard ID (default: generated)")
	f.StringVar(&modelRef, "model-ref", "", "model reference (default: the file name)")
	f.IntVar(&gpu, "gpu", 0, "GPU index")
	f.IntVar(&index, "shard-index", 0, "index of this shard in a tensor-parallel set")
	f.IntVar(&count, "shard-count", 0, "number of shards in the set (default 1)")
	f.BoolVar(&byPath, "by-path", false, "let the daemon read FILE from its model roots instead of uploading it")
	f.BoolVar(&noProgress, "no-progress", false, "never draw a progress bar")
	return cmd
}

// printShardTable prints shards one a line, like `ollama ps`: ID, model,
// tensor-parallel rank, GPU and backend, size, status, the last
// verification that passed, age, and the attached processes when any
// shard has some. An empty list says so.
func printShardTable(w io.Writer, shards []server.ShardJSON) error {
	return printShardTableAt(w, shards, time.Now())
}

// printShardTableAt is printShardTable with ages counted to now.
func printShardTableAt(w io.Writer, shards []server.ShardJSON, now time.Time) error {
	if len(shards) == 0 {
		_, err := fmt.Fprintln(w, "no shards are resident (add one with `vramseal shard add FILE`)")
		return err
	}
	attached := false
	for _, sh := range shards {
		attached = attached || len(sh.Attachments) > 0
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprint(tw, "SHARD\tMODEL\tTP RANK\tGPU\tBACKEND\tSIZE\tSTATUS\tVERIFIED\tAGE")
	if attached {
		fmt.Fprint(tw, "\tATTACHED")
	}
	fmt.Fprintln(tw)
	for _, sh := range shards {
		s := sh.Seal
		fmt.Fprintf(tw, "%s\t%s\t%d/%d\t%d\t%s\t%s\t%s\t%s\t%s", safeText(s.ShardID), safeText(s.ModelRef), s.ShardIndex, s.ShardCount,
			s.DeviceIndex, orDash(safeText(sh.Backend)), FormatBytes(s.Size), safeText(shardStatus(sh)), lastVerified(sh.LastVerified, now), age(now.Sub(s.SealedAt)))
		if attached {
			fmt.Fprintf(tw, "\t%s", attachedColumn(sh.Attachments))
		}
		fmt.Fprintln(tw)
	}
	return tw.Flush()
}

func shardStatus(sh server.ShardJSON) string {
	if sh.Status == "" {
		return "ok"
	}
	return sh.Status
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// lastVerified renders a shard's last passed verification as its mode
// and age ("sampled 12s ago"), or "never".
func lastVerified(v *server.LastVerifiedJSON, now time.Time) string {
	if v == nil {
		return "never"
	}
	return safeText(v.Mode) + " " + age(now.Sub(v.At)) + " ago"
}

// age renders a duration the way `ps` and `ollama ps` do: the largest
// whole unit (45s, 12m, 3h, 9d).
func age(d time.Duration) string {
	switch {
	case d < time.Second:
		return "0s"
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d/time.Second))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d/time.Minute))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d/time.Hour))
	}
	return fmt.Sprintf("%dd", int(d/(24*time.Hour)))
}

// printShard prints one shard's details, one field a line.
func printShard(w io.Writer, sh server.ShardJSON, now time.Time) error {
	s := sh.Seal
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "shard\t%s\n", safeText(s.ShardID))
	fmt.Fprintf(tw, "model\t%s\n", safeText(s.ModelRef))
	fmt.Fprintf(tw, "tp rank\t%d of %d\n", s.ShardIndex, s.ShardCount)
	fmt.Fprintf(tw, "gpu\t%d (%s, %s)\n", s.DeviceIndex, safeText(s.DeviceUUID), orDash(safeText(sh.Backend)))
	fmt.Fprintf(tw, "size\t%d bytes (%s)\n", s.Size, FormatBytes(s.Size))
	fmt.Fprintf(tw, "chunks\t%d of %s\n", sh.Chunks, FormatBytes(s.ChunkSize))
	fmt.Fprintf(tw, "status\t%s\n", safeText(shardStatus(sh)))
	if sh.Quarantined != "" {
		fmt.Fprintf(tw, "quarantined\t%s (release it with `vramseal shard rm %s`)\n", safeText(sh.Quarantined), safeText(s.ShardID))
	}
	fmt.Fprintf(tw, "last verified\t%s\n", lastVerified(sh.LastVerified, now))
	fmt.Fprintf(tw, "digest\tsha256:%s\n", s.Digest)
	fmt.Fprintf(tw, "tree root\t%s\n", s.Root)
	fmt.Fprintf(tw, "sealed at\t%s (%s ago)\n", s.SealedAt.Format(time.RFC3339), age(now.Sub(s.SealedAt)))
	fmt.Fprintf(tw, "key id\t%s\n", safeText(s.KeyID))
	fmt.Fprintf(tw, "worker\t%s\n", safeText(s.WorkerID))
	if len(sh.Attachments) == 0 {
		fmt.Fprintf(tw, "attached\tnone\n")
	}
	for _, a := range sh.Attachments {
		revoked := ""
		if a.Revoked {
			revoked = ", revoked"
		}
		fmt.Fprintf(tw, "attached\tpid %d (uid %d, %s) since %s%s\n", a.PID, a.UID, safeText(a.Executable), a.AttachedAt.Format(time.RFC3339), revoked)
	}
	return tw.Flush()
}

// attachedColumn summarises a shard's attachments: "-" for none, else the
// count and the first holders' pids ("2 (pid 41, 97)").
func attachedColumn(as []server.AttachmentJSON) string {
	if len(as) == 0 {
		return "-"
	}
	pids := make([]string, 0, 3)
	for i, a := range as {
		if i == 3 {
			pids = append(pids, "…")
			break
		}
		pids = append(pids, strconv.Itoa(int(a.PID)))
	}
	return fmt.Sprintf("%d (pid %s)", len(as), strings.Join(pids, ", "))
}

func newShardLsCmd() *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{
		Use: "ls",
		Example: `  vramseal shard ls
  vramseal shard ls --json | jq -r '.shards[].seal.shard_id'`,
		Short: "List the shards resident on the daemon",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var out struct {
				Shards []server.ShardJSON `json:"shards"`
			}
			return cf.call(cmd, func(ctx context.Context, c *client) ([]byte, error) {
				return c.getJSON(ctx, "/v1/shards", nil, &out)
			}, func(w io.Writer) error { return printShardTable(w, out.Shards) })
		},
	}
	cf.register(cmd)
	return cmd
}

func newShardGetCmd() *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{
		Use:   "get ID",
		Short: "Show one shard's seal, status, last verification and attachments",
		Example: `  vramseal shard get llama-tp0
  vramseal shard get llama-tp0 --json | jq .seal.tree_root`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			path, err := shardPath(args[0], "")
			if err != nil {
				return err
			}
			var sh server.ShardJSON
			return cf.call(cmd, func(ctx context.Context, c *client) ([]byte, error) {
				return c.getJSON(ctx, path, nil, &sh)
			}, func(w io.Writer) error { return printShard(w, sh, time.Now()) })
		},
	}
	cf.register(cmd)
	return cmd
}

// verifyFlags are the flags of "shard verify" and "model verify".
type verifyFlags struct {
	cf      clientFlags
	full    bool
	samples int
}

func (v *verifyFlags) register(cmd *cobra.Command) {
	v.cf.register(cmd)
	cmd.Flags().BoolVar(&v.full, "full", false, "check every chunk")
	cmd.Flags().IntVar(&v.samples, "samples", 0, "chunks to check per shard in sampled mode (default 16)")
}

// fullUnbounded lifts the default --timeout of a --full verification: a
// full pass takes as long as the shard (or model) is large. Call it before
// the request.
func (v *verifyFlags) fullUnbounded(cmd *cobra.Command) {
	if v.full && !cmd.Flags().Changed("timeout") {
		v.cf.timeout = 0
	}
}

func (v *verifyFlags) request() server.VerifyRequest {
	if v.full {
		return server.VerifyRequest{Mode: "full"}
	}
	return server.VerifyRequest{Mode: "sampled", Samples: v.samples}
}

func newShardVerifyCmd() *cobra.Command {
	var v verifyFlags
	cmd := &cobra.Command{
		Use: "verify ID",
		Example: `  vramseal shard verify llama-tp0
  vramseal shard verify llama-tp0 --full`,
		Short: "Re-verify a shard from device memory (the execute gate)",
		Long: `Verify asks the daemon to recompute the shard's chunk hashes from GPU memory
and compare them with its seal: sampled (16 unpredictable chunks) by default,
every chunk with --full. Exit status 0 means verified; 4 means the shard
failed (the worker is now stopped) or the worker was already stopped.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			path, err := shardPath(args[0], "/verify")
			if err != nil {
				return err
			}
			v.fullUnbounded(cmd)
			var res server.VerifyJSON
			return v.cf.call(cmd, func(ctx context.Context, c *client) ([]byte, error) {
				return c.postJSON(ctx, path, v.request(), &res)
			}, func(w io.Writer) error {
				_, err := fmt.Fprintf(w, "verified %s (%s): %d of %d chunks in %s; detects one changed chunk with p=%.4g\n",
					res.ShardID, res.Mode, res.ChunksChecked, res.Chunks, units.FormatDuration(msDuration(res.DurationMS)), res.DetectionProbability)
				return err
			})
		},
	}
	v.register(cmd)
	return cmd
}

func newShardRmCmd() *cobra.Command {
	cmd := newReleaseCmd("shard", shardPath, `Release frees a shard's VRAM. A shard that inference processes are attached
to is not released (exit status 5): the error names them (pid, uid). With
--force the shard leaves the list at once, every attached process is sent a
stop, and the memory is freed when the last of them detaches.`)
	cmd.Short, cmd.Aliases = "Release a shard's VRAM", []string{"release"}
	cmd.Example = `  vramseal shard rm llama-tp0
  vramseal shard rm llama-tp0 --force`
	return cmd
}

// newReleaseCmd is "shard rm" or "model rm": a DELETE of the ID's path,
// with --force to revoke attachments.
func newReleaseCmd(kind string, path func(id, suffix string) (string, error), long string) *cobra.Command {
	var (
		cf    clientFlags
		force bool
	)
	cmd := &cobra.Command{
		Use:  "rm ID",
		Long: long,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := path(args[0], "")
			if err != nil {
				return err
			}
			q := url.Values{}
			if force {
				q.Set("force", "true")
			}
			return cf.call(cmd, func(ctx context.Context, c *client) ([]byte, error) {
				return c.do(ctx, http.MethodDelete, p, q, "", nil, 0, nil)
			}, func(w io.Writer) error {
				what := "released "
				if kind == "model" {
					what += "model "
				}
				_, err := fmt.Fprintf(w, "%s%s\n", what, args[0])
				return err
			})
		},
	}
	cmd.Flags().BoolVar(&force, "force", false, "revoke the attachments of processes that hold the "+kind)
	cf.register(cmd)
	return cmd
}

func newCapacityCmd() *cobra.Command {
	var (
		cf   clientFlags
		plan ByteSize
	)
	cmd := &cobra.Command{
		Use: "capacity",
		Example: `  vramseal capacity
  vramseal capacity --plan 14GiB`,
		Short: "Show VRAM per GPU, and with --plan whether a shard of that size fits",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			q := url.Values{}
			if plan > 0 {
				q.Set("bytes", strconv.FormatInt(int64(plan), 10))
			}
			var out struct {
				Devices []server.CapacityJSON `json:"devices"`
				Plan    *server.PlanJSON      `json:"plan"`
			}
			err := cf.call(cmd, func(ctx context.Context, c *client) ([]byte, error) {
				raw, err := c.getJSON(ctx, "/v1/capacity", q, &out)
				if err == nil && cf.asJSON && out.Plan != nil && !out.Plan.Fits {
					// --json prints one object: the error, not the answer too.
					return raw, planError(out.Plan)
				}
				return raw, err
			}, func(w io.Writer) error { return printCapacity(w, out.Devices) })
			if err != nil {
				return err
			}
			// The exit status is the same with --json: scripts test it.
			if p := out.Plan; p != nil {
				// The verdict is said once: on stdout when it fits, as the
				// error (stderr, or the JSON error object) when it does not.
				if !p.Fits {
					return planError(p)
				}
				if !cf.asJSON {
					fmt.Fprintf(cmd.OutOrStdout(), "a shard of %s fits on GPU %d\n", FormatBytes(p.RequestedBytes), *p.Device)
				}
			}
			return nil
		},
	}
	cf.register(cmd)
	cmd.Flags().Var(&plan, "plan", "shard size to plan for (e.g. 14GiB)")
	return cmd
}

func newResetCmd() *cobra.Command {
	var (
		cf     clientFlags
		reason string
	)
	cmd := &cobra.Command{
		Use:     "reset --reason TEXT",
		Example: `  vramseal reset --reason "released the corrupt shard llama-tp0 (ticket 42)"`,
		Short:   "Return a stopped worker to running after an operator has dealt with the failure",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if strings.TrimSpace(reason) == "" {
				return &ExitError{Code: 2, Err: fmt.Errorf("--reason is required: say what was done about the failure")}
			}
			var res server.ResetJSON
			return cf.call(cmd, func(ctx context.Context, c *client) ([]byte, error) {
				return c.postJSON(ctx, "/v1/reset", server.ResetRequest{Reason: reason}, &res)
			}, func(w io.Writer) error { return printReset(w, res) })
		},
	}
	cf.register(cmd)
	cmd.Flags().StringVar(&reason, "reason", "", "what the operator did (required)")
	return cmd
}

func printReset(w io.Writer, res server.ResetJSON) error {
	if !res.Reset {
		fmt.Fprintln(w, "the worker is already running: nothing was reset")
	} else {
		fmt.Fprintln(w, "worker reset: running")
	}
	if n := len(res.Quarantined); n > 0 {
		fmt.Fprintf(w, "%d quarantined shard(s) stay refused until released (shard rm, then seal again): %s\n", n, strings.Join(res.Quarantined, ", "))
	}
	return nil
}

func newDevicesCmd() *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{
		Use: "devices",
		Example: `  vramseal devices
  vramseal devices --json`,
		Short: "List the daemon's GPUs",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var out struct {
				Devices []server.DeviceJSON `json:"devices"`
			}
			return cf.call(cmd, func(ctx context.Context, c *client) ([]byte, error) {
				return c.getJSON(ctx, "/v1/devices", nil, &out)
			}, func(w io.Writer) error { return printDevices(w, out.Devices) })
		},
	}
	cf.register(cmd)
	return cmd
}

func printDevices(w io.Writer, devices []server.DeviceJSON) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "GPU\tNAME\tUUID\tDRIVER\tTOTAL\tFREE\tON-DEVICE HASH")
	for _, d := range devices {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%v\n", d.Index, safeText(d.Name), safeText(d.UUID), safeText(d.Driver),
			FormatBytes(int64(d.TotalBytes)), FormatBytes(int64(d.FreeBytes)), d.HashesOnDevice)
	}
	return tw.Flush()
}

func printCapacity(w io.Writer, devices []server.CapacityJSON) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "GPU\tUUID\tTOTAL\tFREE\tSEALED\tRESERVED\tHEADROOM\tAVAILABLE\tSHARDS")
	for _, d := range devices {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\n", d.Device, d.UUID, FormatBytes(d.TotalBytes), FormatBytes(d.FreeBytes),
			FormatBytes(d.UsedBytes), FormatBytes(d.ReservedBytes), FormatBytes(d.HeadroomBytes), FormatBytes(d.AvailableBytes), d.Shards)
	}
	return tw.Flush()
}

// shardPath is the API path of shard id followed by suffix. The ID is
// checked here with the daemon's own rule ([vram.ValidateShardID]), so a
// bad ID is bad input (exit 2) before any request; a valid ID needs no
// escaping, and the URL is encoded once, when the request is built.
func shardPath(id, suffix string) (string, error) {
	if err := vram.ValidateShardID(id); err != nil {
		return "", err
	}
	return "/v1/shards/" + id + suffix, nil
}

func planError(p *server.PlanJSON) error {
	return &ExitError{Code: 3, Err: fmt.Errorf("a shard of %s does not fit on any GPU now", FormatBytes(p.RequestedBytes))}
}

// msDuration converts milliseconds as the daemon's JSON gives them to a
// duration, to the nearest nanosecond.
func msDuration(ms float64) time.Duration {
	return time.Duration(math.Round(ms * float64(time.Millisecond)))
}
