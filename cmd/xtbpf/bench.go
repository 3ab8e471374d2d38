package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"xtbpf/internal/bench"
)

func init() {
	register("bench", "compare iptables-legacy, iptables-nft and xtbpf in scratch namespaces: bench [--quick] [--out FILE.md]", benchCmd)
}

func benchCmd(args []string) error {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	out := fs.String("out", "docs/benchmarks.md", "report to write; the plot goes next to it as NAME-pps.png")
	quick := fs.Bool("quick", false, "fewer rule counts and shorter points (a few minutes)")
	counts := fs.String("counts", "", "comma-separated rule counts, overriding the default set")
	backends := fs.String("backends", strings.Join(bench.AllBackends, ","), "comma-separated back ends to measure")
	duration := fs.Duration("duration", 0, "counted traffic per point (0: the mode's default)")
	warmup := fs.Duration("warmup", 0, "traffic before counting starts (0: the mode's default)")
	updatesOnly := fs.Bool("updates", false, "measure only update times, memory and the program's cost (no traffic), logged; no report is written")
	binDir := fs.String("bin", "", "directory with xtbpfd, xtbpf and libxtbpf.so (default: this program's)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return exitCode(2)
	}
	if os.Geteuid() != 0 {
		return errors.New("needs root: it creates network namespaces and mounts bpffs")
	}
	if *binDir == "" {
		self, err := os.Executable()
		if err != nil {
			return fmt.Errorf("find bin directory: %w", err)
		}
		*binDir = filepath.Dir(self)
	}
	cfg := bench.DefaultConfig(*binDir, os.Stderr)
	if *quick {
		cfg = bench.QuickConfig(*binDir, os.Stderr)
	}
	cfg.Backends = strings.Split(*backends, ",")
	cfg.UpdatesOnly = *updatesOnly
	if *counts != "" {
		cfg.Counts = nil
		for _, s := range strings.Split(*counts, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(s))
			if err != nil || n < 0 {
				return fmt.Errorf("--counts: %q is not a rule count", s)
			}
			cfg.Counts = append(cfg.Counts, n)
		}
	}
	if *duration > 0 {
		cfg.Duration = *duration
	}
	if *warmup > 0 {
		cfg.Warmup = *warmup
	}
	// Ctrl-C or SIGTERM cancels the run; Run still removes what it made.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	res, err := bench.Run(ctx, cfg)
	if err != nil || cfg.UpdatesOnly {
		return err
	}
	return writeReport(res, *out)
}

// writeReport writes the plot and then the report that links it, each via
// a temporary file, so an interrupted write leaves the previous report.
func writeReport(res *bench.Results, out string) error {
	png := strings.TrimSuffix(out, filepath.Ext(out)) + "-pps.png"
	var img bytes.Buffer
	if err := res.WritePlot(&img); err != nil {
		return err
	}
	if err := writeFile(png, img.Bytes()); err != nil {
		return err
	}
	var md bytes.Buffer
	res.WriteMarkdown(&md, filepath.Base(png))
	if err := writeFile(out, md.Bytes()); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "%s wrote %s and %s\n", time.Now().Format("15:04:05"), out, png)
	return nil
}

func writeFile(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
