package cli

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"github.com/vramseal/vramseal/audit"
	"github.com/vramseal/vramseal/gpu"
	"github.com/vramseal/vramseal/gpu/cuda"
	"github.com/vramseal/vramseal/gpu/sim"
	"github.com/vramseal/vramseal/internal/server"
	"github.com/vramseal/vramseal/narration"
	"github.com/vramseal/vramseal/replicate"
	"github.com/vramseal/vramseal/seal"
	"github.com/vramseal/vramseal/vram"
)

// serveConfig holds the daemon's settings; every flag also reads a
// VRAMSEAL_* environment variable (flag wins).
type serveConfig struct {
	listen       string
	device       string
	cudaLibrary  string
	simDevices   int
	simCapacity  ByteSize
	dataDir      string
	auditDir     string
	auditFailure string
	auditRetain  string
	auditSegment ByteSize
	auditEpoch   time.Duration
	secretFile   string
	tokenFile    string
	modelRoots   []string
	logFormat    string
	logLevel     string
	headroom     ByteSize
	maxShard     ByteSize
	chunkSize    ByteSize
	workerID     string
	testFaults   bool
	shutdownWait time.Duration
	scrubRate    ByteSize
	scrubEvery   time.Duration
	attachSocket string
	attachUIDs   []uint
	attachGIDs   []uint
	attachConns  int
	uploadIdle   time.Duration
	uploadRate   ByteSize
	uploadGrace  time.Duration
	uploadLimit  time.Duration
	replicate    replicateConfig
}

func newServeCmd() *cobra.Command {
	cfg := serveConfig{simCapacity: 8 << 30, chunkSize: seal.DefaultChunkSize, uploadRate: server.DefaultUploadMinRate,
		auditSegment: defaultAuditSegment, auditEpoch: defaultAuditEpoch}
	cmd := &cobra.Command{
		Use: "serve",
		Example: `  vramseal serve
  vramseal serve --device sim --sim-capacity 16GiB --model-root /models
  vramseal serve --listen 0.0.0.0:7788 --token-file /etc/vramseal/token --scrub-rate 1GiB`,
		Short: "Run the residency daemon: hold sealed shards in VRAM and serve the HTTP API",
		Long: `Serve runs the vramseal daemon. It keeps model shards resident in GPU memory
under a cryptographic seal, verifies them on request (the execute gate),
records every operation in a tamper-evident audit log, and narrates it.

Every flag can also be set with an environment variable: --data-dir is
VRAMSEAL_DATA_DIR, --sim-capacity is VRAMSEAL_SIM_CAPACITY, and so on. A
flag on the command line wins over the environment.

On first start the daemon creates the data directory (0700) with a worker
secret (worker.secret, 0600) and an audit log (audit/); the audit log's
verification key is written to audit-verification.key: move it off this
machine, since whoever holds it can check, and forge, old records. The
checkpoint public key is printed and written to audit-verification.key.pub:
give it to auditors (audit verify --public-key); it forges nothing.

The audit log records daemon_started (version, backend and why, devices,
policy settings) before the daemon serves, and daemon_stopped (why, shards
released, uptime) after it released every shard.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := applyEnv(cmd.Flags()); err != nil {
				return &ExitError{Code: 2, Err: err}
			}
			return runServe(cmd.Context(), cmd.ErrOrStderr(), cfg)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.listen, "listen", DefaultListen, "address to serve on; a non-loopback address requires --token-file")
	f.StringVar(&cfg.device, "device", "auto", "GPU backend: auto (CUDA if usable, else simulated), sim or cuda")
	f.StringVar(&cfg.cudaLibrary, "cuda-library", "", "CUDA driver library to load (default libcuda.so.1 from the system's library path)")
	f.IntVar(&cfg.simDevices, "sim-devices", 1, "number of simulated GPUs")
	f.Var(&cfg.simCapacity, "sim-capacity", "VRAM of each simulated GPU (e.g. 8GiB)")
	f.StringVar(&cfg.dataDir, "data-dir", "vramseal-data", "directory for the worker secret and the audit log")
	f.StringVar(&cfg.auditDir, "audit-dir", "", "audit log directory (default DATA-DIR/audit)")
	f.StringVar(&cfg.auditFailure, "audit-failure", "closed", "when the audit log fails: closed (refuse operations) or open (go on, count and report)")
	cfg.replicate.flags(f)
	f.StringVar(&cfg.auditRetain, "audit-retain", "", "delete closed, verified audit segments older than this (e.g. 2555d); empty keeps everything")
	f.Var(&cfg.auditSegment, "audit-segment-size", "rotate the audit segment (and evolve the key) before it would grow past this size (64KiB to 1TiB)")
	f.DurationVar(&cfg.auditEpoch, "audit-epoch-interval", defaultAuditEpoch, "evolve the audit key at least this often, even when idle: a key taken from this machine cannot forge records older than its epoch (1s to 24h)")
	f.StringVar(&cfg.secretFile, "secret-file", "", "worker secret for seal keys (default DATA-DIR/worker.secret, generated 0600 when absent)")
	f.StringVar(&cfg.tokenFile, "token-file", "", "file holding the bearer token clients must send: one line, at least 16 printable ASCII characters, mode 0600 or 0400")
	f.StringArrayVar(&cfg.modelRoots, "model-root", nil, "directory shards may be loaded from by path (repeatable)")
	f.StringVar(&cfg.logFormat, "log-format", "console", "narration format: console or json")
	f.StringVar(&cfg.logLevel, "log-level", "info", "narration level: debug, info, warn or error")
	f.Var(&cfg.headroom, "headroom", "VRAM to keep free on every GPU (e.g. 1GiB)")
	f.Var(&cfg.maxShard, "max-shard-size", "largest shard accepted (default 100GiB)")
	f.Var(&cfg.chunkSize, "chunk-size", "chunk tree leaf size")
	f.StringVar(&cfg.workerID, "worker-id", "", "worker ID recorded in seals and the audit log (default worker-HOSTNAME)")
	f.DurationVar(&cfg.shutdownWait, "shutdown-timeout", 30*time.Second, "how long to wait for in-flight requests on shutdown")
	f.Var(&cfg.scrubRate, "scrub-rate", "re-verify every chunk of every shard in the background at this many bytes per second (e.g. 1GiB); 0 turns the scrub off")
	f.DurationVar(&cfg.scrubEvery, "scrub-interval", 10*time.Minute, "pause between background scrub passes")
	f.StringVar(&cfg.attachSocket, "attach-socket", "", "Unix socket inference processes attach to shards on (default DATA-DIR/attach.sock; \"none\" turns it off)")
	f.UintSliceVar(&cfg.attachUIDs, "attach-allow-uid", nil, "uid allowed to attach (repeatable; default: the daemon's own uid)")
	f.UintSliceVar(&cfg.attachGIDs, "attach-allow-gid", nil, "gid allowed to attach (repeatable)")
	f.IntVar(&cfg.attachConns, "attach-max-connections", 1024, "most attach connections open at once; more are refused")
	f.DurationVar(&cfg.uploadIdle, "upload-idle-timeout", server.DefaultUploadIdleTimeout, "abort an upload that sends nothing for this long, and free its VRAM")
	f.Var(&cfg.uploadRate, "upload-min-rate", "abort an upload whose average rate falls below this many bytes per second after --upload-rate-grace, and free its VRAM; 0 turns the rule off")
	f.DurationVar(&cfg.uploadGrace, "upload-rate-grace", server.DefaultUploadRateGrace, "how long an upload runs before --upload-min-rate applies")
	f.DurationVar(&cfg.uploadLimit, "upload-timeout", 0, "longest any upload may take; 0: no fixed limit beyond what --upload-min-rate implies (grace, or size/rate when longer)")
	f.BoolVar(&cfg.testFaults, "enable-test-faults", false, "serve POST /v1/test/corrupt to flip bits in simulated device memory (tests only)")
	_ = f.MarkHidden("enable-test-faults")
	return cmd
}

// applyEnv sets every flag not given on the command line from its
// VRAMSEAL_* environment variable (--sim-capacity: VRAMSEAL_SIM_CAPACITY).
// Repeatable flags take a comma-separated list.
func applyEnv(fs *pflag.FlagSet) error {
	var err error
	fs.VisitAll(func(f *pflag.Flag) {
		if err != nil || f.Changed || f.Hidden {
			return
		}
		name := "VRAMSEAL_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		v, ok := os.LookupEnv(name)
		if !ok {
			return
		}
		vals := []string{v}
		if f.Value.Type() == "stringArray" {
			vals = strings.Split(v, ",")
		}
		for _, v := range vals {
			if e := fs.Set(f.Name, v); e != nil {
				err = fmt.Errorf("%s=%q: %w", name, v, e)
				return
			}
		}
	})
	return err
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("--log-level %q: use debug, info, warn or error", s)
	}
	return l, nil
}

func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func runServe(ctx context.Context, stderr io.Writer, cfg serveConfig) error {
	// Validate everything before touching the disk or a device.
	level, err := parseLevel(cfg.logLevel)
	if err != nil {
		return &ExitError{Code: 2, Err: err}
	}
	var sink narration.Sink
	say := sayer(stderr, cfg.logFormat)
	switch cfg.logFormat {
	case "console":
		sink = narration.NewConsoleSink(stderr, narration.ConsoleOptions{Color: narration.UseColor(stderr, os.Getenv("NO_COLOR"))})
	case "json":
		sink = narration.NewJSONSink(stderr)
	default:
		return &ExitError{Code: 2, Err: fmt.Errorf("--log-format %q: use console or json", cfg.logFormat)}
	}
	attachUIDs, attachGIDs, err := attachIDs(cfg)
	if err != nil {
		return &ExitError{Code: 2, Err: err}
	}
	aopts, err := auditOptions(cfg)
	if err != nil {
		return &ExitError{Code: 2, Err: err}
	}
	if err := cfg.replicate.check(); err != nil {
		return &ExitError{Code: 2, Err: err}
	}
	var token string
	if cfg.tokenFile != "" {
		var err error
		if token, err = readTokenFile("--token-file", cfg.tokenFile, true); err != nil {
			return err
		}
	}
	if !isLoopback(cfg.listen) && token == "" {
		return &ExitError{Code: 2, Err: fmt.Errorf("--listen %s is not a loopback address: set --token-file so clients must authenticate", cfg.listen)}
	}
	if cfg.shutdownWait <= 0 {
		return &ExitError{Code: 2, Err: fmt.Errorf("--shutdown-timeout %v: must be positive", cfg.shutdownWait)}
	}
	if cfg.simDevices < 1 || cfg.simDevices > 64 {
		return &ExitError{Code: 2, Err: fmt.Errorf("--sim-devices %d: must be between 1 and 64", cfg.simDevices)}
	}
	if cfg.uploadIdle <= 0 || cfg.uploadGrace <= 0 || cfg.uploadLimit < 0 || cfg.uploadRate < 0 {
		return &ExitError{Code: 2, Err: fmt.Errorf("--upload-idle-timeout %v, --upload-rate-grace %v, --upload-timeout %v and --upload-min-rate %d: the durations must be positive (the timeout may be 0), the rate not negative",
			cfg.uploadIdle, cfg.uploadGrace, cfg.uploadLimit, int64(cfg.uploadRate))}
	}
	if cfg.scrubRate < 0 || cfg.scrubEvery <= 0 {
		return &ExitError{Code: 2, Err: fmt.Errorf("--scrub-rate %d and --scrub-interval %v: the rate must not be negative, the interval must be positive", int64(cfg.scrubRate), cfg.scrubEvery)}
	}

	narrator := narration.New(narration.Options{Sinks: []narration.Sink{sink}, Level: level, Actor: "vramseal"})
	if err := os.MkdirAll(cfg.dataDir, 0o700); err != nil {
		return fmt.Errorf("create --data-dir: %w", err)
	}
	key, err := loadOrCreateSecret(cfg)
	if err != nil {
		return err
	}
	devices, simDevs, backend, err := openDevices(ctx, cfg, narrator)
	if err != nil {
		return err
	}
	workerID := cfg.workerID
	if workerID == "" {
		host, _ := os.Hostname()
		workerID = "worker-" + host
	}
	aopts.Worker = workerID
	aopts.Node = cfg.replicate.node
	log, err := openAudit(cfg, aopts, say)
	if err != nil {
		return err
	}
	defer log.Close(context.Background())
	shipper, stopShipper, err := startReplication(cfg.replicate, log, say)
	if err != nil {
		return err
	}
	defer func() {
		// On an early return (the normal path stops it below, within the
		// shutdown timeout): a stream that refuses records, or a long
		// backlog, must not keep the process from exiting.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		stopShipper(ctx)
	}()
	replStatus := (func() replicate.Status)(nil)
	ready := server.AuditReady(log.Health)
	if shipper != nil {
		replStatus = shipper.Status
		auditReady := ready
		ready = func() error { return errors.Join(auditReady(), shipper.Ready()) }
	}

	m, err := vram.New(ctx, vram.Options{
		Devices: devices, Key: key, WorkerID: workerID, Headroom: int64(cfg.headroom),
		MaxShardBytes: int64(cfg.maxShard), ChunkSize: int64(cfg.chunkSize), Narrator: narrator, Audit: log,
	})
	if err != nil {
		return err
	}
	// The background scrub stops before the manager releases the shards.
	scrubCtx, stopScrub := context.WithCancel(narration.WithCorrelationID(context.Background(), "scrub-"+narration.NewCorrelationID()[:16]))
	scrubDone := make(chan struct{})
	if cfg.scrubRate > 0 {
		go func() {
			defer close(scrubDone)
			err := m.Scrub(scrubCtx, vram.ScrubOptions{BytesPerSecond: int64(cfg.scrubRate), Interval: cfg.scrubEvery})
			if scrubCtx.Err() == nil && !errors.Is(err, vram.ErrClosed) {
				say(slog.LevelError, "scrub_ended", fmt.Sprintf("background scrub ended: %v", err))
			}
		}()
	} else {
		close(scrubDone)
	}
	defer func() { stopScrub(); <-scrubDone }()
	if cfg.uploadRate == 0 {
		cfg.uploadRate = -1 // the flag's 0 is the Options' "off"
	}
	opts := server.Options{
		Manager: m, Token: token, ModelRoots: cfg.modelRoots, Narrator: narrator, Audit: log,
		UploadIdleTimeout: cfg.uploadIdle, UploadMinRate: int64(cfg.uploadRate), UploadRateGrace: cfg.uploadGrace, UploadTimeout: cfg.uploadLimit,
		Ready: ready,
		Health: func() map[string]any {
			h, st := log.Health(), log.Stats()
			a := map[string]any{"ok": h.OK, "state": h.State, "policy": h.Policy.String(), "queue": h.Queue,
				"queue_capacity": h.QueueCap, "last_seq": st.LastSeq, "epoch": st.Epoch, "unrecorded_events": m.AuditFailures()}
			if h.Err != nil {
				a["error"] = h.Err.Error()
			}
			if st.RetentionFailures > 0 {
				a["retention_failures"] = st.RetentionFailures
			}
			if h.RetentionErr != nil {
				a["retention_error"] = h.RetentionErr.Error()
			}
			out := map[string]any{"audit": a, "backend": backend.name, "narration": narrationHealth(narrator.Stats())}
			if shipper != nil {
				out["replication"] = replicationHealth(shipper)
			}
			if cfg.scrubRate > 0 {
				st := m.ScrubStats()
				sc := map[string]any{"rate_bytes_per_second": int64(cfg.scrubRate), "passes": st.Passes,
					"scrubbed_bytes": st.Bytes, "failures": st.Failures}
				if !st.LastPass.IsZero() {
					sc["last_pass"] = st.LastPass
				}
				out["scrub"] = sc
			}
			return out
		},
		Collectors: []prometheus.Collector{server.NewAuditCollector(log.Stats, log.Health), server.NewReplicationCollector(replStatus)},
	}
	if cfg.testFaults {
		if simDevs == nil {
			return &ExitError{Code: 2, Err: errors.New("--enable-test-faults needs the simulated device")}
		}
		opts.FaultHook = func(ctx context.Context, id string, off int64) error {
			buf, dev, err := m.Buffer(id)
			if err != nil {
				return err
			}
			return simDevs[dev].FlipBits(buf, off, 0x01)
		}
		say(slog.LevelWarn, "fault_injection", "WARNING: test fault injection is enabled (POST /v1/test/corrupt); never use this in production")
	}
	srv, err := server.New(opts)
	if err != nil {
		return err
	}
	defer srv.Close()
	var attachSrv *server.AttachServer
	if path := attachSocketPath(cfg); path != "" {
		attachSrv, err = server.ListenAttach(path, server.AttachOptions{Manager: server.ManagerAttacher(m),
			AllowUIDs: attachUIDs, AllowGIDs: attachGIDs, MaxConns: cfg.attachConns, Narrator: narrator,
			ObserveVerify: srv.ObserveVerify})
		if err != nil {
			return fmt.Errorf("attach socket: %w", err)
		}
		// Closed before the manager: attached processes hear of the
		// shutdown and their leases end before the shards are released.
		defer attachSrv.Close(context.Background())
	}
	ln, err := net.Listen("tcp", cfg.listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.listen, err)
	}
	hs := &http.Server{
		Handler:           srv.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
	}
	attachAt := "no attach socket"
	if attachSrv != nil {
		attachAt = "attach socket " + attachSrv.Path()
	}
	life, err := recordStarted(ctx, log, m, cfg, backend, ln.Addr().String())
	if err != nil {
		ln.Close()
		return err
	}
	say(slog.LevelInfo, "serving", fmt.Sprintf("serving on http://%s (%s backend, %d GPU(s), audit log %s, %s, %s)",
		ln.Addr(), backend, len(devices), auditDir(cfg), aopts.Policy, attachAt))
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	var serveErr error
	select {
	case err := <-errc:
		serveErr = fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	// Graceful shutdown: stop accepting, finish in-flight requests,
	// release every shard (audited), then flush and close the audit log.
	say(slog.LevelInfo, "shutdown", "shutting down: finishing requests, releasing shards, flushing the audit log")
	sctx, cancel := context.WithTimeout(context.Background(), cfg.shutdownWait)
	defer cancel()
	serr := hs.Shutdown(sctx)
	if serr != nil {
		// Requests still running past the deadline are cut off, so that
		// nothing touches the manager while it releases the shards.
		serr = errors.Join(serr, hs.Close())
	}
	stopScrub()
	<-scrubDone
	if attachSrv != nil {
		serr = errors.Join(serr, attachSrv.Close(context.Background()))
	}
	merr := life.stop(ctx, m, serveErr)
	// The audit log gets its own deadline: the releases just recorded
	// must reach the disk whatever the requests used up.
	actx, acancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer acancel()
	aerr := log.Close(actx)
	// What the log just wrote goes to the stream before the daemon exits,
	// if the stream is there to take it within a few seconds.
	rctx, rcancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer rcancel()
	stopShipper(rctx)
	return errors.Join(serveErr, serr, merr, aerr)
}

// attachSocketPath is the attach socket's path, or "" when it is off.
func attachSocketPath(cfg serveConfig) string {
	switch cfg.attachSocket {
	case "none":
		return ""
	case "":
		return filepath.Join(cfg.dataDir, "attach.sock")
	}
	return cfg.attachSocket
}

// attachIDs checks and converts --attach-allow-uid and --attach-allow-gid.
func attachIDs(cfg serveConfig) (uids, gids []uint32, err error) {
	conv := func(flag string, in []uint) ([]uint32, error) {
		out := make([]uint32, 0, len(in))
		for _, v := range in {
			if v > 1<<32-2 {
				return nil, fmt.Errorf("--%s %d: not a valid id", flag, v)
			}
			out = append(out, uint32(v))
		}
		return out, nil
	}
	if uids, err = conv("attach-allow-uid", cfg.attachUIDs); err != nil {
		return nil, nil, err
	}
	if gids, err = conv("attach-allow-gid", cfg.attachGIDs); err != nil {
		return nil, nil, err
	}
	if cfg.attachConns < 1 {
		return nil, nil, fmt.Errorf("--attach-max-connections %d: must be at least 1", cfg.attachConns)
	}
	return uids, gids, nil
}

func auditDir(cfg serveConfig) string {
	if cfg.auditDir != "" {
		return cfg.auditDir
	}
	return filepath.Join(cfg.dataDir, "audit")
}

// loadOrCreateSecret loads the worker secret, creating a random one (0600,
// 32 random bytes as hex) on first start when the file does not exist, at
// --secret-file's path or the default one. An existing file is never
// replaced: a seal key that changed would make every earlier seal fail.
func loadOrCreateSecret(cfg serveConfig) (seal.Key, error) {
	path := cfg.secretFile
	if path == "" {
		path = filepath.Join(cfg.dataDir, "worker.secret")
	}
	if _, err := os.Lstat(path); errors.Is(err, os.ErrNotExist) {
		var b [32]byte
		if _, err := rand.Read(b[:]); err != nil {
			return seal.Key{}, err
		}
		secret := []byte(hex.EncodeToString(b[:]) + "\n")
		clear(b[:])
		err := writePrivate(path, secret)
		clear(secret)
		if err != nil {
			return seal.Key{}, fmt.Errorf("create worker secret: %w", err)
		}
	}
	return seal.LoadKeyFile(path)
}

// Defaults of the audit flags: those of audit.Options.
const (
	defaultAuditSegment = 100 << 20
	defaultAuditEpoch   = time.Hour
)

// auditOptions turns the --audit-* flags into audit.Options (Worker
// aside).
func auditOptions(cfg serveConfig) (audit.Options, error) {
	o := audit.Options{Service: "vramseal", SegmentMaxBytes: int64(cfg.auditSegment), EpochInterval: cfg.auditEpoch}
	switch cfg.auditFailure {
	case "closed":
		o.Policy = audit.FailClosed
	case "open":
		o.Policy = audit.FailOpen
	default:
		return o, fmt.Errorf("--audit-failure %q: use open or closed", cfg.auditFailure)
	}
	if cfg.auditRetain != "" {
		d, err := parseDuration(cfg.auditRetain)
		if err != nil || d <= 0 {
			return o, fmt.Errorf("--audit-retain %q: want a positive duration such as 2555d", cfg.auditRetain)
		}
		o.Retain = d
	}
	if cfg.auditSegment < 64<<10 || cfg.auditSegment > 1<<40 {
		return o, fmt.Errorf("--audit-segment-size %d: want 64KiB to 1TiB", int64(cfg.auditSegment))
	}
	if cfg.auditEpoch < time.Second || cfg.auditEpoch > 24*time.Hour {
		return o, fmt.Errorf("--audit-epoch-interval %v: want 1s to 24h", cfg.auditEpoch)
	}
	return o, nil
}

// openAudit opens the audit log, initialising it on first start.
func openAudit(cfg serveConfig, opts audit.Options, say func(slog.Level, string, string)) (*audit.Log, error) {
	dir := auditDir(cfg)
	log, err := audit.Open(dir, opts)
	if errors.Is(err, audit.ErrNotInitialized) {
		vk, ierr := audit.Init(dir, opts)
		if ierr != nil {
			return nil, ierr
		}
		keyPath := filepath.Join(cfg.dataDir, "audit-verification.key")
		if werr := writePrivate(keyPath, vk.Encode()); werr != nil {
			return nil, fmt.Errorf("write verification key: %w", werr)
		}
		say(slog.LevelWarn, "audit_created", fmt.Sprintf("created audit log %s; its verification key is %s: move it off this machine (it verifies, and can forge, the log)", dir, keyPath))
		if err := servePublicKey(dir, keyPath+".pub", say); err != nil {
			return nil, err
		}
		log, err = audit.Open(dir, opts)
	}
	if err != nil {
		return nil, fmt.Errorf("open audit log: %w", err)
	}
	return log, nil
}

// openCUDA opens the CUDA driver; tests replace it.
var openCUDA = cuda.Open

// openDevices picks the GPU backend. auto uses CUDA when a usable NVIDIA
// GPU is present and otherwise falls back to the simulator, saying why;
// with an explicit --cuda-library there is no fallback: the operator asked
// for that driver. The choice says which backend and why, for the
// daemon_started audit record.
func openDevices(ctx context.Context, cfg serveConfig, n *narration.Narrator) ([]gpu.Device, []*sim.Device, backendChoice, error) {
	useSim := func(why string) ([]gpu.Device, []*sim.Device, backendChoice, error) {
		devs, err := sim.New(sim.Options{Devices: cfg.simDevices, Capacity: int64(cfg.simCapacity)})
		if err != nil {
			return nil, nil, backendChoice{}, err
		}
		choice := backendChoice{name: "sim", reason: "--device sim"}
		if why != "" {
			n.Emit(ctx, &narration.Event{Level: slog.LevelWarn, Action: "device_fallback", Target: "sim",
				Human: "No usable NVIDIA GPU; running on the SIMULATED device (weights stay in host memory)", Error: why})
			choice.reason = "--device auto: " + why
		}
		out := make([]gpu.Device, len(devs))
		for i, d := range devs {
			out[i] = d
		}
		return out, devs, choice, nil
	}
	switch cfg.device {
	case "sim":
		return useSim("")
	case "cuda", "auto":
		drv, err := openCUDA(cuda.Options{LibraryPath: cfg.cudaLibrary})
		if err != nil {
			if cfg.device == "cuda" || cfg.cudaLibrary != "" || !errors.Is(err, cuda.ErrUnavailable) {
				return nil, nil, backendChoice{}, fmt.Errorf("--device %s: %w", cfg.device, err)
			}
			return useSim(err.Error())
		}
		var out []gpu.Device
		for _, d := range drv.Devices() {
			out = append(out, d)
		}
		choice := backendChoice{name: "cuda", reason: "--device cuda"}
		if cfg.device == "auto" {
			choice.reason = "--device auto: the CUDA driver loaded and found a usable NVIDIA GPU"
		}
		return out, nil, choice, nil
	default:
		return nil, nil, backendChoice{}, &ExitError{Code: 2, Err: fmt.Errorf("--device %s: use auto, sim or cuda", strconv.Quote(cfg.device))}
	}
}

// sayer returns how serve states its own lifecycle (serving, shutting
// down, a new audit log): a "vramseal: " line on the console, or with
// --log-format json one whole JSON object per line like the narration, so
// that stderr stays pure NDJSON.
func sayer(w io.Writer, format string) func(level slog.Level, action, msg string) {
	if format != "json" {
		return func(_ slog.Level, _, msg string) { fmt.Fprintln(w, "vramseal: "+msg) }
	}
	l := slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
	return func(level slog.Level, action, msg string) {
		l.Log(context.Background(), level, msg, "actor", "vramseal", "action", action)
	}
}

// narrationHealth is the /healthz form of the narration counters, with
// snake_case keys like every other member.
func narrationHealth(st narration.Stats) map[string]uint64 {
	return map[string]uint64{"emitted": st.Emitted, "redactions": st.Redactions, "truncations": st.Truncations, "sink_errors": st.SinkErrors}
}
