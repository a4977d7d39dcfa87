package server

import (
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/vramseal/vramseal/model"
	"github.com/vramseal/vramseal/provenance"
	"github.com/vramseal/vramseal/vram"
)

// maxModelJSONBody caps the JSON body of POST /v1/models, which can carry
// a signature bundle and a digests file.
const maxModelJSONBody = 2*provenance.MaxBundleSize + 1<<20

// Headers that carry a signature with an uploaded single-file model, each
// base64 (standard encoding) of the file's bytes.
const (
	HeaderSignature = "Vramseal-Signature"
	HeaderPublicKey = "Vramseal-Public-Key"
)

// ModelAddRequest is the JSON body of POST /v1/models (load by path). An
// upload of a single file instead sends the bytes as
// application/octet-stream, with model_id, model_ref, file_name, format,
// gpu (repeatable) and expect_sha256 as query parameters and a signature
// in the [HeaderSignature] and [HeaderPublicKey] headers.
type ModelAddRequest struct {
	// Path is the model directory or weight file, absolute or relative to
	// a model root.
	Path     string `json:"path"`
	ModelID  string `json:"model_id,omitempty"`
	ModelRef string `json:"model_ref,omitempty"`
	// GPUs places the weight files round-robin; empty places them by
	// free memory.
	GPUs []int `json:"gpus,omitempty"`
	// At most one of the following: the one weight file's SHA-256 (hex),
	// a sha256sum file's text, or an OpenSSF model-signing bundle (JSON
	// text) with the publisher's public key (PEM text).
	ExpectSHA256  string `json:"expect_sha256,omitempty"`
	ExpectDigests string `json:"expect_digests,omitempty"`
	Signature     string `json:"signature,omitempty"`
	PublicKey     string `json:"public_key,omitempty"`
}

// ModelJSON is a resident model.
type ModelJSON struct {
	ModelID    string                `json:"model_id"`
	ModelRef   string                `json:"model_ref"`
	SealedAt   time.Time             `json:"sealed_at"`
	SizeBytes  int64                 `json:"size_bytes"`
	GPUs       []int                 `json:"gpus"`
	Status     string                `json:"status"` // "ok", or "corrupt" when any shard is quarantined
	Provenance provenance.Provenance `json:"provenance"`
	Files      []string              `json:"files"`
	Shards     []ShardJSON           `json:"shards"`
}

func modelJSON(mi vram.ModelInfo) ModelJSON {
	j := ModelJSON{ModelID: mi.ID, ModelRef: mi.Ref, SealedAt: mi.SealedAt, SizeBytes: mi.SizeBytes(),
		GPUs: []int{}, Status: "ok", Provenance: mi.Provenance, Files: mi.Files, Shards: make([]ShardJSON, 0, len(mi.Shards))}
	seen := map[int]bool{}
	for _, s := range mi.Shards {
		sj := shardJSON(s)
		if sj.Status != "ok" {
			j.Status = sj.Status
		}
		if !seen[s.Seal.DeviceIndex] {
			seen[s.Seal.DeviceIndex] = true
			j.GPUs = append(j.GPUs, s.Seal.DeviceIndex)
		}
		j.Shards = append(j.Shards, sj)
	}
	return j
}

func (s *Server) listModels(w http.ResponseWriter, r *http.Request) {
	list := s.m.Models()
	out := make([]ModelJSON, 0, len(list))
	for _, mi := range list {
		out = append(out, modelJSON(mi))
	}
	writeJSON(w, http.StatusOK, map[string]any{"models": out})
}

func (s *Server) getModel(w http.ResponseWriter, r *http.Request) {
	mi, err := s.m.Model(r.PathValue("id"))
	if err != nil {
		writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, modelJSON(mi))
}

func (s *Server) addModel(w http.ResponseWriter, r *http.Request) {
	sealBy(s, w, r, s.uploadModel, s.loadModel, func(mi vram.ModelInfo) any { return modelJSON(mi) })
}

// expectation turns the request's published digests into an expectation
// for the layout; nil when it gives none.
func expectation(l *model.Layout, sha, digests string, bundle, key []byte) (*model.Expectation, error) {
	given := 0
	for _, set := range []bool{sha != "", digests != "", len(bundle) > 0 || len(key) > 0} {
		if set {
			given++
		}
	}
	if given > 1 {
		return nil, badRequest("give one of expect_sha256, expect_digests and signature")
	}
	switch {
	case sha != "":
		return l.ExpectSHA256(sha)
	case digests != "":
		return l.ExpectDigests(strings.NewReader(digests))
	case len(bundle) > 0 && len(key) > 0:
		return model.ExpectSignature(bundle, key)
	case len(bundle) > 0 || len(key) > 0:
		return nil, badRequest("a signature needs the publisher's public key, and a public key needs a signature")
	}
	return nil, nil
}

func (s *Server) loadModel(w http.ResponseWriter, r *http.Request) (vram.ModelInfo, error) {
	var req ModelAddRequest
	if err := decodeJSONLimit(w, r, &req, maxModelJSONBody); err != nil {
		return vram.ModelInfo{}, err
	}
	if req.Path == "" {
		return vram.ModelInfo{}, badRequest("path is required")
	}
	root, rel, err := s.locate(req.Path)
	if err != nil {
		return vram.ModelInfo{}, err
	}
	l, err := model.Open(root, rel)
	if err != nil {
		return vram.ModelInfo{}, err
	}
	defer l.Close()
	id := req.ModelID
	if id == "" {
		id = l.DefaultID()
	}
	ref := req.ModelRef
	if ref == "" {
		ref = l.Name
	}
	exp, err := expectation(l, req.ExpectSHA256, req.ExpectDigests, []byte(req.Signature), []byte(req.PublicKey))
	return s.sealModel(r, l, l.Request(id, ref, exp, req.GPUs), exp, err)
}

// sealModel checks the expectation against the layout and seals the model.
// A model refused before its seal (a signature that does not verify, a
// non-weight file that does not match) is audited as model_rejected like
// one refused during it.
func (s *Server) sealModel(r *http.Request, l *model.Layout, mr vram.ModelRequest, exp *model.Expectation, err error) (vram.ModelInfo, error) {
	if err == nil {
		err = l.Check(exp)
	}
	if err != nil {
		if verr := vram.ValidateShardID(mr.ID); verr != nil || !provenance.IsIntegrity(err) && !errors.Is(err, vram.ErrInvalidInput) {
			return vram.ModelInfo{}, err
		}
		return vram.ModelInfo{}, s.m.RejectModel(r.Context(), mr, err)
	}
	return s.m.SealModel(r.Context(), mr)
}

// uploadModel seals a single weight file sent as the request body.
func (s *Server) uploadModel(w http.ResponseWriter, r *http.Request) (vram.ModelInfo, error) {
	q := r.URL.Query()
	for name, vs := range q {
		if len(vs) > 1 && name != "gpu" {
			return vram.ModelInfo{}, badRequest("query parameter %s is given %d times: give it once", strconv.Quote(name), len(vs))
		}
	}
	var gpus []int
	for _, v := range q["gpu"] {
		n, err := strconv.Atoi(v)
		if err != nil {
			return vram.ModelInfo{}, badRequest("gpu=%s: must be an integer", strconv.Quote(v))
		}
		gpus = append(gpus, n)
	}
	if r.ContentLength < 0 {
		return vram.ModelInfo{}, &httpError{http.StatusLengthRequired, CodeInvalid, errors.New("uploads need a Content-Length")}
	}
	if r.ContentLength == 0 {
		return vram.ModelInfo{}, badRequest("the body is empty: a weight file holds at least one byte")
	}
	if limit := s.opts.MaxUploadBytes; limit > 0 && r.ContentLength > limit {
		return vram.ModelInfo{}, &httpError{http.StatusRequestEntityTooLarge, CodeTooLarge, fmt.Errorf("body of %d bytes exceeds the upload limit of %d bytes", r.ContentLength, limit)}
	}
	name := q.Get("file_name")
	if name == "" {
		return vram.ModelInfo{}, badRequest("file_name is required: the weight file's base name")
	}
	if !validFileName(name) {
		return vram.ModelInfo{}, badRequest("file_name must be a base name of at most 255 printable characters, without / or \\")
	}
	format := q.Get("format")
	switch {
	case format == "" && strings.HasSuffix(name, ".safetensors"):
		format = vram.FormatSafetensors
	case format == vram.FormatGGUF:
		// A GGUF tensor table is parsed from the file before it streams;
		// an upload cannot be read twice.
		return vram.ModelInfo{}, badRequest("GGUF models are loaded by path (the tensor table is read before the seal); upload with format=raw to seal one without its tensor map")
	}
	var bundle, key []byte
	for _, h := range []struct {
		name string
		dst  *[]byte
	}{{HeaderSignature, &bundle}, {HeaderPublicKey, &key}} {
		if v := r.Header.Get(h.name); v != "" {
			b, err := base64.StdEncoding.DecodeString(v)
			if err != nil {
				return vram.ModelInfo{}, badRequest("header %s is not base64", h.name)
			}
			*h.dst = b
		}
	}
	l := model.UploadLayout(name)
	exp, experr := expectation(l, q.Get("expect_sha256"), "", bundle, key)
	id := q.Get("model_id")
	if id == "" {
		id = l.DefaultID()
	}
	ref := q.Get("model_ref")
	if ref == "" {
		ref = name
	}
	body := newUploadReader(w, r.Body, r.ContentLength, s.uploadLimits())
	opened := false
	mr := l.Request(id, ref, exp, gpus)
	mr.Files[0].Size, mr.Files[0].Format = r.ContentLength, format
	mr.Files[0].Open = func() (io.ReadCloser, error) {
		if opened {
			return nil, errors.New("the upload can be read once")
		}
		opened = true
		return io.NopCloser(body), nil
	}
	mi, err := s.sealModel(r, l, mr, exp, experr)
	body.finish(w)
	if body.aborted != nil && err != nil {
		s.uploadAborted(r.Context(), id+"-0", body.aborted) // the model's one shard
		return mi, &httpError{http.StatusRequestTimeout, CodeUploadTooSlow, body.aborted}
	}
	return mi, err
}

// validFileName accepts a printable base name of at most 255 bytes.
func validFileName(name string) bool {
	if name == "." || name == ".." || len(name) > 255 || !utf8.ValidString(name) || strings.ContainsAny(name, "/\\") {
		return false
	}
	for _, r := range name {
		if !strconv.IsPrint(r) {
			return false
		}
	}
	return true
}

// releaseModel releases every shard of a model; ?force=true revokes
// attachments as for one shard.
func (s *Server) releaseModel(w http.ResponseWriter, r *http.Request) {
	force, err := forceParam(r)
	if err != nil {
		writeError(w, r, err)
		return
	}
	if err := s.m.ReleaseModel(r.Context(), r.PathValue("id"), force); err != nil {
		writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"released": r.PathValue("id")})
}

// ModelVerifyJSON is a successful verification of every shard of a model.
type ModelVerifyJSON struct {
	ModelID    string       `json:"model_id"`
	Mode       string       `json:"mode"`
	Shards     []VerifyJSON `json:"shards"`
	DurationMS float64      `json:"duration_ms"`
}

func (s *Server) verifyModel(w http.ResponseWriter, r *http.Request) {
	mode, err := verifyMode(w, r)
	if err != nil {
		writeError(w, r, err)
		return
	}
	start := time.Now()
	res, err := s.m.VerifyModel(r.Context(), r.PathValue("id"), mode)
	for _, v := range res {
		s.ObserveVerify(v, nil)
	}
	if err != nil {
		s.ObserveVerify(vram.VerifyResult{}, err)
		writeError(w, r, err)
		return
	}
	out := ModelVerifyJSON{ModelID: r.PathValue("id"), Mode: mode.String(), Shards: make([]VerifyJSON, 0, len(res))}
	for _, v := range res {
		out.Shards = append(out.Shards, verifyJSON(v))
		out.Mode = v.Mode
	}
	out.DurationMS = float64(time.Since(start)) / float64(time.Millisecond)
	writeJSON(w, http.StatusOK, out)
}
