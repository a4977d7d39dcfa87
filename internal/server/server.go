// Package server is the HTTP JSON API of the vramseal daemon: devices,
// capacity planning, sealing shards from allowed model roots or request
// bodies, verification (the execute gate), release, reset, health,
// readiness and Prometheus metrics.
package server

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/vramseal/vramseal/audit"
	"github.com/vramseal/vramseal/narration"
	"github.com/vramseal/vramseal/seal"
	"github.com/vramseal/vramseal/vram"
)

// Options configure a [Server]. Manager is required; every other zero
// value works.
type Options struct {
	// Manager holds the shards; required.
	Manager *vram.Manager
	// Token, when set, is required as "Authorization: Bearer TOKEN" on
	// every endpoint but /healthz and /readyz.
	Token string
	// ModelRoots are the directories a shard may be loaded from by path.
	// None means loading by path is refused (uploads still work).
	ModelRoots []string
	// MaxUploadBytes caps a shard sent in a request body. Zero means the
	// manager's maximum shard size.
	MaxUploadBytes int64
	// Ready reports extra readiness conditions (for example a failed
	// fail-closed audit log: see [AuditReady]); nil means none. A non-nil
	// error makes /readyz answer 503 with its message.
	Ready func() error
	// Health adds fields to /healthz; nil means none.
	Health func() map[string]any
	// Registry receives the metrics. Nil means a fresh registry.
	Registry *prometheus.Registry
	// Narrator receives request narration; nil means none.
	Narrator *narration.Narrator
	// Collectors are extra metrics sources served on /metrics.
	Collectors []prometheus.Collector
	// UploadIdleTimeout is the longest an upload may send no bytes before
	// it is aborted and its VRAM freed. Zero means
	// [DefaultUploadIdleTimeout] (30 s).
	UploadIdleTimeout time.Duration
	// UploadMinRate is the lowest average rate, in bytes per second from
	// the start of the body, at which an upload may go on once
	// UploadRateGrace has passed; a slower one is aborted and its VRAM
	// freed. It bounds an upload's time too: max(grace, size/rate). Zero
	// means [DefaultUploadMinRate] (1 MiB/s); negative turns the rule off.
	UploadMinRate int64
	// UploadRateGrace is how long an upload runs before UploadMinRate
	// applies. Zero means [DefaultUploadRateGrace] (10 s).
	UploadRateGrace time.Duration
	// UploadTimeout, when positive, is the longest any upload may take,
	// whatever its rate. Zero means no fixed deadline beyond what
	// UploadMinRate implies.
	UploadTimeout time.Duration
	// Audit receives the API's own audit events ([EventUploadAborted]);
	// nil records none. The manager records residency events itself.
	Audit vram.Auditor
	// FaultHook, when non-nil, is served at POST /v1/test/corrupt. It is
	// for end-to-end tests only and is enabled by a dedicated flag.
	FaultHook func(ctx context.Context, shardID string, offset int64) error
}

// maxJSONBody caps JSON request bodies.
const maxJSONBody = 64 << 10

// Server serves the API.
type Server struct {
	opts    Options
	m       *vram.Manager
	roots   []*os.Root
	metrics *metrics
	token   [32]byte
	handler http.Handler
}

// New builds a server. It opens the model roots now so that a missing
// root is a start-up error, not a per-request surprise.
func New(opts Options) (*Server, error) {
	if opts.Manager == nil {
		return nil, errors.New("server: no manager")
	}
	s := &Server{opts: opts, m: opts.Manager}
	if s.opts.MaxUploadBytes == 0 {
		s.opts.MaxUploadBytes = s.m.MaxShardBytes()
	}
	// Absolute roots, so that absolute request paths can be matched
	// against them whatever the daemon's working directory.
	s.opts.ModelRoots = make([]string, len(opts.ModelRoots))
	for i, dir := range opts.ModelRoots {
		abs, err := filepath.Abs(dir)
		if err == nil {
			abs, err = filepath.EvalSymlinks(abs)
		}
		if err != nil {
			return nil, fmt.Errorf("server: model root: %w", err)
		}
		r, err := os.OpenRoot(abs)
		if err != nil {
			return nil, fmt.Errorf("server: model root: %w", err)
		}
		s.opts.ModelRoots[i] = abs
		s.roots = append(s.roots, r)
	}
	if opts.Token != "" {
		s.token = sha256.Sum256([]byte(opts.Token))
	}
	reg := opts.Registry
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	s.metrics = newMetrics(reg, s.m)
	for _, c := range opts.Collectors {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("server: register metrics: %w", err)
		}
	}

	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", s.healthz)
	mux.HandleFunc("GET /readyz", s.readyz)
	mux.Handle("GET /metrics", s.auth(promhttp.HandlerFor(reg, promhttp.HandlerOpts{})))
	api := func(pattern string, h http.HandlerFunc) { mux.Handle(pattern, s.auth(h)) }
	api("GET /v1/devices", s.devices)
	api("GET /v1/capacity", s.capacity)
	api("GET /v1/shards", s.listShards)
	api("POST /v1/shards", s.addShard)
	api("GET /v1/shards/{id}", s.getShard)
	api("DELETE /v1/shards/{id}", s.releaseShard)
	api("POST /v1/shards/{id}/verify", s.verifyShard)
	api("GET /v1/models", s.listModels)
	api("POST /v1/models", s.addModel)
	api("GET /v1/models/{id}", s.getModel)
	api("DELETE /v1/models/{id}", s.releaseModel)
	api("POST /v1/models/{id}/verify", s.verifyModel)
	api("POST /v1/reset", s.reset)
	api("GET /v1/status", s.status)
	if opts.FaultHook != nil {
		api("POST /v1/test/corrupt", s.corrupt)
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		// The mux answers a known path with the wrong method with 405
		// before reaching here only for patterns without a method; check
		// the other methods to say 405 with Allow instead of 404.
		var allow []string
		for _, m := range []string{http.MethodGet, http.MethodPost, http.MethodDelete} {
			probe := r.Clone(r.Context())
			probe.Method = m
			if _, pattern := mux.Handler(probe); pattern != "/" && pattern != "" {
				allow = append(allow, m)
			}
		}
		if len(allow) > 0 {
			w.Header().Set("Allow", strings.Join(allow, ", "))
			writeError(w, r, &httpError{http.StatusMethodNotAllowed, CodeMethod, fmt.Errorf("%s is not allowed on %s (allowed: %s)", r.Method, sanitizePath(r.URL.Path), strings.Join(allow, ", "))})
			return
		}
		writeError(w, r, &httpError{http.StatusNotFound, CodeNotFound, fmt.Errorf("no endpoint %s %s", r.Method, sanitizePath(r.URL.Path))})
	})
	s.handler = narration.Middleware(mux)
	return s, nil
}

// Handler returns the HTTP handler (with correlation-ID middleware).
func (s *Server) Handler() http.Handler { return s.handler }

// Close releases the model roots.
func (s *Server) Close() error {
	for _, r := range s.roots {
		r.Close()
	}
	return nil
}

func sanitizePath(p string) string {
	if len(p) > 128 {
		p = p[:128]
	}
	return strconv.Quote(p)
}

// authorized reports whether r carries the bearer token (always true when
// the daemon has none).
func (s *Server) authorized(r *http.Request) bool {
	if s.opts.Token == "" {
		return true
	}
	h := r.Header.Get("Authorization")
	// The scheme is case-insensitive (RFC 7235).
	if len(h) <= 7 || !strings.EqualFold(h[:7], "Bearer ") {
		return false
	}
	// Compare fixed-length digests so neither the token's content nor its
	// length leaks through timing.
	sum := sha256.Sum256([]byte(h[7:]))
	return subtle.ConstantTimeCompare(sum[:], s.token[:]) == 1
}

func (s *Server) auth(next http.Handler) http.Handler {
	if s.opts.Token == "" {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !s.authorized(r) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="vramseal"`)
			writeError(w, r, &httpError{http.StatusUnauthorized, CodeUnauthorized, errors.New("missing or wrong bearer token")})
			return
		}
		next.ServeHTTP(w, r)
	})
}

// healthz answers liveness. Probes need no token; the details (stop
// reason, audit log state) go only to callers with the token, since they
// name shards and files.
func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	state, reason := s.m.State()
	body := map[string]any{"status": "ok", "worker_state": state.String()}
	if !s.authorized(r) {
		writeJSON(w, http.StatusOK, body)
		return
	}
	if reason != "" {
		body["stop_reason"] = reason
	}
	if s.opts.Health != nil {
		for k, v := range s.opts.Health() {
			body[k] = v
		}
	}
	writeJSON(w, http.StatusOK, body)
}

// readyz answers readiness; like healthz it gives reasons only to callers
// with the token.
func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	notReady := func(short, detail string) {
		if s.authorized(r) {
			short += ": " + detail
		}
		writeJSON(w, http.StatusServiceUnavailable, map[string]any{"ready": false, "reason": short})
	}
	state, reason := s.m.State()
	if state == vram.Stopped {
		notReady("worker stopped", reason)
		return
	}
	if s.opts.Ready != nil {
		if err := s.opts.Ready(); err != nil {
			notReady("not ready", err.Error())
			return
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"ready": true})
}

// AuditReady returns an [Options.Ready] hook for an audit log, given its
// Health method: not ready while a fail-closed log is failed or closed,
// since every audited operation would then be refused with
// [CodeAuditFailed]. A fail-open log never makes the daemon unready: it
// goes on without records, and the failure shows in
// vramseal_audit_write_errors_total and /healthz.
func AuditReady(health func() audit.Health) func() error {
	return func() error {
		h := health()
		if h.OK || h.Policy != audit.FailClosed {
			return nil
		}
		if h.Err != nil {
			return fmt.Errorf("audit log %s (fail-closed): %w", h.State, h.Err)
		}
		return fmt.Errorf("audit log %s (fail-closed)", h.State)
	}
}

// DeviceJSON is one device in GET /v1/devices.
type DeviceJSON struct {
	Index                int    `json:"gpu"`
	Name                 string `json:"name"`
	UUID                 string `json:"uuid"`
	Driver               string `json:"driver"`
	DriverVersion        string `json:"driver_version,omitempty"`
	TotalBytes           uint64 `json:"total_bytes"`
	FreeBytes            uint64 `json:"free_bytes"`
	Integrated           bool   `json:"integrated"`
	PageableMemoryAccess bool   `json:"pageable_memory_access"`
	HashesOnDevice       bool   `json:"hashes_on_device"`
}

func (s *Server) devices(w http.ResponseWriter, r *http.Request) {
	infos, err := s.m.Devices(r.Context())
	if err != nil {
		writeError(w, r, err)
		return
	}
	out := make([]DeviceJSON, 0, len(infos))
	for _, i := range infos {
		out = append(out, DeviceJSON{i.Index, i.Name, i.UUID, i.Driver, i.DriverVersion, i.TotalBytes, i.FreeBytes, i.Integrated, i.PageableMemoryAccess, i.CanHash})
	}
	writeJSON(w, http.StatusOK, map[string]any{"devices": out})
}

// CapacityJSON is one device in GET /v1/capacity.
type CapacityJSON struct {
	Device         int    `json:"gpu"`
	UUID           string `json:"uuid"`
	TotalBytes     int64  `json:"total_bytes"`
	FreeBytes      int64  `json:"free_bytes"`
	UsedBytes      int64  `json:"used_bytes"`
	ReservedBytes  int64  `json:"reserved_bytes"`
	HeadroomBytes  int64  `json:"headroom_bytes"`
	AvailableBytes int64  `json:"available_bytes"`
	Shards         int    `json:"shards"`
}

// PlanJSON answers "would a shard of N bytes fit now, and where".
type PlanJSON struct {
	RequestedBytes int64 `json:"requested_bytes"`
	Fits           bool  `json:"fits"`
	// Device is the GPU with the most available memory that fits; nil
	// (left out) when none does.
	Device *int `json:"gpu,omitempty"`
}

func (s *Server) capacity(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	var want int64 = -1
	if v := q.Get("bytes"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n <= 0 {
			writeError(w, r, badRequest("bytes=%s: must be a positive integer", strconv.Quote(v)))
			return
		}
		want = n
	}
	devs := []int{}
	if v := q.Get("gpu"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			writeError(w, r, badRequest("gpu=%s: must be an integer", strconv.Quote(v)))
			return
		}
		devs = append(devs, n)
	} else {
		for i := range s.m.DeviceCount() {
			devs = append(devs, i)
		}
	}
	out := struct {
		Devices []CapacityJSON `json:"devices"`
		Plan    *PlanJSON      `json:"plan,omitempty"`
	}{Devices: []CapacityJSON{}}
	for _, d := range devs {
		c, err := s.m.Capacity(r.Context(), d)
		if err != nil {
			writeError(w, r, err)
			return
		}
		out.Devices = append(out.Devices, CapacityJSON(c))
	}
	if want > 0 {
		p := &PlanJSON{RequestedBytes: want}
		best := int64(-1)
		for _, c := range out.Devices {
			if c.AvailableBytes >= want && c.AvailableBytes > best {
				p.Fits, p.Device, best = true, &c.Device, c.AvailableBytes
			}
		}
		out.Plan = p
	}
	writeJSON(w, http.StatusOK, out)
}

// ShardJSON is a resident shard: its seal, chunk count and the processes
// attached to it. It never holds device pointers.
type ShardJSON struct {
	Seal        seal.Seal        `json:"seal"`
	Chunks      int64            `json:"chunks"`
	Attachments []AttachmentJSON `json:"attachments"`
	// Status is "ok"; "verifying" while a verification of the shard runs;
	// or "corrupt" for a shard quarantined after a failed verification or
	// scrub (Quarantined then names the failure).
	Status      string `json:"status"`
	Quarantined string `json:"quarantined,omitempty"`
	// LastVerified is the last verification that passed (absent when none
	// has yet).
	LastVerified *LastVerifiedJSON `json:"last_verified,omitempty"`
	// Backend is the driver of the shard's GPU: "sim" or "cuda".
	Backend string `json:"backend"`
}

// LastVerifiedJSON is a shard's last successful verification: its mode
// ("full", "sampled" or "scrub") and when it ended.
type LastVerifiedJSON struct {
	Mode string    `json:"mode"`
	At   time.Time `json:"at"`
}

// AttachmentJSON is one consumer process attached to a shard.
type AttachmentJSON struct {
	LeaseID    string    `json:"lease_id"`
	PID        int32     `json:"pid"`
	UID        uint32    `json:"uid"`
	GID        uint32    `json:"gid"`
	Executable string    `json:"executable"`
	AttachedAt time.Time `json:"attached_at"`
	// Revoked is set once the shard was released with force; the
	// attachment lasts until the process detaches.
	Revoked bool `json:"revoked"`
}

func attachmentsJSON(ls []vram.LeaseInfo) []AttachmentJSON {
	out := make([]AttachmentJSON, 0, len(ls))
	for _, l := range ls {
		out = append(out, AttachmentJSON{LeaseID: l.ID, PID: l.Holder.PID, UID: l.Holder.UID, GID: l.Holder.GID,
			Executable: l.Holder.Exe, AttachedAt: l.AttachedAt, Revoked: l.Revoked})
	}
	return out
}

func shardJSON(sh vram.ShardInfo) ShardJSON {
	j := ShardJSON{Seal: sh.Seal, Chunks: sh.Chunks, Attachments: attachmentsJSON(sh.Attachments), Status: "ok", Backend: sh.Backend}
	switch {
	case sh.Quarantined != "":
		j.Status, j.Quarantined = "corrupt", sh.Quarantined
	case sh.Verifying:
		j.Status = "verifying"
	}
	if sh.LastVerifiedMode != "" {
		j.LastVerified = &LastVerifiedJSON{Mode: sh.LastVerifiedMode, At: sh.LastVerifiedAt}
	}
	return j
}

func (s *Server) listShards(w http.ResponseWriter, r *http.Request) {
	list := s.m.Shards()
	out := make([]ShardJSON, 0, len(list))
	for _, sh := range list {
		out = append(out, shardJSON(sh))
	}
	writeJSON(w, http.StatusOK, map[string]any{"shards": out})
}

func (s *Server) getShard(w http.ResponseWriter, r *http.Request) {
	sh, err := s.m.Shard(r.PathValue("id"))
	if err != nil {
		writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, shardJSON(sh))
}

// AddRequest is the JSON body of POST /v1/shards (load by path). An
// upload instead sends the bytes as application/octet-stream with the
// same fields as query parameters.
type AddRequest struct {
	ShardID    string `json:"shard_id,omitempty"`
	ModelRef   string `json:"model_ref,omitempty"`
	ShardIndex int    `json:"shard_index,omitempty"`
	ShardCount int    `json:"shard_count,omitempty"`
	Device     int    `json:"gpu,omitempty"`
	// Path is the model file, absolute or relative to a model root.
	Path string `json:"path"`
}

func (s *Server) addShard(w http.ResponseWriter, r *http.Request) {
	sealBy(s, w, r, s.upload, s.loadPath, func(sh vram.ShardInfo) any { return shardJSON(sh) })
}

// sealBy answers a POST that seals, by the request's content type: the
// bytes themselves (application/octet-stream) or a path under a model root
// (application/json). The seal's time is observed; the answer is 201.
func sealBy[T any](s *Server, w http.ResponseWriter, r *http.Request, upload, byPath func(http.ResponseWriter, *http.Request) (T, error), answer func(T) any) {
	ct := r.Header.Get("Content-Type")
	var (
		v   T
		err error
	)
	start := time.Now()
	switch {
	case strings.HasPrefix(ct, "application/octet-stream"):
		v, err = upload(w, r)
	case strings.HasPrefix(ct, "application/json") || ct == "":
		v, err = byPath(w, r)
	default:
		err = &httpError{http.StatusUnsupportedMediaType, CodeInvalid, fmt.Errorf("content type %s: use application/json (path) or application/octet-stream (bytes)", strconv.Quote(ct))}
	}
	if err != nil {
		writeError(w, r, err)
		return
	}
	s.metrics.sealDuration.Observe(time.Since(start).Seconds())
	writeJSON(w, http.StatusCreated, answer(v))
}

func (s *Server) upload(w http.ResponseWriter, r *http.Request) (vram.ShardInfo, error) {
	q := r.URL.Query()
	for name, vs := range q {
		if len(vs) > 1 {
			return vram.ShardInfo{}, badRequest("query parameter %s is given %d times: give it once", strconv.Quote(name), len(vs))
		}
	}
	req := vram.SealRequest{ShardID: q.Get("shard_id"), ModelRef: q.Get("model_ref"), Format: q.Get("format")}
	for _, f := range []struct {
		name string
		dst  *int
	}{{"shard_index", &req.ShardIndex}, {"shard_count", &req.ShardCount}, {"gpu", &req.Device}} {
		if v := q.Get(f.name); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil {
				return vram.ShardInfo{}, badRequest("%s=%s: must be an integer", f.name, strconv.Quote(v))
			}
			*f.dst = n
		}
	}
	if r.ContentLength < 0 {
		return vram.ShardInfo{}, &httpError{http.StatusLengthRequired, CodeInvalid, errors.New("uploads need a Content-Length")}
	}
	limit := s.opts.MaxUploadBytes
	if limit > 0 && r.ContentLength > limit {
		return vram.ShardInfo{}, &httpError{http.StatusRequestEntityTooLarge, CodeTooLarge, fmt.Errorf("body of %d bytes exceeds the upload limit of %d bytes", r.ContentLength, limit)}
	}
	req.Size = r.ContentLength
	body := newUploadReader(w, r.Body, r.ContentLength, s.uploadLimits())
	req.Data = body
	sh, err := s.m.Seal(r.Context(), req)
	body.finish(w)
	if body.aborted != nil && err != nil {
		s.uploadAborted(r.Context(), req.ShardID, body.aborted)
		return sh, &httpError{http.StatusRequestTimeout, CodeUploadTooSlow, body.aborted}
	}
	return sh, err
}

func (s *Server) loadPath(w http.ResponseWriter, r *http.Request) (vram.ShardInfo, error) {
	var req AddRequest
	if err := decodeJSON(w, r, &req); err != nil {
		return vram.ShardInfo{}, err
	}
	if req.Path == "" {
		return vram.ShardInfo{}, badRequest("path is required")
	}
	f, err := s.openModel(req.Path)
	if err != nil {
		return vram.ShardInfo{}, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return vram.ShardInfo{}, err
	}
	if !st.Mode().IsRegular() {
		return vram.ShardInfo{}, badRequest("%s is not a regular file", strconv.Quote(req.Path))
	}
	if req.ModelRef == "" {
		req.ModelRef = filepath.Base(req.Path)
	}
	return s.m.Seal(r.Context(), vram.SealRequest{
		ShardID: req.ShardID, ModelRef: req.ModelRef, ShardIndex: req.ShardIndex, ShardCount: req.ShardCount,
		Device: req.Device, Size: st.Size(), Data: f,
	})
}

// openModel opens the regular file at path inside one of the model roots.
func (s *Server) openModel(path string) (*os.File, error) {
	root, rel, err := s.locate(path)
	if err != nil {
		return nil, err
	}
	// Stat first: opening a FIFO or device would block or have side
	// effects. os.Root resolves both inside the root.
	st, err := root.Stat(rel)
	if err == nil && !st.Mode().IsRegular() {
		return nil, badRequest("%s is not a regular file", strconv.Quote(path))
	}
	var f *os.File
	if err == nil {
		// O_NONBLOCK: a file swapped for a FIFO after the Stat must not
		// block the open; Seal checks the open file again.
		f, err = root.OpenFile(rel, os.O_RDONLY|syscall.O_NONBLOCK|syscall.O_NOCTTY, 0)
	}
	if err != nil {
		return nil, &httpError{http.StatusForbidden, CodeInvalid, fmt.Errorf("path %s is outside the model roots or unreadable", strconv.Quote(path))}
	}
	return f, nil
}

// locate finds path, absolute or relative, inside one of the model roots,
// and returns that root and the path relative to it. os.Root refuses any
// path that escapes its root, by ".." or by symbolic links.
func (s *Server) locate(path string) (*os.Root, string, error) {
	if len(s.roots) == 0 {
		return nil, "", &httpError{http.StatusForbidden, CodeInvalid, errors.New("loading by path is disabled: start the daemon with --model-root")}
	}
	if strings.ContainsRune(path, 0) || len(path) > 4096 {
		return nil, "", badRequest("path is not a valid file name")
	}
	inside := false
	for i, root := range s.roots {
		rel := path
		if filepath.IsAbs(path) {
			var err error
			rel, err = filepath.Rel(s.opts.ModelRoots[i], path)
			if err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
				continue
			}
		}
		inside = true
		_, err := root.Stat(rel)
		if err == nil {
			return root, rel, nil
		}
		if !errors.Is(err, os.ErrNotExist) {
			return nil, "", &httpError{http.StatusForbidden, CodeInvalid, fmt.Errorf("path %s is outside the model roots or unreadable", strconv.Quote(path))}
		}
	}
	if !inside {
		// An absolute path under none of the roots is refused like any
		// other path that leaves them, whether or not the file exists.
		return nil, "", &httpError{http.StatusForbidden, CodeInvalid, fmt.Errorf("path %s is outside the model roots", strconv.Quote(path))}
	}
	return nil, "", &httpError{http.StatusNotFound, CodeNotFound, fmt.Errorf("no file %s under the model roots", strconv.Quote(path))}
}

func decodeJSON(w http.ResponseWriter, r *http.Request, v any) error {
	return decodeJSONLimit(w, r, v, maxJSONBody)
}

// decodeJSONLimit decodes one JSON object of at most limit bytes, strictly.
func decodeJSONLimit(w http.ResponseWriter, r *http.Request, v any, limit int64) error {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, limit))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		if errors.Is(err, io.EOF) {
			return badRequest("empty request body: send a JSON object")
		}
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return &httpError{http.StatusRequestEntityTooLarge, CodeTooLarge, fmt.Errorf("JSON body exceeds %d bytes", mbe.Limit)}
		}
		return badRequest("malformed JSON body: %v", err)
	}
	if dec.More() {
		return badRequest("request body holds more than one JSON value")
	}
	return nil
}

// releaseShard releases a shard; one that processes hold is refused with
// 409 in_use naming them, unless ?force=true revokes their attachments.
func (s *Server) releaseShard(w http.ResponseWriter, r *http.Request) {
	force, err := forceParam(r)
	if err != nil {
		writeError(w, r, err)
		return
	}
	release := s.m.Release
	if force {
		release = s.m.ReleaseForce
	}
	if err := release(r.Context(), r.PathValue("id")); err != nil {
		writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"released": r.PathValue("id")})
}

// forceParam reads ?force=true|false, given at most once.
func forceParam(r *http.Request) (bool, error) {
	vs, ok := r.URL.Query()["force"]
	if !ok {
		return false, nil
	}
	if len(vs) != 1 || (vs[0] != "true" && vs[0] != "false") {
		return false, badRequest("force must be given once, as true or false")
	}
	return vs[0] == "true", nil
}

// VerifyRequest is the JSON body of POST /v1/shards/{id}/verify.
type VerifyRequest struct {
	// Mode is "full" or "sampled" (default "sampled").
	Mode string `json:"mode,omitempty"`
	// Samples is the number of chunks for sampled mode (default 16).
	Samples int `json:"samples,omitempty"`
}

// VerifyJSON is a successful verification.
type VerifyJSON struct {
	ShardID              string  `json:"shard_id"`
	Mode                 string  `json:"mode"`
	ChunksChecked        int64   `json:"chunks_checked"`
	Chunks               int64   `json:"chunks"`
	DetectionProbability float64 `json:"detection_probability"`
	DurationMS           float64 `json:"duration_ms"`
}

func (s *Server) verifyShard(w http.ResponseWriter, r *http.Request) {
	mode, err := verifyMode(w, r)
	if err != nil {
		writeError(w, r, err)
		return
	}
	res, err := s.m.Verify(r.Context(), r.PathValue("id"), mode)
	s.ObserveVerify(res, err)
	if err != nil {
		writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, verifyJSON(res))
}

// ObserveVerify counts a verification in the metrics: its duration by
// mode when it passed, a failure when it found changed bytes. The attach
// socket's verifications come here too (AttachOptions.ObserveVerify).
func (s *Server) ObserveVerify(res vram.VerifyResult, err error) {
	switch {
	case err == nil:
		s.metrics.verifyDuration.WithLabelValues(res.Mode).Observe(res.Duration.Seconds())
	case errors.Is(err, vram.ErrIntegrity):
		s.metrics.verifyFailures.Inc()
	}
}

func verifyJSON(res vram.VerifyResult) VerifyJSON {
	return VerifyJSON{res.ShardID, res.Mode, res.ChunksChecked, res.Chunks, res.DetectionProbability,
		float64(res.Duration) / float64(time.Millisecond)}
}

// verifyMode reads the optional [VerifyRequest] body.
func verifyMode(w http.ResponseWriter, r *http.Request) (vram.VerifyMode, error) {
	var req VerifyRequest
	if r.ContentLength != 0 {
		if err := decodeJSON(w, r, &req); err != nil {
			return vram.VerifyMode{}, err
		}
	}
	switch req.Mode {
	case "", "sampled":
		if req.Samples < 0 {
			return vram.VerifyMode{}, badRequest("samples must be positive")
		}
		if req.Samples > 0 {
			return vram.Sampled(req.Samples), nil
		}
		return vram.Sampled(vram.DefaultSamples), nil
	case "full":
		return vram.Full, nil
	default:
		return vram.VerifyMode{}, badRequest("mode %s: use full or sampled", strconv.Quote(req.Mode))
	}
}

// ResetRequest is the JSON body of POST /v1/reset.
type ResetRequest struct {
	Reason string `json:"reason"`
}

func (s *Server) reset(w http.ResponseWriter, r *http.Request) {
	var req ResetRequest
	if err := decodeJSON(w, r, &req); err != nil {
		writeError(w, r, err)
		return
	}
	if strings.TrimSpace(req.Reason) == "" {
		writeError(w, r, badRequest("reason is empty: say what was done about the failure"))
		return
	}
	err := s.m.Reset(r.Context(), req.Reason)
	switch {
	case errors.Is(err, vram.ErrNotStopped):
		writeJSON(w, http.StatusOK, ResetJSON{WorkerState: "running", Reset: false, Message: "the worker is running: there is nothing to reset", Quarantined: s.m.Quarantined()})
	case err != nil:
		writeError(w, r, err)
	default:
		writeJSON(w, http.StatusOK, ResetJSON{WorkerState: "running", Reset: true, Quarantined: s.m.Quarantined()})
	}
}

// ResetJSON answers POST /v1/reset. Reset is false when the worker was
// already running (nothing was done or recorded). Quarantined lists the
// shards that stay refused until they are released.
type ResetJSON struct {
	WorkerState string   `json:"worker_state"`
	Reset       bool     `json:"reset"`
	Message     string   `json:"message,omitempty"`
	Quarantined []string `json:"quarantined"`
}

func (s *Server) status(w http.ResponseWriter, r *http.Request) {
	state, reason := s.m.State()
	writeJSON(w, http.StatusOK, map[string]any{"worker_state": state.String(), "stop_reason": reason, "worker_id": s.m.WorkerID(), "key_id": s.m.Key().ID()})
}

// CorruptRequest is the body of the test-only fault hook.
type CorruptRequest struct {
	ShardID string `json:"shard_id"`
	Offset  int64  `json:"offset"`
}

func (s *Server) corrupt(w http.ResponseWriter, r *http.Request) {
	var req CorruptRequest
	if err := decodeJSON(w, r, &req); err != nil {
		writeError(w, r, err)
		return
	}
	if err := s.opts.FaultHook(r.Context(), req.ShardID, req.Offset); err != nil {
		writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"corrupted": req.ShardID, "offset": req.Offset})
}
