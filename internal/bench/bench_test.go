package bench

import (
	"bytes"
	"encoding/binary"
	"image/png"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestRulesetShape(t *testing.T) {
	for _, n := range []int{0, 1, 10, 1000} {
		text := ruleset(n, "INPUT", "FORWARD")
		lines := strings.Split(strings.TrimSpace(text), "\n")
		if lines[0] != "*filter" || lines[len(lines)-1] != "COMMIT" {
			t.Fatalf("%d rules: not a restore file:\n%s", n, text)
		}
		for _, chain := range []string{"INPUT", "FORWARD"} {
			var rules []string
			for _, l := range lines {
				if strings.HasPrefix(l, "-A "+chain+" ") {
					rules = append(rules, l)
				}
			}
			if len(rules) != n {
				t.Fatalf("%s has %d rules, want %d", chain, len(rules), n)
			}
			if n > 0 && rules[n-1] != acceptRule(chain) {
				t.Errorf("%s's last rule is %q, want the accept rule", chain, rules[n-1])
			}
		}
	}
}

// The fillers must miss the test flow, or "last rule" would not be last,
// and be distinct, or a back end could merge them.
func TestFillersMissTheFlow(t *testing.T) {
	seen := map[string]bool{}
	for i := range 50000 {
		r := fillerRule("INPUT", i)
		src := strings.Fields(r)[3]
		pfx, err := netip.ParsePrefix(src)
		if err != nil {
			t.Fatalf("rule %d: %v", i, err)
		}
		if pfx.Contains(netip.MustParseAddr(senderAddr)) || !netip.MustParsePrefix("172.16.0.0/12").Contains(pfx.Addr()) {
			t.Fatalf("rule %d source %s may match the sender", i, src)
		}
		if seen[r] {
			t.Fatalf("rule %d repeats %q", i, r)
		}
		seen[r] = true
	}
	for _, w := range []string{"192.0.2.1/32", "-j"} {
		if !strings.Contains(strings.Join(extraRule, " "), w) {
			t.Errorf("extra rule lacks %q", w)
		}
	}
}

func TestFlowFrame(t *testing.T) {
	for _, p := range paths {
		for _, f := range flows {
			b := flowFrame(p, f)
			if len(b) != frameLen {
				t.Fatalf("%s %s: %d bytes", p, f, len(b))
			}
			if ipChecksum(b[14:34]) != 0 {
				t.Errorf("%s %s: IPv4 header checksum does not verify", p, f)
			}
			if got := binary.BigEndian.Uint16(b[36:]); got != dstPort(f) {
				t.Errorf("%s %s: dport %d", p, f, got)
			}
			dst := netip.AddrFrom4([4]byte(b[30:34])).String()
			if want := map[Path]string{Input: routerAddr, Forward: sinkAddr}[p]; dst != want {
				t.Errorf("%s %s: dst %s, want %s", p, f, dst, want)
			}
		}
	}
	cfg := trafgenConfig([]byte{0x00, 0xab})
	if !strings.Contains(cfg, "0x00,0xab,") {
		t.Errorf("trafgen config %q", cfg)
	}
}

func TestUDPDelivered(t *testing.T) {
	snmp := "Ip: Forwarding DefaultTTL\nIp: 1 64\n" +
		"Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors\nUdp: 5 100 2 7 2\n" +
		"UdpLite: InDatagrams NoPorts InErrors\nUdpLite: 9 9 9\n"
	path := filepath.Join(t.TempDir(), "snmp")
	if err := os.WriteFile(path, []byte(snmp), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := udpDelivered(path)
	if err != nil || got != 107 {
		t.Fatalf("udpDelivered = %d, %v; want 107", got, err)
	}
}

// sample is a small run in which xtbpf meets some targets and misses
// others.
func sample() *Results {
	r := &Results{Start: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), Elapsed: time.Minute,
		Backends: AllBackends, Counts: []int{0, 10, 1000, 10000, 50000},
		Warmup: time.Second, Duration: 3 * time.Second,
		Ceiling: map[Path]float64{Input: 900e3, Forward: 800e3}}
	rate := map[string]func(n int) float64{
		Legacy: func(n int) float64 { return 700e3 / (1 + float64(n)/400) },
		NFT:    func(n int) float64 { return 400e3 / (1 + float64(n)/2000) },
		XTBPF:  func(n int) float64 { return 720e3 / (1 + float64(n)/20000) },
	}
	for _, b := range AllBackends {
		for _, s := range scenarios {
			for _, n := range r.Counts {
				r.PPS = append(r.PPS, PPSPoint{b, s.Path, s.Flow, n, rate[b](n)})
			}
		}
		for _, n := range r.Counts {
			d := time.Duration(n+10) * time.Microsecond
			r.Updates = append(r.Updates, UpdatePoint{b, n, 20 * d, d, d})
		}
	}
	for _, n := range r.Counts {
		r.Memory = append(r.Memory, MemPoint{n, 20<<20 + int64(n)*1000, 40<<20 + int64(n)*2000, 1<<14 + int64(n)*500})
		r.Prog = append(r.Prog, ProgPoint{n, uint32(40 + n/10), uint32(40 + n/10)})
	}
	return r
}

func TestTargets(t *testing.T) {
	r := sample()
	want := map[string]string{
		"10 K rules ≥ 10× iptables-legacy":      Pass, // 480 K vs 27 K
		"10 K rules ≥ 100× iptables-nft":        Miss, // 480 K vs 67 K
		"0 rules ≥ 1× iptables-legacy":          Pass,
		"50 K rules ≥ 70% of xtbpf at 10 rules": Miss, // 240 K vs 720 K
	}
	for _, tg := range ppsTargets {
		w, ok := want[tg.String()]
		if !ok {
			continue
		}
		got := verdict(r.ratios(tg), func(v float64) bool { return v >= tg.AtLeast })
		if got != w {
			t.Errorf("%s: %s, want %s (ratios %v)", tg, got, w, r.ratios(tg))
		}
	}
	other := r.otherTargets()
	if other[2].Value != 1500 {
		t.Errorf("memory per rule %v, want 1500", other[2].Value)
	}
	if other[0].Value != 1 {
		t.Errorf("restore ratio %v, want 1", other[0].Value)
	}
}

func TestMarkdownAndPlot(t *testing.T) {
	r := sample()
	// Without 10 K and 50 K, their targets go unmeasured.
	r.Counts = []int{0, 10, 1000}
	var kept []PPSPoint
	for _, p := range r.PPS {
		if p.Rules <= 1000 {
			kept = append(kept, p)
		}
	}
	r.PPS = kept
	var md bytes.Buffer
	r.WriteMarkdown(&md, "benchmarks-pps.png")
	out := md.String()
	for _, want := range []string{
		"## Machine", "## Targets of issue 4", "![packets per second against rules](benchmarks-pps.png)",
		"| 1 K | 200 K |", NotMeasured, "## xtbpf memory", "## What limits the numbers",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
	var img bytes.Buffer
	if err := r.WritePlot(&img); err != nil {
		t.Fatal(err)
	}
	if _, err := png.Decode(&img); err != nil {
		t.Fatalf("plot is no PNG: %v", err)
	}
}
