package server

import (
	"context"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/vramseal/vramseal/audit"
	"github.com/vramseal/vramseal/vram"
)

// metrics holds the daemon's Prometheus metrics. Gauges of device memory
// and shards are read from the manager at scrape time; durations and
// failures are observed by the handlers. Label names join with
// dcgm-exporter's: gpu (index), UUID, modelName.
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
	descTotal    = prometheus.NewDesc("vramseal_vram_total_bytes", "Device memory size in bytes.", []string{"gpu", "UUID"}, nil)
	descFree     = prometheus.NewDesc("vramseal_vram_free_bytes", "Device memory free in bytes, as the driver reports.", []string{"gpu", "UUID"}, nil)
	descUsed     = prometheus.NewDesc("vramseal_vram_used_bytes", "Device memory held by sealed shards in bytes.", []string{"gpu", "UUID"}, nil)
	descReserved = prometheus.NewDesc("vramseal_vram_reserved_bytes", "Device memory allocated for seals in progress in bytes.", []string{"gpu", "UUID"}, nil)
	descSealed   = prometheus.NewDesc("vramseal_sealed_bytes", "Bytes of sealed shards by model.", []string{"gpu", "UUID", "modelName"}, nil)
	descShards   = prometheus.NewDesc("vramseal_shards", "Resident sealed shards.", []string{"gpu", "UUID"}, nil)
	descState    = prometheus.NewDesc("vramseal_worker_stopped", "1 when the worker is stopped after an integrity or policy failure.", nil, nil)
)

type managerCollector struct{ m *vram.Manager }

func (c *managerCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descTotal, descFree, descUsed, descReserved, descSealed, descShards, descState} {
		ch <- d
	}
}

func (c *managerCollector) Collect(ch chan<- prometheus.Metric) {
	ctx := context.Background()
	uuids := make([]string, c.m.DeviceCount())
	for i := range c.m.DeviceCount() {
		cp, err := c.m.Capacity(ctx, i)
		if err != nil {
			continue
		}
		uuids[i] = cp.UUID
		gpu := strconv.Itoa(i)
		ch <- prometheus.MustNewConstMetric(descTotal, prometheus.GaugeValue, float64(cp.TotalBytes), gpu, cp.UUID)
		ch <- prometheus.MustNewConstMetric(descFree, prometheus.GaugeValue, float64(cp.FreeBytes), gpu, cp.UUID)
		ch <- prometheus.MustNewConstMetric(descUsed, prometheus.GaugeValue, float64(cp.UsedBytes), gpu, cp.UUID)
		ch <- prometheus.MustNewConstMetric(descReserved, prometheus.GaugeValue, float64(cp.ReservedBytes), gpu, cp.UUID)
		ch <- prometheus.MustNewConstMetric(descShards, prometheus.GaugeValue, float64(cp.Shards), gpu, cp.UUID)
	}
	type key struct {
		gpu   int
		model string
	}
	sealed := map[key]int64{}
	for _, sh := range c.m.Shards() {
		sealed[key{sh.Seal.DeviceIndex, sh.Seal.ModelRef}] += sh.Seal.Size
	}
	for k, v := range sealed {
		uuid := ""
		if k.gpu < len(uuids) {
			uuid = uuids[k.gpu]
		}
		ch <- prometheus.MustNewConstMetric(descSealed, prometheus.GaugeValue, float64(v), strconv.Itoa(k.gpu), uuid, k.model)
	}
	stopped := 0.0
	if st, _ := c.m.State(); st == vram.Stopped {
		stopped = 1
	}
	ch <- prometheus.MustNewConstMetric(descState, prometheus.GaugeValue, stopped)
}

var (
	descAuditEvents  = prometheus.NewDesc("vramseal_audit_events_total", "Audit events by outcome: queued, written, durable, dropped, rejected, failed, lost.", []string{"outcome"}, nil)
	descAuditQueue   = prometheus.NewDesc("vramseal_audit_queue_depth", "Audit events waiting for the writer.", nil, nil)
	descAuditSyncs   = prometheus.NewDesc("vramseal_audit_fsyncs_total", "Group-commit fsyncs of the audit log.", nil, nil)
	descAuditHealthy = prometheus.NewDesc("vramseal_audit_healthy", "1 while the audit log accepts records, 0 once it latched failed.", nil, nil)
	descAuditErrors  = prometheus.NewDesc("vramseal_audit_write_errors_total", "Audit events not recorded because the log failed (failed + lost).", nil, nil)
)

// NewAuditCollector exports an audit log's counters.
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
