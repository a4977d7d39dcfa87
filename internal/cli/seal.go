package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/vramseal/vramseal/gpu"
	"github.com/vramseal/vramseal/internal/units"
	"github.com/vramseal/vramseal/narration"
	"github.com/vramseal/vramseal/seal"
	"github.com/vramseal/vramseal/vram"
)

func newSealCmd() *cobra.Command {
	var (
		shardID     string
		modelRef    string
		device      int
		simDevices  int
		simCapacity ByteSize = 8 << 30
		chunkSize   ByteSize = seal.DefaultChunkSize
		secretFile  string
		samples     int
		asJSON      bool
		backend     string
		cudaLibrary string
		noProgress  bool
	)
	cmd := &cobra.Command{
		Use: "seal FILE",
		Example: `  vramseal seal model.safetensors
  vramseal seal model.bin --device sim --sim-capacity 16GiB --json`,
		Short: "Seal a model file into VRAM, verify it, print the seal, release it",
		Long: `Seal copies FILE into GPU memory (an NVIDIA GPU with --device cuda, or auto
when one is usable; the simulated device otherwise), seals it (flat SHA-256
digest, chunk tree root, HMAC signature), verifies it from device memory in
full and sampled mode, prints the seal (shard ID, GPU, digest, tree root, key
ID), and releases the memory: a one-shot check of the whole residency path
on this machine. It exits 0 only
if every step succeeds; 2 for bad input, 3 when the shard does not fit, 4 for
an integrity failure or a VRAM-only policy violation.

Without --secret-file the seal key is ephemeral: the seal verifies only in
this process. The daemon (vramseal serve) keeps shards resident.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if simDevices < 1 || simDevices > 64 {
				return &ExitError{Code: 2, Err: fmt.Errorf("--sim-devices %d: must be between 1 and 64", simDevices)}
			}
			if err := checkChunkSize(chunkSize); err != nil {
				return err
			}
			f, st, err := openInput(args[0])
			if err != nil {
				return err
			}
			defer f.Close()
			data, stop := newCtxReader(ctx, f)
			defer stop()
			bar, endBar := startProgress(cmd.ErrOrStderr(), args[0], st.Size(), asJSON, noProgress)
			defer endBar()
			data = io.TeeReader(data, bar)
			opts := vram.Options{ChunkSize: int64(chunkSize)}
			if secretFile != "" {
				k, err := seal.LoadKeyFile(secretFile)
				if err != nil {
					return err
				}
				opts.Key = k
			}
			// Only a fallback to the simulator, or a policy violation, is
			// narrated: on stderr, so that --json output stays clean.
			n := narration.New(narration.Options{Level: slog.LevelWarn, Actor: "vramseal",
				Sinks: []narration.Sink{narration.NewConsoleSink(cmd.ErrOrStderr(), narration.ConsoleOptions{})}})
			devs, _, _, err := openDevices(ctx, serveConfig{device: backend, cudaLibrary: cudaLibrary,
				simDevices: simDevices, simCapacity: simCapacity}, n)
			if err != nil {
				return err
			}
			opts.Devices, opts.Narrator = devs, n
			m, err := vram.New(ctx, opts)
			if err != nil {
				return err
			}
			defer m.Close(ctx)
			req := vram.SealRequest{ShardID: shardID, ModelRef: modelRef, Device: device, Size: st.Size(), Data: data}
			if req.ModelRef == "" {
				req.ModelRef = st.Name()
			}
			if strings.HasSuffix(st.Name(), ".safetensors") {
				req.Format = vram.FormatSafetensors
			}
			sh, err := m.Seal(ctx, req)
			endBar()
			if err != nil {
				return err
			}
			full, err := m.Verify(ctx, sh.Seal.ShardID, vram.Full)
			if err != nil {
				return err
			}
			sampled, err := m.Verify(ctx, sh.Seal.ShardID, vram.Sampled(samples))
			if err != nil {
				return err
			}
			if err := m.Release(ctx, sh.Seal.ShardID); err != nil {
				return err
			}
			return printSealed(cmd.OutOrStdout(), asJSON, sh, []vram.VerifyResult{full, sampled})
		},
	}
	f := cmd.Flags()
	f.StringVar(&shardID, "shard-id", "", "shard ID (default: generated shard-<32 hex>)")
	f.StringVar(&modelRef, "model-ref", "", "model reference recorded in the seal (default: the file name)")
	f.IntVar(&device, "gpu", 0, "GPU index to hold the shard")
	f.StringVar(&backend, "device", "auto", "GPU backend: auto (CUDA if usable, else simulated), sim or cuda")
	f.StringVar(&cudaLibrary, "cuda-library", "", "CUDA driver library to load (default libcuda.so.1)")
	f.IntVar(&simDevices, "sim-devices", 1, "number of simulated GPUs")
	f.Var(&simCapacity, "sim-capacity", "VRAM of each simulated GPU (e.g. 8GiB)")
	f.Var(&chunkSize, "chunk-size", "chunk tree leaf size (e.g. 64KiB)")
	f.StringVar(&secretFile, "secret-file", "", "worker secret file (0600, at least 32 bytes) for the seal key")
	f.IntVar(&samples, "samples", vram.DefaultSamples, "chunks checked by the sampled verification")
	f.BoolVar(&asJSON, "json", false, "print JSON")
	f.BoolVar(&noProgress, "no-progress", false, "never draw a progress bar")
	return cmd
}

// sealedOutput is the JSON form of a sealed shard and its verifications.
type sealedOutput struct {
	Seal   seal.Seal      `json:"seal"`
	Chunks int64          `json:"chunks"`
	Verify []verifyOutput `json:"verify,omitempty"`
}

type verifyOutput struct {
	Mode                 string  `json:"mode"`
	ChunksChecked        int64   `json:"chunks_checked"`
	DetectionProbability float64 `json:"detection_probability"`
	DurationMS           float64 `json:"duration_ms"`
}

func toVerifyOutput(r vram.VerifyResult) verifyOutput {
	return verifyOutput{Mode: r.Mode, ChunksChecked: r.ChunksChecked, DetectionProbability: r.DetectionProbability,
		DurationMS: float64(r.Duration) / float64(time.Millisecond)}
}

func printSealed(w io.Writer, asJSON bool, sh vram.ShardInfo, checks []vram.VerifyResult) error {
	if asJSON {
		out := sealedOutput{Seal: sh.Seal, Chunks: sh.Chunks}
		for _, c := range checks {
			out.Verify = append(out.Verify, toVerifyOutput(c))
		}
		return json.NewEncoder(w).Encode(out)
	}
	s := sh.Seal
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "shard\t%s\n", safeText(s.ShardID))
	fmt.Fprintf(tw, "model\t%s (tensor-parallel rank %d/%d)\n", safeText(s.ModelRef), s.ShardIndex, s.ShardCount)
	fmt.Fprintf(tw, "gpu\t%d (%s)\n", s.DeviceIndex, s.DeviceUUID)
	fmt.Fprintf(tw, "size\t%d bytes (%s)\n", s.Size, FormatBytes(s.Size))
	fmt.Fprintf(tw, "chunks\t%d of %s\n", gpu.ChunkCount(s.Size, s.ChunkSize), FormatBytes(s.ChunkSize))
	fmt.Fprintf(tw, "digest\tsha256:%s\n", s.Digest)
	fmt.Fprintf(tw, "tree root\t%s\n", s.Root)
	fmt.Fprintf(tw, "sealed at\t%s\n", s.SealedAt.Format(time.RFC3339Nano))
	fmt.Fprintf(tw, "key id\t%s\n", s.KeyID)
	fmt.Fprintf(tw, "worker\t%s\n", s.WorkerID)
	for _, c := range checks {
		fmt.Fprintf(tw, "verify %s\tok: %d chunks in %s (detects one bad chunk with p=%.4g)\n",
			c.Mode, c.ChunksChecked, units.FormatDuration(c.Duration), c.DetectionProbability)
	}
	return tw.Flush()
}
