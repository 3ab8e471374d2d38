// Command xtbpfd is the xtbpf daemon: it serves the iptables-legacy socket
// options that the xtbpf shim forwards, running filter tables as eBPF.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"xtbpf/umh"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "xtbpfd:", err)
		os.Exit(1)
	}
}

func run() error {
	cfg := umh.Config{}
	var mode, level string
	flag.StringVar(&cfg.Socket, "socket", "/run/xtbpf/xtbpf.sock", "unix socket the shim connects to")
	flag.StringVar(&cfg.StateDir, "state-dir", "/var/lib/xtbpf", "directory keeping the tables across restarts")
	flag.StringVar(&cfg.BPFFS, "bpffs", "/sys/fs/bpf/xtbpf", "bpffs directory where programs, maps and links are pinned")
	flag.StringVar(&mode, "mode", string(umh.Fallback), "what to do with a filter table BPF cannot run: fallback (hand it to the kernel) or strict (refuse it)")
	recent := flag.String("recent", "bpf", "where tables with -m recent rules run: bpf (lists read and written with xtbpf recent) or kernel (lists in /proc/net/xt_recent)")
	flag.StringVar(&level, "log-level", "info", "debug, info, warn or error")
	metricsAddr := flag.String("metrics-addr", "", "serve Prometheus metrics on this address (host:port); off when empty")
	flag.Parse()
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	cfg.Mode = umh.Mode(mode)
	switch *recent {
	case "bpf":
	case "kernel":
		cfg.KernelRecent = true
	default:
		return fmt.Errorf("--recent %q: want bpf or kernel", *recent)
	}
	cfg.Log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lv}))
	d, err := umh.New(cfg)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if *metricsAddr != "" {
		addr, err := d.ServeMetrics(ctx, *metricsAddr)
		if err != nil {
			return err
		}
		cfg.Log.Info("serving metrics", "addr", addr.String())
	}
	return d.Serve(ctx, func() {
		cfg.Log.Info("serving", "socket", cfg.Socket, "mode", cfg.Mode)
		if err := umh.Notify("READY=1"); err != nil {
			cfg.Log.Warn("tell the service manager we are ready", "err", err)
		}
	})
}
