package cli

import (
	"context"
	"encoding/base64"
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

	"github.com/spf13/cobra"
	"github.com/vramseal/vramseal/internal/server"
	"github.com/vramseal/vramseal/internal/units"
	"github.com/vramseal/vramseal/provenance"
	"github.com/vramseal/vramseal/vram"
)

func newModelCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "model",
		Short: "Add, list, verify and release whole models (one shard per weight file)",
	}
	cmd.AddCommand(newModelAddCmd(), newModelLsCmd(), newModelVerifyCmd(), newModelRmCmd())
	return cmd
}

// modelAddFlags are the options of model add.
type modelAddFlags struct {
	cf                     clientFlags
	id, ref                string
	gpus                   []int
	sha, digests, sig, key string
	byPath, noProgress     bool
	// stderr is where an upload's progress bar goes.
	stderr io.Writer
}

func newModelAddCmd() *cobra.Command {
	var o modelAddFlags
	cmd := &cobra.Command{
		Use:   "add PATH",
		Short: "Seal a model directory, safetensors file or GGUF file into VRAM, all or nothing",
		Long: `Add seals every weight file of a model as one shard, in parallel, with its
tensor-parallel index and count set: PATH is a Hugging Face model directory
(the *.safetensors files model.safetensors.index.json lists, or all of them),
a single .safetensors file, or a GGUF file (every part of a split GGUF file).
If any file fails, every shard already sealed is released and the error names
the file.

A directory or a GGUF file is read by the daemon itself, so PATH must lie under
one of its --model-root directories. A single .safetensors file is uploaded
unless --by-path is given.

Published digests are checked against the bytes that become resident, during
the copy: --expect-sha256 for a single file, --expect-digests for a sha256sum
file, or --signature with --public-key for an OpenSSF model-signing signature
(a Sigstore bundle). A mismatch, a bad signature or a wrong key is an
integrity failure (exit status 4) and nothing stays resident.`,
		Example: `  vramseal model add --gpu 0 --gpu 1 /models/Llama-3.1-8B-Instruct
  vramseal model add --signature model.sig --public-key publisher.pub /models/tiny-llama
  vramseal model add --expect-sha256 9f32d4dd… single.safetensors`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error { return o.run(cmd, args[0]) },
	}
	// Sealing a model takes as long as its files are large.
	o.cf.long = true
	o.cf.register(cmd)
	f := cmd.Flags()
	f.StringVar(&o.id, "model-id", "", "model ID; its shards are ID-0, ID-1, … (default: from the directory or file name)")
	f.StringVar(&o.ref, "model-ref", "", "model reference recorded in each seal (default: the directory or file name)")
	f.IntSliceVar(&o.gpus, "gpu", nil, "GPU to place the files on, round-robin (repeatable; default: by free memory)")
	f.StringVar(&o.sha, "expect-sha256", "", "SHA-256 (hex) the single weight file must have")
	f.StringVar(&o.digests, "expect-digests", "", "sha256sum file listing the digests the files must have")
	f.StringVar(&o.sig, "signature", "", "OpenSSF model-signing signature (Sigstore bundle) of the model")
	f.StringVar(&o.key, "public-key", "", "the publisher's public key (PEM) that verifies --signature")
	f.BoolVar(&o.noProgress, "no-progress", false, "never draw a progress bar")
	f.BoolVar(&o.byPath, "by-path", false, "let the daemon read a single file from its model roots instead of uploading it")
	return cmd
}

// readSmall reads the regular file at path, named by flag, of at most
// limit bytes ([readArgFile]); "" reads nothing. Every failure is bad input.
func readSmall(flag, path string, limit int64) ([]byte, error) {
	if path == "" {
		return nil, nil
	}
	b, err := readArgFile(path, "a --"+flag+" file", limit)
	if err != nil {
		return nil, &ExitError{Code: 2, Err: fmt.Errorf("--%s: %w", flag, err)}
	}
	return b, nil
}

func (o *modelAddFlags) run(cmd *cobra.Command, path string) error {
	o.stderr = cmd.ErrOrStderr()
	if o.id != "" {
		if err := vram.ValidateShardID(o.id); err != nil {
			return &ExitError{Code: 2, Err: fmt.Errorf("--model-id: %w", err)}
		}
	}
	if (o.sig == "") != (o.key == "") {
		return &ExitError{Code: 2, Err: fmt.Errorf("--signature and --public-key go together")}
	}
	digests, err := readSmall("expect-digests", o.digests, provenance.MaxBundleSize)
	if err != nil {
		return err
	}
	bundle, err := readSmall("signature", o.sig, provenance.MaxBundleSize)
	if err != nil {
		return err
	}
	key, err := readSmall("public-key", o.key, 1<<20)
	if err != nil {
		return err
	}
	st, err := os.Stat(path)
	if err != nil {
		return &ExitError{Code: 2, Err: fmt.Errorf("model %s: %w", safeText(path), err)}
	}
	var mj server.ModelJSON
	var do func(ctx context.Context, c *client) ([]byte, error)
	upload := st.Mode().IsRegular() && strings.HasSuffix(st.Name(), ".safetensors") && !o.byPath
	switch {
	case upload:
		if len(digests) > 0 {
			return &ExitError{Code: 2, Err: fmt.Errorf("--expect-digests is for models read by path: use --expect-sha256 or --by-path")}
		}
		do, err = o.upload(path, st, bundle, key, &mj)
		if err != nil {
			return err
		}
	case st.IsDir() || st.Mode().IsRegular():
		abs, err := filepath.Abs(path)
		if err != nil {
			return err
		}
		req := server.ModelAddRequest{Path: abs, ModelID: o.id, ModelRef: o.ref, GPUs: o.gpus, ExpectSHA256: o.sha,
			ExpectDigests: string(digests), Signature: string(bundle), PublicKey: string(key)}
		do = func(ctx context.Context, c *client) ([]byte, error) { return c.postJSON(ctx, "/v1/models", req, &mj) }
	default:
		return &ExitError{Code: 2, Err: fmt.Errorf("model %s is not a directory or a regular file", safeText(path))}
	}
	return o.cf.call(cmd, do, func(w io.Writer) error {
		if err := printModelTable(w, []server.ModelJSON{mj}); err != nil {
			return err
		}
		fmt.Fprintln(w)
		return printShardTable(w, mj.Shards)
	})
}

// upload prepares the upload of a single safetensors file.
func (o *modelAddFlags) upload(path string, st os.FileInfo, bundle, key []byte, out *server.ModelJSON) (func(ctx context.Context, c *client) ([]byte, error), error) {
	if st.Size() == 0 {
		return nil, &ExitError{Code: 2, Err: fmt.Errorf("%s is empty: a weight file holds at least one byte", safeText(path))}
	}
	q := url.Values{"file_name": {st.Name()}}
	for k, v := range map[string]string{"model_id": o.id, "model_ref": o.ref, "expect_sha256": o.sha} {
		if v != "" {
			q.Set(k, v)
		}
	}
	for _, g := range o.gpus {
		q.Add("gpu", strconv.Itoa(g))
	}
	hdr := http.Header{}
	if len(bundle) > 0 {
		hdr.Set(server.HeaderSignature, base64.StdEncoding.EncodeToString(bundle))
		hdr.Set(server.HeaderPublicKey, base64.StdEncoding.EncodeToString(key))
	}
	return func(ctx context.Context, c *client) ([]byte, error) {
		f, _, err := openInput(path)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		c.header = hdr
		// The bar ends when the daemon answers, before the tables.
		bar, stop := startProgress(o.stderr, path, st.Size(), o.cf.asJSON, o.noProgress)
		defer stop()
		return c.do(ctx, http.MethodPost, "/v1/models", q, "application/octet-stream", io.TeeReader(f, bar), st.Size(), out)
	}, nil
}

func printModelTable(w io.Writer, models []server.ModelJSON) error {
	if len(models) == 0 {
		_, err := fmt.Fprintln(w, "no models resident")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "MODEL\tSHARDS\tSIZE\tGPUS\tSTATUS\tPROVENANCE\tSEALED AT")
	for _, m := range models {
		gpus := make([]string, len(m.GPUs))
		for i, g := range m.GPUs {
			gpus[i] = strconv.Itoa(g)
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%s\n", m.ModelID, len(m.Shards), FormatBytes(m.SizeBytes), strings.Join(gpus, ","),
			m.Status, provenanceColumn(m.Provenance), m.SealedAt.Format(time.RFC3339))
	}
	return tw.Flush()
}

// provenanceColumn summarises what was checked of a model's origin:
// "signature (key 1a2b3c4d5e6f7a8b)", "digests", "sha256" or "none".
func provenanceColumn(p provenance.Provenance) string {
	switch {
	case !p.Verified || p.Method == "":
		return "none"
	case p.KeyFingerprint != "":
		return fmt.Sprintf("%s (key %.16s)", p.Method, p.KeyFingerprint)
	default:
		return p.Method
	}
}

func newModelLsCmd() *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{
		Use:   "ls",
		Short: "List the models resident on the daemon",
		Example: `  vramseal model ls
  vramseal model ls --json | jq -r '.models[].model_id'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var out struct {
				Models []server.ModelJSON `json:"models"`
			}
			return cf.call(cmd, func(ctx context.Context, c *client) ([]byte, error) {
				return c.getJSON(ctx, "/v1/models", nil, &out)
			}, func(w io.Writer) error { return printModelTable(w, out.Models) })
		},
	}
	cf.register(cmd)
	return cmd
}

// modelPath is the API path of model id followed by suffix; the ID is
// checked here with the daemon's rule, as for shards.
func modelPath(id, suffix string) (string, error) {
	if err := vram.ValidateShardID(id); err != nil {
		return "", &ExitError{Code: 2, Err: fmt.Errorf("model ID: %w", err)}
	}
	return "/v1/models/" + id + suffix, nil
}

func newModelVerifyCmd() *cobra.Command {
	var v verifyFlags
	cmd := &cobra.Command{
		Use:   "verify ID",
		Short: "Re-verify every shard of a model from device memory",
		Example: `  vramseal model verify llama-3-8b
  vramseal model verify llama-3-8b --full`,
		Long: `Verify checks each shard of the model as "shard verify" does, in order, and
stops at the first failure, which names the changed chunks and the tensors they
touch (exit status 4; the worker is then stopped).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			path, err := modelPath(args[0], "/verify")
			if err != nil {
				return err
			}
			v.fullUnbounded(cmd)
			var res server.ModelVerifyJSON
			return v.cf.call(cmd, func(ctx context.Context, c *client) ([]byte, error) {
				return c.postJSON(ctx, path, v.request(), &res)
			}, func(w io.Writer) error {
				var checked, chunks int64
				for _, s := range res.Shards {
					checked += s.ChunksChecked
					chunks += s.Chunks
				}
				_, err := fmt.Fprintf(w, "verified model %s (%s): %d shards, %d of %d chunks in %s\n",
					res.ModelID, res.Mode, len(res.Shards), checked, chunks, units.FormatDuration(msDuration(res.DurationMS)))
				return err
			})
		},
	}
	v.register(cmd)
	return cmd
}

func newModelRmCmd() *cobra.Command {
	cmd := newReleaseCmd("model", modelPath, `Rm releases every shard of the model. When inference processes are attached to
any of them, nothing is released (exit status 5) unless --force revokes them.`)
	cmd.Short = "Release every shard of a model"
	cmd.Example = `  vramseal model rm llama-3-8b
  vramseal model rm llama-3-8b --force`
	return cmd
}
