package umh

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sys/unix"

	"xtbpf/umh/wire"
	"xtbpf/xtables"
)

// metrics are the daemon's Prometheus metrics. Rule and policy counters
// are read from the data plane at scrape time (tableCollector), so a
// scrape costs nothing between scrapes and never shows a stale count.
type metrics struct {
	reg      *prometheus.Registry
	latency  *prometheus.HistogramVec
	requests *prometheus.CounterVec
	errors   *prometheus.CounterVec
}

func newMetrics(d *Daemon) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "xtbpf_request_duration_seconds",
			Help:    "Time to answer one forwarded sockopt or control request, by operation.",
			Buckets: prometheus.ExponentialBuckets(10e-6, 4, 10),
		}, []string{"op"}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "xtbpf_requests_total",
			Help: "Requests answered, by operation and by who answered: xtbpf (result) or the kernel (pass).",
		}, []string{"op", "answer"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "xtbpf_request_errors_total",
			Help: "Requests answered with an errno, by operation and errno name.",
		}, []string{"op", "errno"}),
	}
	m.reg.MustRegister(m.latency, m.requests, m.errors, tableCollector{d})
	return m
}

// opName names a request by what the iptables binary asked, so a metric
// reads like the call it counts.
func opName(req *wire.Request) string {
	switch req.Op {
	case wire.OpStatus:
		return "STATUS"
	case wire.OpRelease:
		return "RELEASE"
	case wire.OpRecent:
		return "RECENT"
	}
	fam, ok := family(int(req.Level))
	if !ok {
		return "other"
	}
	set := req.Op == wire.OpSetsockopt
	switch {
	case set && req.Optname == xtables.SoSetReplace:
		return "SET_REPLACE"
	case set && req.Optname == xtables.SoSetAddCounters:
		return "SET_ADD_COUNTERS"
	case set:
		return "other"
	case req.Optname == xtables.SoGetInfo:
		return "GET_INFO"
	case req.Optname == xtables.SoGetEntries:
		return "GET_ENTRIES"
	}
	if rev, target := revisionOpt(fam, int(req.Optname)); rev {
		if target {
			return "GET_REVISION_TARGET"
		}
		return "GET_REVISION_MATCH"
	}
	return "other"
}

func (m *metrics) observe(req *wire.Request, rep *wire.Reply, took time.Duration) {
	op := opName(req)
	m.latency.WithLabelValues(op).Observe(took.Seconds())
	answer := "xtbpf"
	if rep.Status == wire.StatusPass {
		answer = "kernel"
	}
	m.requests.WithLabelValues(op, answer).Inc()
	if rep.Err != 0 {
		m.errors.WithLabelValues(op, unix.ErrnoName(unix.Errno(rep.Err))).Inc()
	}
}

var (
	tableLabels = []string{"netns", "family", "table"}
	ruleLabels  = []string{"netns", "family", "table", "chain", "rule", "comment"}
	chainLabels = []string{"netns", "family", "table", "chain", "policy"}

	descTable = prometheus.NewDesc("xtbpf_table_info",
		"1 for each filter table xtbpf serves; mode is bpf or kernel (fallback).", append(tableLabels, "mode"), nil)
	descRules = prometheus.NewDesc("xtbpf_table_rules",
		"Rules in the table, as iptables -S lists them.", tableLabels, nil)
	descRulePackets = prometheus.NewDesc("xtbpf_rule_packets_total",
		"Packets that matched the rule (iptables -L -v pkts). rule is its 1-based position in the chain.", ruleLabels, nil)
	descRuleBytes = prometheus.NewDesc("xtbpf_rule_bytes_total",
		"Bytes of the packets that matched the rule (iptables -L -v bytes).", ruleLabels, nil)
	descPolicyPackets = prometheus.NewDesc("xtbpf_chain_policy_packets_total",
		"Packets decided by a built-in chain's policy.", chainLabels, nil)
	descPolicyBytes = prometheus.NewDesc("xtbpf_chain_policy_bytes_total",
		"Bytes of the packets decided by a built-in chain's policy.", chainLabels, nil)
	descScrapeErrors = prometheus.NewDesc("xtbpf_scrape_errors",
		"Tables whose counters could not be read during this scrape.", nil, nil)
)

// tableCollector reports every served table's counters. A table in the
// kernel's xtables (fallback) reports only its mode: its counters are the
// kernel's, read with iptables -L -v.
type tableCollector struct{ d *Daemon }

func (c tableCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descTable, descRules, descRulePackets, descRuleBytes, descPolicyPackets, descPolicyBytes, descScrapeErrors} {
		ch <- d
	}
}

func (c tableCollector) Collect(ch chan<- prometheus.Metric) {
	c.d.mu.Lock()
	cookies := make([]uint64, 0, len(c.d.ns))
	for cookie := range c.d.ns {
		cookies = append(cookies, cookie)
	}
	c.d.mu.Unlock()
	failed := 0
	for _, cookie := range cookies {
		failed += c.collectNS(ch, cookie)
	}
	ch <- prometheus.MustNewConstMetric(descScrapeErrors, prometheus.GaugeValue, float64(failed))
}

// collectNS reports one namespace's tables and returns how many could not
// be read.
func (c tableCollector) collectNS(ch chan<- prometheus.Metric, cookie uint64) int {
	n := c.d.lockKnownNS(cookie)
	if n == nil {
		return 0
	}
	defer n.mu.Unlock()
	failed := 0
	for _, fam := range []xtables.Family{xtables.IPv4, xtables.IPv6} {
		f := n.filters[fam]
		if f == nil {
			continue
		}
		if err := collectTable(ch, strconv.FormatUint(cookie, 10), f); err != nil {
			c.d.log.Warn("metrics: read counters", "netns", cookie, "family", famName(fam), "err", err)
			failed++
		}
	}
	return failed
}

func collectTable(ch chan<- prometheus.Metric, ns string, f *filter) error {
	fam := famName(f.fam)
	mode := "bpf"
	if f.kernel {
		mode = "kernel"
	}
	ch <- prometheus.MustNewConstMetric(descTable, prometheus.GaugeValue, 1, ns, fam, ownedTable, mode)
	if f.kernel {
		return nil
	}
	rules, _ := countRules(f.table)
	ch <- prometheus.MustNewConstMetric(descRules, prometheus.GaugeValue, float64(rules), ns, fam, ownedTable)
	counts, err := f.counters()
	if err != nil {
		return err
	}
	for i, ref := range layoutOf(f.table) {
		c := counts[i]
		switch ref.kind {
		case entryRule:
			labels := []string{ns, fam, ownedTable, ref.chain, strconv.Itoa(ref.pos), ref.comment}
			ch <- prometheus.MustNewConstMetric(descRulePackets, prometheus.CounterValue, float64(c.Packets), labels...)
			ch <- prometheus.MustNewConstMetric(descRuleBytes, prometheus.CounterValue, float64(c.Bytes), labels...)
		case entryPolicy:
			labels := []string{ns, fam, ownedTable, ref.chain, ref.policy}
			ch <- prometheus.MustNewConstMetric(descPolicyPackets, prometheus.CounterValue, float64(c.Packets), labels...)
			ch <- prometheus.MustNewConstMetric(descPolicyBytes, prometheus.CounterValue, float64(c.Bytes), labels...)
		}
	}
	return nil
}

// ServeMetrics serves /metrics on addr until ctx is done. It returns once
// listening, reporting the address bound (useful with port 0).
func (d *Daemon) ServeMetrics(ctx context.Context, addr string) (net.Addr, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(d.metrics.reg, promhttp.HandlerOpts{}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			d.log.Warn("metrics server stopped", "err", err)
		}
	}()
	return ln.Addr(), nil
}
