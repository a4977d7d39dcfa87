package cli

import (
	"encoding/json"
	"fmt"
	"io"

	"github.com/spf13/cobra"
	"github.com/vramseal/vramseal/gpu"
	"github.com/vramseal/vramseal/seal"
)

func newDigestCmd() *cobra.Command {
	var (
		chunkSize  ByteSize = seal.DefaultChunkSize
		asJSON     bool
		noProgress bool
	)
	cmd := &cobra.Command{
		Use: "digest FILE",
		Example: `  vramseal digest model.safetensors
  vramseal digest model.bin --chunk-size 1MiB --json`,
		Short: "Print a file's flat SHA-256 digest, chunk tree root and chunk count",
		Long: `Digest reads FILE once and prints what a seal of it would record: the flat
SHA-256 digest (what model catalogs publish), the RFC 6962 root of the chunk
tree, and the number of chunks. Nothing is loaded onto a GPU.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkChunkSize(chunkSize); err != nil {
				return err
			}
			f, st, err := openInput(args[0])
			if err != nil {
				return err
			}
			defer f.Close()
			h := seal.NewHasher(int64(chunkSize))
			defer h.Close()
			r, stop := newCtxReader(cmd.Context(), f)
			defer stop()
			bar, endBar := startProgress(cmd.ErrOrStderr(), args[0], st.Size(), asJSON, noProgress)
			buf := make([]byte, 4<<20)
			_, err = io.CopyBuffer(h, io.TeeReader(r, bar), buf)
			endBar()
			if err != nil {
				return fmt.Errorf("read %s: %w", safeText(args[0]), err)
			}
			digest, leaves, size := h.Sum()
			out := digestOutput{
				File: args[0], Size: size, ChunkSize: int64(chunkSize),
				Chunks: gpu.ChunkCount(size, int64(chunkSize)), Digest: digest.String(), Root: seal.Root(leaves).String(),
			}
			w := cmd.OutOrStdout()
			if asJSON {
				enc := json.NewEncoder(w)
				return enc.Encode(out)
			}
			fmt.Fprintf(w, "file:       %s\nsize:       %d bytes (%s)\nchunk size: %s\nchunks:     %d\ndigest:     sha256:%s\ntree root:  %s\n",
				safeText(out.File), out.Size, FormatBytes(out.Size), FormatBytes(out.ChunkSize), out.Chunks, out.Digest, out.Root)
			return nil
		},
	}
	cmd.Flags().Var(&chunkSize, "chunk-size", "chunk tree leaf size (e.g. 64KiB, 1MiB)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.Flags().BoolVar(&noProgress, "no-progress", false, "never draw a progress bar")
	return cmd
}

type digestOutput struct {
	File      string `json:"file"`
	Size      int64  `json:"size_bytes"`
	ChunkSize int64  `json:"chunk_size"`
	Chunks    int64  `json:"chunks"`
	Digest    string `json:"digest"`
	Root      string `json:"tree_root"`
}

// checkChunkSize refuses a --chunk-size that no seal could use, the same
// for digest and seal.
func checkChunkSize(n ByteSize) error {
	if n <= 0 || n > 1<<30 {
		return &ExitError{Code: 2, Err: fmt.Errorf("--chunk-size %d: must be between 1 byte and 1 GiB", int64(n))}
	}
	return nil
}
