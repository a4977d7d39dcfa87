package server

import (
	"context"
	"strconv"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/vramseal/vramseal/audit"
	"github.com/vramseal/vramseal/replicate"
	"github.com/vramseal/vramseal/vram"
)

// The daemon's Prometheus metrics, served on GET /metrics:
//
//	vramseal_vram_total_bytes{gpu,UUID,modelName}       gauge
//	vramseal_vram_free_bytes{gpu,UUID,modelName}        gauge
//	vramseal_vram_used_bytes{gpu,UUID,modelName}        gauge
//	vramseal_vram_reserved_bytes{gpu,UUID,modelName}    gauge
//	vramseal_sealed_bytes{gpu,UUID,modelName}           gauge
//	vramseal_shards{gpu,UUID,modelName}                 gauge
//	vramseal_worker_stopped                             gauge, 0 or 1
//	vramseal_seal_duration_seconds                      histogram
//	vramseal_verify_duration_seconds{mode}              histogram, mode full or sampled
//	vramseal_verify_failures_total                      counter
//
// and, from [NewAuditCollector]:
//
//	vramseal_audit_events_total{outcome}                counter
//	vramseal_audit_queue_depth                          gauge
//	vramseal_audit_fsyncs_total                         counter
//	vramseal_audit_healthy                              gauge, 0 or 1
//	vramseal_audit_write_errors_total                   counter
//
// and, from [NewReplicationCollector]:
//
//	vramseal_audit_replication_configured               gauge, 0 or 1
//	vramseal_audit_replication_connected                gauge, 0 or 1
//	vramseal_audit_replication_stopped                  gauge, 0 or 1
//	vramseal_audit_replication_acked_seq                gauge
//	vramseal_audit_replication_lag_records              gauge
//	vramseal_audit_replication_lag_seconds              gauge
//	vramseal_audit_replication_records_total            counter
//	vramseal_audit_replication_errors_total             counter
//
// Per-device series carry the label names dcgm-exporter uses, so that
// one query can join vramseal's view of a GPU with DCGM's: gpu (the
// device index, as in the API), UUID ("GPU-..."), and modelName (the
// product name, "NVIDIA H100 80GB HBM3"). UUID is the reliable join key:
// gpu is vramseal's index, which equals DCGM's (NVML's) index only when
// CUDA numbers the devices in PCI bus order and CUDA_VISIBLE_DEVICES is
// unset. No series is labelled by shard or model reference: those are
// chosen by clients, so their number has no bound.
var devLabels = []string{"gpu", "UUID", "modelName"}

// metrics holds the metrics observed by the handlers; the gauges are read
// from the manager at scrape time by a [managerCollector].
type metrics struct {
	sealDuration   prometheus.Histogram
	verifyDuration *prometheus.HistogramVec
	verifyFailures prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, m *vram.Manager) *metrics {
	mt := &metrics{
		sealDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "vramseal_seal_duration_seconds",
			Help:    "Time to seal a shard into VRAM (copy, hash, sign), in seconds.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 10),
		}),
		verifyDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "vramseal_verify_duration_seconds",
			Help:    "Time to verify a shard from device memory, in seconds, by mode.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10),
		}, []string{"mode"}),
		verifyFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "vramseal_verify_failures_total",
			Help: "Verifications that found changed bytes, a bad signature or a device error.",
		}),
	}
	reg.MustRegister(mt.sealDuration, mt.verifyDuration, mt.verifyFailures, &managerCollector{m: m})
	return mt
}

var (
	descTotal    = prometheus.NewDesc("vramseal_vram_total_bytes", "Device memory size in bytes.", devLabels, nil)
	descFree     = prometheus.NewDesc("vramseal_vram_free_bytes", "Device memory free for new allocations in bytes (whole allocation granules on CUDA).", devLabels, nil)
	descUsed     = prometheus.NewDesc("vramseal_vram_used_bytes", "Device memory held for sealed shards in bytes, including any the device refused to free.", devLabels, nil)
	descReserved = prometheus.NewDesc("vramseal_vram_reserved_bytes", "Device memory allocated for seals in progress in bytes.", devLabels, nil)
	descSealed   = prometheus.NewDesc("vramseal_sealed_bytes", "Bytes of resident sealed shards.", devLabels, nil)
	descShards   = prometheus.NewDesc("vramseal_shards", "Resident sealed shards.", devLabels, nil)
	descState    = prometheus.NewDesc("vramseal_worker_stopped", "1 when the worker is stopped after an integrity or policy failure.", nil, nil)

	descScrubPasses   = prometheus.NewDesc("vramseal_scrub_passes_total", "Completed background scrub passes over every resident shard.", nil, nil)
	descScrubBytes    = prometheus.NewDesc("vramseal_scrub_bytes_total", "Device bytes hashed by the background scrub.", nil, nil)
	descScrubFailures = prometheus.NewDesc("vramseal_scrub_failures_total", "Shards the background scrub found changed (each stopped the worker).", nil, nil)
	descScrubLast     = prometheus.NewDesc("vramseal_scrub_last_pass_timestamp_seconds", "Unix time the last background scrub pass ended; absent before the first.", nil, nil)
)

// managerCollector reads the manager's devices and shards at scrape time.
type managerCollector struct {
	m *vram.Manager

	mu sync.Mutex
	// ids holds each device's UUID and product name, read once: neither
	// changes while the manager runs. Nil until a read succeeds.
	ids []deviceID
}

type deviceID struct{ uuid, name string }

func (c *managerCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descTotal, descFree, descUsed, descReserved, descSealed, descShards, descState,
		descScrubPasses, descScrubBytes, descScrubFailures, descScrubLast} {
		ch <- d
	}
}

// identities returns the UUID and product name of every device, or nil
// when the devices cannot be read now (the next scrape tries again).
func (c *managerCollector) identities(ctx context.Context) []deviceID {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ids != nil {
		return c.ids
	}
	infos, err := c.m.Devices(ctx)
	if err != nil {
		return nil
	}
	ids := make([]deviceID, len(infos))
	for i, in := range infos {
		ids[i] = deviceID{in.UUID, in.Name}
	}
	c.ids = ids
	return ids
}

// Collect sends every device's gauges. Memory comes from one
// [vram.Manager.Usage] per device (which, unlike Capacity, is not
// narrated), so that used and reserved bytes are
// one consistent reading; sealed bytes and shard counts come from one
// [vram.Manager.Shards] for all devices. A device whose memory cannot be
// read gets no memory gauges in this scrape. Until the devices' UUIDs and
// names have been read once there are no device series at all, so that no
// series appears with labels that later change; a device whose UUID is
// unknown never gets series, since they could not be joined with DCGM's.
func (c *managerCollector) Collect(ch chan<- prometheus.Metric) {
	ctx := context.Background()
	n := c.m.DeviceCount()
	ids := c.identities(ctx)
	sealed := make([]int64, n)
	shards := make([]int, n)
	for _, sh := range c.m.Shards() {
		if d := sh.Seal.DeviceIndex; d >= 0 && d < n {
			sealed[d] += sh.Seal.Size
			shards[d]++
		}
	}
	for i := range min(n, len(ids)) { // no device series until identities are known
		id := ids[i]
		cp, err := c.m.Usage(ctx, i)
		if id.uuid == "" {
			continue
		}
		lv := []string{strconv.Itoa(i), id.uuid, id.name}
		gauge := func(d *prometheus.Desc, v int64) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(v), lv...)
		}
		if err == nil {
			gauge(descTotal, cp.TotalBytes)
			gauge(descFree, cp.FreeBytes)
			gauge(descUsed, cp.UsedBytes)
			gauge(descReserved, cp.ReservedBytes)
		}
		gauge(descSealed, sealed[i])
		gauge(descShards, int64(shards[i]))
	}
	stopped := 0.0
	if st, _ := c.m.State(); st == vram.Stopped {
		stopped = 1
	}
	ch <- prometheus.MustNewConstMetric(descState, prometheus.GaugeValue, stopped)
	sc := c.m.ScrubStats()
	ch <- prometheus.MustNewConstMetric(descScrubPasses, prometheus.CounterValue, float64(sc.Passes))
	ch <- prometheus.MustNewConstMetric(descScrubBytes, prometheus.CounterValue, float64(sc.Bytes))
	ch <- prometheus.MustNewConstMetric(descScrubFailures, prometheus.CounterValue, float64(sc.Failures))
	if !sc.LastPass.IsZero() {
		ch <- prometheus.MustNewConstMetric(descScrubLast, prometheus.GaugeValue, float64(sc.LastPass.UnixNano())/1e9)
	}
}

var (
	descAuditEvents  = prometheus.NewDesc("vramseal_audit_events_total", "Audit events by outcome: queued, written, durable, dropped, rejected, failed, lost.", []string{"outcome"}, nil)
	descAuditQueue   = prometheus.NewDesc("vramseal_audit_queue_depth", "Audit events waiting for the writer.", nil, nil)
	descAuditSyncs   = prometheus.NewDesc("vramseal_audit_fsyncs_total", "Group-commit fsyncs of the audit log.", nil, nil)
	descAuditHealthy = prometheus.NewDesc("vramseal_audit_healthy", "1 while the audit log accepts records, 0 once it latched failed.", nil, nil)
	descAuditErrors  = prometheus.NewDesc("vramseal_audit_write_errors_total", "Audit events not recorded because the log failed (failed + lost).", nil, nil)
)

// NewAuditCollector exports an audit log's counters: pass an
// [audit.Log]'s Stats and Health methods. Events refused because the
// queue stayed full are vramseal_audit_events_total{outcome="dropped"};
// events the failed log refused or lost are
// vramseal_audit_write_errors_total.
func NewAuditCollector(stats func() audit.Stats, health func() audit.Health) prometheus.Collector {
	return &auditCollector{stats: stats, health: health}
}

type auditCollector struct {
	stats  func() audit.Stats
	health func() audit.Health
}

func (c *auditCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descAuditEvents, descAuditQueue, descAuditSyncs, descAuditHealthy, descAuditErrors} {
		ch <- d
	}
}

func (c *auditCollector) Collect(ch chan<- prometheus.Metric) {
	st, h := c.stats(), c.health()
	for _, o := range []struct {
		name string
		v    uint64
	}{{"queued", st.Queued}, {"written", st.Written}, {"durable", st.Durable}, {"dropped", st.Dropped},
		{"rejected", st.Rejected}, {"failed", st.Failed}, {"lost", st.Lost}} {
		ch <- prometheus.MustNewConstMetric(descAuditEvents, prometheus.CounterValue, float64(o.v), o.name)
	}
	ch <- prometheus.MustNewConstMetric(descAuditQueue, prometheus.GaugeValue, float64(st.Queue))
	ch <- prometheus.MustNewConstMetric(descAuditSyncs, prometheus.CounterValue, float64(st.Syncs))
	healthy := 0.0
	if h.OK {
		healthy = 1
	}
	ch <- prometheus.MustNewConstMetric(descAuditHealthy, prometheus.GaugeValue, healthy)
	ch <- prometheus.MustNewConstMetric(descAuditErrors, prometheus.CounterValue, float64(st.Failed+st.Lost))
}

var (
	descReplConfigured = prometheus.NewDesc("vramseal_audit_replication_configured", "1 when the audit log is replicated to NATS JetStream (serve --audit-replicate), else 0.", nil, nil)
	descReplConnected  = prometheus.NewDesc("vramseal_audit_replication_connected", "1 while the audit replication is connected to NATS.", nil, nil)
	descReplStopped    = prometheus.NewDesc("vramseal_audit_replication_stopped", "1 when audit replication stopped for good: the stream and the local log disagree.", nil, nil)
	descReplAcked      = prometheus.NewDesc("vramseal_audit_replication_acked_seq", "Sequence number of the last audit record the stream acknowledged.", nil, nil)
	descReplLagRecords = prometheus.NewDesc("vramseal_audit_replication_lag_records", "Durable audit records not yet acknowledged by the stream.", nil, nil)
	descReplLagSeconds = prometheus.NewDesc("vramseal_audit_replication_lag_seconds", "Age of the oldest durable audit record not yet acknowledged by the stream (0 when caught up).", nil, nil)
	descReplRecords    = prometheus.NewDesc("vramseal_audit_replication_records_total", "Audit records the stream acknowledged since start.", nil, nil)
	descReplErrors     = prometheus.NewDesc("vramseal_audit_replication_errors_total", "Failures of audit replication since start (each retried).", nil, nil)
)

// NewReplicationCollector exports the state of audit replication: pass a
// [replicate.Shipper]'s Status method, or nil when the log is not
// replicated (the series then read 0, with
// vramseal_audit_replication_configured 0, so alerts can tell).
func NewReplicationCollector(status func() replicate.Status) prometheus.Collector {
	return &replCollector{status: status}
}

type replCollector struct{ status func() replicate.Status }

func (c *replCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descReplConfigured, descReplConnected, descReplStopped, descReplAcked,
		descReplLagRecords, descReplLagSeconds, descReplRecords, descReplErrors} {
		ch <- d
	}
}

func (c *replCollector) Collect(ch chan<- prometheus.Metric) {
	var st replicate.Status
	configured := c.status != nil
	if configured {
		st = c.status()
	}
	gauge := func(d *prometheus.Desc, v float64) { ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v) }
	gauge(descReplConfigured, boolFloat(configured))
	gauge(descReplConnected, boolFloat(st.Connected))
	gauge(descReplStopped, boolFloat(st.Stopped))
	gauge(descReplAcked, float64(st.Acked))
	gauge(descReplLagRecords, float64(st.LagRecords))
	gauge(descReplLagSeconds, st.Lag.Seconds())
	ch <- prometheus.MustNewConstMetric(descReplRecords, prometheus.CounterValue, float64(st.Shipped))
	ch <- prometheus.MustNewConstMetric(descReplErrors, prometheus.CounterValue, float64(st.Errors))
}

func boolFloat(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
