package cli

import (
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/vramseal/vramseal/audit"
	"github.com/vramseal/vramseal/replicate"
)

// replicaFlags are audit verify's flags for a copy in NATS JetStream.
type replicaFlags struct {
	from                   []string
	node, local            string
	creds                  string
	tlsCA, tlsCert, tlsKey string
	stream                 string
}

func (r *replicaFlags) add(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringArrayVar(&r.from, "from", nil, "verify the copies in the NATS JetStream stream at nats://HOST:PORT instead of a local DIR (repeat for a cluster)")
	f.StringVar(&r.node, "node", "", "with --from: verify only this node's copy")
	f.StringVar(&r.local, "local", "", "with --from: compare the node's copy with this local audit log directory")
	f.StringVar(&r.creds, "creds", "", "with --from: NATS credentials file")
	f.StringVar(&r.tlsCA, "tls-ca", "", "with --from: PEM file of the CA of the NATS servers")
	f.StringVar(&r.tlsCert, "tls-cert", "", "with --from: PEM client certificate")
	f.StringVar(&r.tlsKey, "tls-key", "", "with --from: PEM client key")
	f.StringVar(&r.stream, "stream", replicate.DefaultStream, "with --from: the stream's name")
}

// verifyReplicas runs audit verify --from: every node's copy, each checked
// and, with --local, compared with a local log.
func verifyReplicas(cmd *cobra.Command, r replicaFlags, pubFiles []string) error {
	var keys []*audit.PublicKey
	for _, f := range pubFiles {
		pk, err := readPublicKey(f)
		if err != nil {
			return fmt.Errorf("audit verify: %w", err)
		}
		keys = append(keys, pk)
	}
	reps, err := replicate.Verify(cmd.Context(), replicate.VerifyOptions{
		ConnOptions: replicate.ConnOptions{URLs: r.from, Creds: r.creds, TLSCA: r.tlsCA, TLSCert: r.tlsCert, TLSKey: r.tlsKey, Stream: r.stream},
		Node:        r.node, PublicKeys: keys, Local: r.local,
	})
	if err != nil {
		return fmt.Errorf("audit verify: %w", err)
	}
	out := cmd.OutOrStdout()
	if len(reps) == 0 {
		fmt.Fprintf(out, "FAIL: the stream %s holds no audit copy", safeText(r.stream))
		if r.node != "" {
			fmt.Fprintf(out, " of node %s", safeText(r.node))
		}
		fmt.Fprintln(out)
		return &ExitError{Code: exitVerifyFailed, Err: errors.New("audit verify: no copy in the stream")}
	}
	failed := 0
	for _, rep := range reps {
		if rep.Err != nil {
			failed++
			printReplicaFailure(out, rep)
			continue
		}
		fmt.Fprintf(out, "OK: node %s, log %s: %d records", safeText(rep.Node), rep.LogID, rep.Records)
		if rep.CheckpointsChecked {
			fmt.Fprintf(out, ", %d signed checkpoints checked with the public key (the last of %d records)", rep.Checkpoints, rep.SignedSize)
		} else {
			fmt.Fprintf(out, ", %d checkpoints NOT checked (no --public-key for log %s)", rep.Checkpoints, rep.LogID)
		}
		fmt.Fprintln(out)
		if rep.Local {
			fmt.Fprintf(out, "  local log %s matches the stream through seq %d", safeText(r.local), rep.Records)
			if rep.LocalAhead > 0 {
				fmt.Fprintf(out, "; %d newer local records are not in the stream yet", rep.LocalAhead)
			}
			fmt.Fprintln(out)
		}
	}
	if failed > 0 {
		return &ExitError{Code: exitVerifyFailed, Err: fmt.Errorf("audit verify: %d of %d copies fail", failed, len(reps))}
	}
	return nil
}

func printReplicaFailure(out io.Writer, rep replicate.NodeReport) {
	var se *replicate.StreamError
	if !errors.As(rep.Err, &se) {
		fmt.Fprintf(out, "FAIL: node %s, log %s\n  detail:  %s\n", safeText(rep.Node), rep.LogID, terminalLine(rep.Err.Error()))
		return
	}
	fmt.Fprintf(out, "FAIL: %s: node %s, log %s\n", se.Kind, safeText(se.Node), se.LogID)
	if se.Seq > 0 {
		fmt.Fprintf(out, "  seq:        %d\n", se.Seq)
	}
	if se.StreamSeq > 0 {
		fmt.Fprintf(out, "  stream seq: %d\n", se.StreamSeq)
	}
	fmt.Fprintf(out, "  detail:     %s\n", terminalLine(fmt.Sprint(se.Err)))
}
