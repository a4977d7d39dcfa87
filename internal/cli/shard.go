package cli

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/mattn/go-isatty"
	"github.com/spf13/cobra"
	"github.com/vramseal/vramseal/internal/server"
	"github.com/vramseal/vramseal/vram"
)

func newShardCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "shard",
		Short: "Add, list, verify and release shards held by the daemon",
	}
	cmd.AddCommand(newShardAddCmd(), newShardLsCmd(), newShardVerifyCmd(), newShardRmCmd())
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
		Use:   "add FILE",
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
				var body io.Reader = f
				if !noProgress && st.Size() >= 64<<20 && isTerminal(cmd.ErrOrStderr()) {
					p := &progress{w: cmd.ErrOrStderr(), total: st.Size(), start: time.Now()}
					body = io.TeeReader(f, p)
					defer p.finish()
				}
				do = func(ctx context.Context, c *client) ([]byte, error) {
					return c.do(ctx, http.MethodPost, "/v1/shards", q, "application/octet-stream", body, st.Size(), &sh)
				}
			}
			return cf.call(cmd, do, func(w io.Writer) error { return printShardTable(w, []server.ShardJSON{sh}) })
		},
	}
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

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && (isatty.IsTerminal(f.Fd()) || isatty.IsCygwinTerminal(f.Fd()))
}

// progress draws an upload progress bar on a terminal.
type progress struct {
	w           io.Writer
	total, done int64
	start, last time.Time
}

func (p *progress) Write(b []byte) (int, error) {
	p.done += int64(len(b))
	if now := time.Now(); now.Sub(p.last) > 200*time.Millisecond || p.done == p.total {
		p.last = now
		p.draw()
	}
	return len(b), nil
}

func (p *progress) draw() {
	const width = 30
	frac := float64(p.done) / float64(max(p.total, 1))
	n := int(frac * width)
	bar := make([]byte, width)
	for i := range bar {
		bar[i] = ' '
		if i < n {
			bar[i] = '='
		}
	}
	rate := float64(p.done) / max(time.Since(p.start).Seconds(), 1e-3)
	fmt.Fprintf(p.w, "\r[%s] %5.1f%% %s of %s, %s/s ", bar, 100*frac, FormatBytes(p.done), FormatBytes(p.total), FormatBytes(int64(rate)))
}

func (p *progress) finish() { fmt.Fprintln(p.w) }

func printShardTable(w io.Writer, shards []server.ShardJSON) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SHARD\tMODEL\tGPU\tSIZE\tCHUNKS\tDIGEST\tSEALED AT\tATTACHED")
	for _, sh := range shards {
		s := sh.Seal
		d := s.Digest.String()
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%d\tsha256:%s…\t%s\t%s\n", safeText(s.ShardID), safeText(s.ModelRef), s.DeviceIndex, FormatBytes(s.Size),
			sh.Chunks, d[:16], s.SealedAt.Format(time.RFC3339), attachedColumn(sh.Attachments))
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
		Use:   "ls",
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

func (v *verifyFlags) request() server.VerifyRequest {
	if v.full {
		return server.VerifyRequest{Mode: "full"}
	}
	return server.VerifyRequest{Mode: "sampled", Samples: v.samples}
}

func newShardVerifyCmd() *cobra.Command {
	var v verifyFlags
	cmd := &cobra.Command{
		Use:   "verify ID",
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
			var res server.VerifyJSON
			return v.cf.call(cmd, func(ctx context.Context, c *client) ([]byte, error) {
				return c.postJSON(ctx, path, v.request(), &res)
			}, func(w io.Writer) error {
				_, err := fmt.Fprintf(w, "verified %s (%s): %d of %d chunks in %.3f ms; detects one changed chunk with p=%.4g\n",
					res.ShardID, res.Mode, res.ChunksChecked, res.Chunks, res.DurationMS, res.DetectionProbability)
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
		Use:   "capacity",
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
		Use:   "reset --reason TEXT",
		Short: "Return a stopped worker to running after an operator has dealt with the failure",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if strings.TrimSpace(reason) == "" {
				return &ExitError{Code: 2, Err: fmt.Errorf("--reason is required: say what was done about the failure")}
			}
			return cf.call(cmd, func(ctx context.Context, c *client) ([]byte, error) {
				return c.postJSON(ctx, "/v1/reset", server.ResetRequest{Reason: reason}, nil)
			}, func(w io.Writer) error {
				_, err := fmt.Fprintln(w, "worker reset: running")
				return err
			})
		},
	}
	cf.register(cmd)
	cmd.Flags().StringVar(&reason, "reason", "", "what the operator did (required)")
	return cmd
}

func newDevicesCmd() *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{
		Use:   "devices",
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
