package features

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/cucumber/godog"

	"github.com/vramseal/vramseal/audit"
	"github.com/vramseal/vramseal/internal/server"
	"github.com/vramseal/vramseal/narration"
	"github.com/vramseal/vramseal/narration/narrationtest"
	"github.com/vramseal/vramseal/vram"
)

func (w *world) registerObservability(sc *godog.ScenarioContext) {
	// The scenario of the issue, verbatim.
	sc.Step(`^an audit event "([^"]*)" should be emitted$`, w.auditEventEmitted)
	sc.Step(`^a narration event with action "([^"]*)" should be emitted$`, w.narrationEventEmitted)
	sc.Step(`^both events should have the same shard ID$`, w.sameShardID)

	sc.Step(`^the audit log records (?:an? )?"([^"]*)" event for shard "([^"]*)"$`, w.auditRecordsFor)
	sc.Step(`^the audit log records (?:an? )?"([^"]*)" event with (.+)$`, w.auditRecordsWith)
	sc.Step(`^the audit log records no "([^"]*)" event$`, w.auditRecordsNo)
	sc.Step(`^the audit log holds exactly these residency events in order:$`, w.auditHoldsInOrder)
	sc.Step(`^a narration event with action "([^"]*)" for (?:shard|target) "([^"]*)" is emitted$`, w.narrationFor)
	sc.Step(`^the "([^"]*)" narration says "([^"]*)"$`, w.narrationSays)
	sc.Step(`^no narration event with action "([^"]*)" is emitted$`, w.noNarration)

	sc.Step(`^the following operations are performed:$`, w.performOperations)
	sc.Step(`^the worker shuts down$`, w.shutDown)
	sc.Step(`^the offline verifier accepts the audit log with its verification key$`, w.offlineAccepts)
	sc.Step(`^the verifier checked the MAC of every record written$`, w.verifierCheckedAll)
	sc.Step(`^the offline verifier rejects the audit log with another log's verification key$`, w.offlineWrongKey)
	sc.Step(`^someone edits the shard ID inside audit record (\d+)$`, w.editAuditRecord)
	sc.Step(`^the offline verifier reports record (\d+) as modified$`, w.offlineReportsModified)

	sc.Step(`^the worker serves its HTTP API$`, w.servesHTTP)
	sc.Step(`^a client uploads (.+) as shard "([^"]*)" with correlation ID "([^"]*)"$`, w.httpUpload)
	sc.Step(`^a client verifies shard "([^"]*)" with correlation ID "([^"]*)"$`, w.httpVerify)
	sc.Step(`^the response status is (\d+)$`, w.responseStatus)
	sc.Step(`^the response carries correlation ID "([^"]*)"$`, w.responseCID)
	sc.Step(`^the response carries a freshly generated correlation ID instead$`, w.responseFreshCID)
	sc.Step(`^the audit record "([^"]*)" for shard "([^"]*)" carries correlation ID "([^"]*)"$`, w.auditCarriesCID)
	sc.Step(`^the audit record "([^"]*)" for shard "([^"]*)" carries that correlation ID$`, w.auditCarriesRespCID)
	sc.Step(`^the narration event "([^"]*)" for shard "([^"]*)" carries correlation ID "([^"]*)"$`, w.narrationCarriesCID)
	sc.Step(`^the narration event "([^"]*)" for shard "([^"]*)" carries that correlation ID$`, w.narrationCarriesRespCID)
}

// auditRecord is a copy of what a scenario needs from one audit record.
type auditRecord struct {
	seq      uint64
	typ      string
	severity audit.Severity
	cid      string
	fields   map[string]string
}

func (r *auditRecord) String() string {
	return fmt.Sprintf("#%d %s (%s) cid=%q %v", r.seq, r.typ, r.severity, r.cid, r.fields)
}

// auditRecords reads every record of the scenario's audit log back from
// its files. With flush, it first waits until every queued record is
// written; without, it sees only what the log has already written.
func (w *world) auditRecords(ctx context.Context, flush bool) ([]*auditRecord, error) {
	if w.auditDir == "" {
		return nil, errors.New("audit logging is not enabled in this scenario")
	}
	if flush && w.log != nil {
		if err := w.log.Flush(ctx); err != nil {
			return nil, fmt.Errorf("flush the audit log: %w", err)
		}
	}
	var out []*auditRecord
	err := audit.Query(ctx, w.auditDir, audit.Filter{}, audit.ReadOptions{}, func(r *audit.Record) error {
		c := &auditRecord{seq: r.Seq, typ: r.Type, severity: r.Severity, cid: r.CorrelationID, fields: map[string]string{}}
		for _, f := range r.Fields {
			c.fields[f.Key] = f.Text()
		}
		out = append(out, c)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read the audit log: %w", err)
	}
	return out, nil
}

// findAudit returns the records of type typ whose fields match want.
func (w *world) findAudit(ctx context.Context, flush bool, typ string, want map[string]string) ([]*auditRecord, []*auditRecord, error) {
	all, err := w.auditRecords(ctx, flush)
	if err != nil {
		return nil, nil, err
	}
	var found []*auditRecord
next:
	for _, r := range all {
		if r.typ != typ {
			continue
		}
		for k, v := range want {
			if r.fields[k] != v {
				continue next
			}
		}
		found = append(found, r)
	}
	return found, all, nil
}

func describe(rs []*auditRecord) string {
	var b strings.Builder
	for _, r := range rs {
		fmt.Fprintf(&b, "\n  %v", r)
	}
	if b.Len() == 0 {
		return " (none)"
	}
	return b.String()
}

// auditEventEmitted checks that the operation's event is in the log. A
// critical event must already be written when the operation returns, so
// it is looked for before any flush.
func (w *world) auditEventEmitted(ctx context.Context, name string) error {
	typ := snakeCase(name)
	want := map[string]string{}
	if w.lastID != "" {
		want["shard_id"] = w.lastID
	}
	found, _, err := w.findAudit(ctx, false, typ, want)
	if err != nil {
		return err
	}
	if len(found) == 0 {
		var all []*auditRecord
		found, all, err = w.findAudit(ctx, true, typ, want)
		if err != nil {
			return err
		}
		if len(found) == 0 {
			return fmt.Errorf("no %q audit record for shard %q; the log holds:%s", typ, w.lastID, describe(all))
		}
		if found[0].severity >= audit.SeverityCritical {
			return fmt.Errorf("critical audit record %v was not written before the operation returned", found[0])
		}
	}
	if len(found) != 1 {
		return fmt.Errorf("%d %q audit records for shard %q, want 1:%s", len(found), typ, w.lastID, describe(found))
	}
	w.auditRec = found[0]
	return nil
}

func (w *world) narrationEventEmitted(action string) error {
	if w.rec == nil {
		return errors.New("narration is not enabled in this scenario")
	}
	got := w.rec.Filter(narrationtest.Match{Action: action})
	if w.lastID != "" {
		got = w.rec.Filter(narrationtest.Match{Action: action, Target: w.lastID})
	}
	if len(got) != 1 {
		return fmt.Errorf("%d narration events with action %q for %q, want 1; captured: %v", len(got), action, w.lastID, w.rec.Events())
	}
	e := got[0]
	if e.Actor != vram.Actor || e.Human == "" || e.WorkerID != workerID {
		return fmt.Errorf("narration event %+v lacks its actor, human sentence or worker ID", e)
	}
	w.narrEvent = &e
	return nil
}

func (w *world) sameShardID() error {
	if w.auditRec == nil || w.narrEvent == nil {
		return errors.New("both an audit record and a narration event must be found first")
	}
	a, n := w.auditRec.fields["shard_id"], w.narrEvent.Target
	if a == "" || a != n {
		return fmt.Errorf("audit shard_id %q, narration target %q: want the same non-empty shard ID", a, n)
	}
	if h := w.lastInfo.Seal.ShardID; h != "" && h != a {
		return fmt.Errorf("the events name shard %q, the seal handle %q", a, h)
	}
	if !namesShard(w.narrEvent.Human, a) {
		return fmt.Errorf("the human sentence %q does not name shard %q", w.narrEvent.Human, a)
	}
	return nil
}

// namesShard reports whether a human sentence names shard id in quotes,
// whole or abbreviated to a prefix of at least 16 bytes and an ellipsis
// (long IDs are shortened in sentences; the event's target holds them whole).
func namesShard(human, id string) bool {
	if strings.Contains(human, "'"+id+"'") {
		return true
	}
	for n := 16; n < len(id); n++ {
		if strings.Contains(human, "'"+id[:n]+"…'") {
			return true
		}
	}
	return false
}

func (w *world) auditRecordsFor(ctx context.Context, typ, id string) error {
	found, all, err := w.findAudit(ctx, true, typ, map[string]string{"shard_id": id})
	if err != nil {
		return err
	}
	if len(found) != 1 {
		return fmt.Errorf("%d %q audit records for shard %q, want 1; the log holds:%s", len(found), typ, id, describe(all))
	}
	w.auditRec = found[0]
	return nil
}

// auditRecordsWith reads `key "value" and key "value"`.
func (w *world) auditRecordsWith(ctx context.Context, typ, spec string) error {
	want := map[string]string{}
	for _, part := range strings.Split(spec, " and ") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), " ")
		if !ok || len(v) < 2 || v[0] != '"' || v[len(v)-1] != '"' {
			return fmt.Errorf("cannot read field %q: write key \"value\"", part)
		}
		want[k] = v[1 : len(v)-1]
	}
	found, all, err := w.findAudit(ctx, true, typ, want)
	if err != nil {
		return err
	}
	if len(found) != 1 {
		return fmt.Errorf("%d %q audit records with %v, want 1; the log holds:%s", len(found), typ, want, describe(all))
	}
	w.auditRec = found[0]
	return nil
}

func (w *world) auditRecordsNo(ctx context.Context, typ string) error {
	found, _, err := w.findAudit(ctx, true, typ, nil)
	if err != nil {
		return err
	}
	if len(found) != 0 {
		return fmt.Errorf("%d %q audit records, want none:%s", len(found), typ, describe(found))
	}
	return nil
}

var residencyEvents = []string{
	vram.EventSealed, vram.EventVerified, vram.EventVerificationFailed, vram.EventAllocated,
	vram.EventAllocationFailed, vram.EventDeallocated, vram.EventPolicyViolation, vram.EventReset,
}

func (w *world) auditHoldsInOrder(ctx context.Context, table *godog.Table) error {
	rows, err := tableRows(table, "event", "shard")
	if err != nil {
		return err
	}
	all, err := w.auditRecords(ctx, true)
	if err != nil {
		return err
	}
	var got []*auditRecord
	for _, r := range all {
		if slices.Contains(residencyEvents, r.typ) {
			got = append(got, r)
		}
	}
	if len(got) != len(rows) {
		return fmt.Errorf("%d residency audit records, want %d:%s", len(got), len(rows), describe(got))
	}
	for i, row := range rows {
		r := got[i]
		if r.typ != row["event"] || r.fields["shard_id"] != row["shard"] {
			return fmt.Errorf("residency record %d is %v, want %s for shard %q; all:%s", i+1, r, row["event"], row["shard"], describe(got))
		}
		if i > 0 && r.seq <= got[i-1].seq {
			return fmt.Errorf("sequence numbers do not increase: %v after %v", r, got[i-1])
		}
	}
	return nil
}

func (w *world) narrationFor(action, target string) error {
	if w.rec == nil {
		return errors.New("narration is not enabled in this scenario")
	}
	got := w.rec.Filter(narrationtest.Match{Action: action, Target: target})
	if len(got) != 1 {
		return fmt.Errorf("%d narration events %q for %q, want 1; captured: %v", len(got), action, target, w.rec.Events())
	}
	e := got[0]
	w.narrEvent = &e
	return nil
}

func (w *world) narrationSays(action, text string) error {
	if w.rec == nil {
		return errors.New("narration is not enabled in this scenario")
	}
	got := w.rec.Filter(narrationtest.Match{Action: action})
	if len(got) == 0 {
		return fmt.Errorf("no %q narration event; captured: %v", action, w.rec.Events())
	}
	for _, e := range got {
		if strings.Contains(e.Human, text) {
			if n := len([]rune(e.Human)); n > narration.MaxHumanRunes {
				return fmt.Errorf("sentence %q has %d runes, the limit is %d", e.Human, n, narration.MaxHumanRunes)
			}
			return nil
		}
	}
	var said []string
	for _, e := range got {
		said = append(said, e.Human)
	}
	return fmt.Errorf("no %q narration says %q; it says %q", action, text, said)
}

func (w *world) noNarration(action string) error {
	if w.rec == nil {
		return errors.New("narration is not enabled in this scenario")
	}
	if got := w.rec.Filter(narrationtest.Match{Action: action}); len(got) != 0 {
		return fmt.Errorf("%d %q narration events, want none: %v", len(got), action, got)
	}
	return nil
}

// performOperations runs a table of operations and checks each outcome:
// ok, insufficient VRAM, integrity failure, or stopped.
func (w *world) performOperations(ctx context.Context, table *godog.Table) error {
	rows, err := tableRows(table, "operation", "shard", "size", "outcome")
	if err != nil {
		return err
	}
	if _, err := w.manager(); err != nil {
		return err
	}
	for i, row := range rows {
		id := row["shard"]
		var opErr error
		switch row["operation"] {
		case "seal":
			if err := w.iSealShard(ctx, id, row["size"], 0); err != nil {
				return err
			}
			opErr = w.lastErr
		case "verify in full":
			if err := w.iVerifyFull(ctx, id); err != nil {
				return err
			}
			opErr = w.lastErr
		case "verify by sampling":
			if err := w.iVerifySampled(ctx, id, 4); err != nil {
				return err
			}
			opErr = w.lastErr
		case "release":
			opErr = w.m.Release(ctx, id)
		case "corrupt":
			if err := w.flipBit(0, id); err != nil {
				return err
			}
		case "reset":
			opErr = w.m.Reset(ctx, "operator inspected GPU 0 and will re-seal the corrupted shard")
		case "capacity query":
			_, opErr = w.m.Capacity(ctx, 0)
		default:
			return fmt.Errorf("row %d: unknown operation %q", i+1, row["operation"])
		}
		var ok bool
		switch row["outcome"] {
		case "ok":
			ok = opErr == nil
		case "insufficient VRAM":
			ok = errors.Is(opErr, vram.ErrInsufficientVRAM)
		case "integrity failure":
			ok = errors.Is(opErr, vram.ErrIntegrity)
		case "stopped":
			ok = errors.Is(opErr, vram.ErrStopped)
		default:
			return fmt.Errorf("row %d: unknown outcome %q", i+1, row["outcome"])
		}
		if !ok {
			return fmt.Errorf("row %d (%s %s): error %v, want %s", i+1, row["operation"], id, opErr, row["outcome"])
		}
	}
	return nil
}

// shutDown closes the manager (releasing every shard) and the audit log.
func (w *world) shutDown(ctx context.Context) error {
	if _, err := w.manager(); err != nil {
		return err
	}
	if err := w.m.Close(ctx); err != nil {
		return fmt.Errorf("close manager: %w", err)
	}
	if w.log != nil {
		err := w.log.Close(ctx)
		w.log = nil
		if err != nil {
			return fmt.Errorf("close audit log: %w", err)
		}
	}
	return nil
}

func (w *world) offlineAccepts(ctx context.Context) error {
	if w.auditDir == "" {
		return errors.New("audit logging is not enabled in this scenario")
	}
	w.report, w.verifyErr = audit.Verify(ctx, w.auditDir, audit.VerifyOptions{Key: w.vkey})
	if w.verifyErr != nil {
		return fmt.Errorf("audit.Verify: %w", w.verifyErr)
	}
	return nil
}

func (w *world) verifierCheckedAll(ctx context.Context) error {
	if w.report == nil {
		return errors.New("the offline verifier has not run")
	}
	all, err := w.auditRecords(ctx, false)
	if err != nil {
		return err
	}
	r := w.report
	if !r.MACsChecked || r.Records != uint64(len(all)) || r.TornBytes != 0 || len(all) == 0 {
		return fmt.Errorf("verifier report %+v; want MACs checked on all %d records and no torn tail", *r, len(all))
	}
	if r.LastSeq != all[len(all)-1].seq {
		return fmt.Errorf("verifier stopped at seq %d, the log ends at %d", r.LastSeq, all[len(all)-1].seq)
	}
	return nil
}

func (w *world) offlineWrongKey(ctx context.Context) error {
	other, err := audit.Init(filepath.Join(w.dir, "other-audit"), audit.Options{})
	if err != nil {
		return err
	}
	_, err = audit.Verify(ctx, w.auditDir, audit.VerifyOptions{Key: other})
	if !errors.Is(err, audit.ErrWrongKey) {
		return fmt.Errorf("audit.Verify with another log's key = %v, want ErrWrongKey", err)
	}
	return nil
}

// editAuditRecord changes one letter of the shard_id value inside the
// record with sequence number seq, in place, as an intruder with file
// access would; the line stays well formed.
func (w *world) editAuditRecord(seq uint64) error {
	segs, err := filepath.Glob(filepath.Join(w.auditDir, "*.ndjson"))
	if err != nil || len(segs) == 0 {
		return fmt.Errorf("no audit segments in %s (%v)", w.auditDir, err)
	}
	for _, path := range segs {
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		var off int
		sc := bufio.NewScanner(bytes.NewReader(data))
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			line := sc.Bytes()
			r, err := audit.ParseRecord(line)
			if err == nil && r.Seq == seq {
				const member = `"shard_id":"`
				i := bytes.Index(line, []byte(member))
				if i < 0 {
					return fmt.Errorf("audit record %d has no shard_id: %s", seq, line)
				}
				at := off + i + len(member)
				if data[at] == 'b' {
					data[at] = 'c'
				} else {
					data[at] = 'b'
				}
				return os.WriteFile(path, data, 0o600)
			}
			off += len(line) + 1
		}
		if err := sc.Err(); err != nil {
			return err
		}
	}
	return fmt.Errorf("no audit record with sequence number %d", seq)
}

func (w *world) offlineReportsModified(ctx context.Context, seq uint64) error {
	_, err := audit.Verify(ctx, w.auditDir, audit.VerifyOptions{Key: w.vkey})
	var ve *audit.VerifyError
	if !errors.As(err, &ve) {
		return fmt.Errorf("audit.Verify = %v, want a *audit.VerifyError", err)
	}
	if ve.Problem != audit.Modified || ve.Seq != seq || ve.Line == 0 || ve.File == "" {
		return fmt.Errorf("audit.Verify reports %v (problem %v at %+v), want record %d modified with its file and line", err, ve.Problem, ve.Location, seq)
	}
	return nil
}

// HTTP.

func (w *world) servesHTTP() error {
	m, err := w.manager()
	if err != nil {
		return err
	}
	s, err := server.New(server.Options{Manager: m, Narrator: w.narrator})
	if err != nil {
		return err
	}
	w.srv = httptest.NewServer(s.Handler())
	return nil
}

func (w *world) do(ctx context.Context, method, path, contentType string, body io.Reader, cid string) error {
	if w.srv == nil {
		return errors.New("the worker does not serve HTTP in this scenario")
	}
	req, err := http.NewRequestWithContext(ctx, method, w.srv.URL+path, body)
	if err != nil {
		return err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	req.Header.Set(narration.HeaderCorrelationID, cid)
	w.sentCID = cid
	resp, err := w.srv.Client().Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	w.respBody, err = io.ReadAll(resp.Body)
	w.status = resp.StatusCode
	w.respCID = resp.Header.Get(narration.HeaderCorrelationID)
	return err
}

func (w *world) httpUpload(ctx context.Context, size, id, cid string) error {
	n, err := parseSize(size)
	if err != nil {
		return err
	}
	data, err := io.ReadAll(shardReader(id, n))
	if err != nil {
		return err
	}
	q := url.Values{"shard_id": {id}, "model_ref": {"example/model@main"}}
	if err := w.do(ctx, http.MethodPost, "/v1/shards?"+q.Encode(), "application/octet-stream", bytes.NewReader(data), cid); err != nil {
		return err
	}
	if w.status == http.StatusCreated {
		w.seeds[id], w.sizes[id] = id, n
	}
	return nil
}

func (w *world) httpVerify(ctx context.Context, id, cid string) error {
	return w.do(ctx, http.MethodPost, "/v1/shards/"+url.PathEscape(id)+"/verify", "application/json", strings.NewReader(`{"mode":"full"}`), cid)
}

func (w *world) responseStatus(code int) error {
	if w.status != code {
		return fmt.Errorf("response status %d, want %d; body: %s", w.status, code, w.respBody)
	}
	return nil
}

func (w *world) responseCID(cid string) error {
	if w.respCID != cid {
		return fmt.Errorf("response %s = %q, want %q", narration.HeaderCorrelationID, w.respCID, cid)
	}
	return nil
}

func (w *world) responseFreshCID() error {
	if w.respCID == "" || w.respCID == w.sentCID || !narration.ValidCorrelationID(w.respCID) {
		return fmt.Errorf("response %s = %q, want a fresh valid correlation ID", narration.HeaderCorrelationID, w.respCID)
	}
	return nil
}

func (w *world) auditCarriesCID(ctx context.Context, typ, id, cid string) error {
	if err := w.auditRecordsFor(ctx, typ, id); err != nil {
		return err
	}
	if w.auditRec.cid != cid {
		return fmt.Errorf("audit record %v carries correlation ID %q, want %q", w.auditRec, w.auditRec.cid, cid)
	}
	return nil
}

func (w *world) auditCarriesRespCID(ctx context.Context, typ, id string) error {
	return w.auditCarriesCID(ctx, typ, id, w.respCID)
}

func (w *world) narrationCarriesCID(action, id, cid string) error {
	if err := w.narrationFor(action, id); err != nil {
		return err
	}
	if w.narrEvent.CorrelationID != cid {
		return fmt.Errorf("narration %q for %q carries correlation ID %q, want %q", action, id, w.narrEvent.CorrelationID, cid)
	}
	return nil
}

func (w *world) narrationCarriesRespCID(action, id string) error {
	return w.narrationCarriesCID(action, id, w.respCID)
}
