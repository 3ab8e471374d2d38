// Package bpf is the data plane: the BPF netfilter classifier, its maps,
// loading and pinning, attaching, the atomic switch between plans, and
// counter reads.
package bpf

//go:generate go run github.com/cilium/ebpf/cmd/bpf2go@v0.22.0 -target bpfel -type xt_rule -type xt_meta -type xt_match -type xt_ext -type xt_seg -type xt_prefix_key -type xt_value_key -type xt_span -type xt_rate -type hl_meta -type hl_key -type hl_ent -type xt_ctl -type xt_targ -type xt_report -type rc_table -type rc_ent -type rc_meta -type xt_recent_ctl classifier src/xtbpf.c -- -I/usr/include/x86_64-linux-gnu -O2 -g -mcpu=v3 -Wall -Werror
