// SPDX-License-Identifier: GPL-2.0
/* The filter table as a BPF netfilter program: an interpreter that walks
 * the rule array of the active generation exactly as ipt_do_table and
 * ip6t_do_table walk their entries. */
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_core_read.h>

#include "kernel.h"
#include "xtbpf.h"

#define NF_DROP 0
#define NF_ACCEPT 1
#define NFPROTO_IPV4 2
#define NUM_HOOKS 5
#define MAX_STEPS (1 << 23) /* bpf_loop's ceiling; a loop-free table ends far sooner */

#define IPPROTO_TCP 6
#define NEXTHDR_HOP 0
#define NEXTHDR_ROUTING 43
#define NEXTHDR_FRAGMENT 44
#define NEXTHDR_AUTH 51
#define NEXTHDR_NONE 59
#define NEXTHDR_DEST 60

#define IP_CT_IS_REPLY 3
#define IP_CT_UNTRACKED 7
#define NFCT_INFOMASK 7UL
#define PACKET_LOOPBACK 5
#define PACKET_BROADCAST 1
#define PACKET_MULTICAST 2

char _license[] SEC("license") = "GPL";

/* nf_ct_expires counts in jiffies; xt_conntrack reports seconds. */
extern unsigned int CONFIG_HZ __kconfig;

/* Puts the record types into BTF, which bpf2go turns into Go types. */
const struct xt_rule *unused_rule __attribute__((unused));
const struct xt_ext *unused_ext __attribute__((unused));
const struct xt_seg *unused_seg __attribute__((unused));
const struct xt_prefix_key *unused_prefix __attribute__((unused));
const struct xt_value_key *unused_value __attribute__((unused));
const struct xt_rate *unused_rate __attribute__((unused));
/* Also completes the key and value types of the hashlimit and recent
 * inner map templates, which clang would otherwise leave as forward
 * declarations: the kernel must see the value's bpf_spin_lock. */
const struct hl_key *unused_hl_key __attribute__((unused));
const struct hl_ent *unused_hl_ent __attribute__((unused));
const struct rc_table *unused_rc_table __attribute__((unused));
const struct xt_targ *unused_targ __attribute__((unused));
const struct xt_report *unused_report __attribute__((unused));
const struct rc_ent *unused_rc_ent __attribute__((unused));
const struct rc_meta *unused_rc_meta __attribute__((unused));
const struct xt_recent_ctl *unused_recent_ctl __attribute__((unused));

/* Which generation packets use; flipped by one write on install. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} active SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, struct xt_meta);
} meta SEC(".maps");

/* Inner maps are sized per plan; BPF_F_INNER_MAP lets sizes differ. Their
 * sizes are given as numbers: clang emits the value structs of an inner
 * map template only as forward declarations. */
struct rule_array {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_INNER_MAP);
	__uint(max_entries, 1);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(struct xt_rule));
};

/* Per-CPU counters laid out by hand, cpu * nrules + entry: the kernel
 * refuses BPF_F_INNER_MAP on per-CPU arrays, and inner maps must be
 * sized per plan. Each CPU writes only its own stripe. */
struct counter_array {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_INNER_MAP);
	__uint(max_entries, 1);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(struct xt_counter));
};

/* STACK_SLOTS jump stacks of meta.depth frames each, per CPU, striped by
 * CPU like the counters. */
struct stack_array {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_INNER_MAP);
	__uint(max_entries, 1);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
};

struct match_array {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_INNER_MAP);
	__uint(max_entries, 1);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(struct xt_match));
};

struct ext_array {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_INNER_MAP);
	__uint(max_entries, 1);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(struct xt_ext));
};

struct seg_array {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_INNER_MAP);
	__uint(max_entries, 1);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(struct xt_seg));
};

struct cand_array {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_INNER_MAP);
	__uint(max_entries, 1);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
};

struct prefix_trie {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 1);
	__uint(key_size, sizeof(struct xt_prefix_key));
	__uint(value_size, sizeof(struct xt_span));
};

struct value_hash {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1);
	__uint(key_size, sizeof(struct xt_value_key));
	__uint(value_size, sizeof(struct xt_span));
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 2);
	__type(key, __u32);
	__array(values, struct rule_array);
} rules SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 2);
	__type(key, __u32);
	__array(values, struct seg_array);
} segs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 2);
	__type(key, __u32);
	__array(values, struct cand_array);
} cands SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 2);
	__type(key, __u32);
	__array(values, struct prefix_trie);
} prefixes SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 2);
	__type(key, __u32);
	__array(values, struct value_hash);
} values SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 2);
	__type(key, __u32);
	__array(values, struct match_array);
} matches SEC(".maps");

struct targ_array {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_INNER_MAP);
	__uint(max_entries, 1);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(struct xt_targ));
};

/* REJECT and LOG reports reach user space through this ring. It exists
 * only once a plan has such rules (the loader puts it in reports[0]), so
 * namespaces without them pay nothing for it. */
struct report_ring {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 2);
	__type(key, __u32);
	__array(values, struct targ_array);
} targs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 1);
	__type(key, __u32);
	__array(values, struct report_ring);
} reports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 2);
	__type(key, __u32);
	__array(values, struct ext_array);
} exts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 2);
	__type(key, __u32);
	__array(values, struct counter_array);
} counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 2);
	__type(key, __u32);
	__array(values, struct stack_array);
} stacks SEC(".maps");

/* Per-CPU bitmask of jump stack slots in use. Runs nest on one CPU (a
 * softirq interrupting LOCAL_OUT in process context, or preemption), so
 * each run claims its own slot, for its jump stack and its packet. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} busy SEC(".maps");


/* What nf_ct_get says of the packet, for plans that look at it; the
 * entry's fields are read by the matches that need them. */
struct ct {
	__u64 conn;	/* struct nf_conn *, 0 for none */
	__u16 statebit;	/* XT_CONNTRACK_STATE_* of the packet, NAT bits aside */
	__u8 reply;	/* CTINFO2DIR is IP_CT_DIR_REPLY */
};

#define NO_CAND 0xffffffffU

/* Where the walk is in a segment's candidate lists: one list per field
 * part and the default list (part 0), merged in entry order. */
struct cursor {
	__u32 gen;
	__u32 pc;	/* the entry the walk is at */
	__u32 seg;	/* the segment whose lists the walk follows, 0 for none */
	__u32 segend;
	/* The packet cannot use the segment's index: walk it entry by entry. */
	__u32 linear;
	__u32 from;	/* the part pc came from */
	__u32 pos[8];	/* per part: position in cands, list end, and the */
	__u32 end[8];	/* entry at pos (NO_CAND past the end) */
	__u32 head[8];
};

/* The packet, parsed once. It lives in the scratch map, in the run's
 * slot: the verifier caps the stack of the walk and the functions it
 * calls at 512 bytes, which the parsed packet would mostly fill. */
struct pkt {
	__u32 src[4];
	__u32 dst[4];
	__u64 in[2];
	__u64 out[2];
	__u64 opts[4];	/* TCP option kinds the kernel's option walk visits */
	__u32 len;	/* skb->len, what byte counters add */
	__s32 proto;	/* IPv4 protocol, or ipv6_find_hdr's result */
	__u32 thoff;
	__u16 fragoff;	/* IPv4: offset in 8-byte units; IPv6: in bytes */
	__u8 v6;
	__u8 l4len;	/* bytes of transport header present: 0, 8 or 20 */
	__u16 sport;
	__u16 dport;
	__u8 tcpflags;
	__u8 doff;
	__u8 icmp_type;
	__u8 icmp_code;
	__u8 opts_bad;	/* the options could not be read */
	__u8 ttl;	/* IPv4 ttl, IPv6 hop limit */
	__u8 tos;	/* IPv4 tos, IPv6 traffic class */
	__u8 hlports_ok;	/* 0: hashlimit could not read its ports (hotdrop) */
	__u8 hot;	/* a match said yes and hot-dropped (see step) */
	__u16 iplen;	/* xt_length's length: tot_len, or payload_len + 40 */
	__u8 pkttype;	/* skb->pkt_type */
	__u8 gen;	/* the generation whose limit and hashlimit state applies */
	__u32 mark;
	__u32 hlports;	/* the 4 bytes hashlimit reads as ports, as they are */
	struct ct ct;
	__u64 skb;	/* struct sk_buff *, for the matches that read the kernel's state */
	__u64 state;	/* struct nf_hook_state * */
};

/* A run's state that does not fit the stack, in its slot of scratch. */
struct scratch {
	struct pkt p;
	struct cursor c;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, STACK_SLOTS);
	__type(key, __u32);
	__type(value, struct scratch);
} scratch SEC(".maps");

struct walk {
	struct bpf_dynptr ptr;
	struct pkt *p;
	struct bpf_nf_ctx *ctx;
	void *rules;
	void *matches;
	void *exts;
	void *targs;
	void *counters;
	void *stack;
	__u32 *busy;
	__u32 under;
	__u32 sp;
	__u32 depth;
	__u32 nrules;
	__u32 cpu;
	__s32 slot;
	__u32 verdict;
	__u32 start;	/* scratch for the header walks */
	struct cursor *cur;
	__u8 nexthdr;
	__u8 done;
};

static __always_inline int ext_hdr(__u8 nh)
{
	return nh == NEXTHDR_HOP || nh == NEXTHDR_ROUTING || nh == NEXTHDR_FRAGMENT ||
	       nh == NEXTHDR_AUTH || nh == NEXTHDR_NONE || nh == NEXTHDR_DEST;
}

#include "ratelimit.h"

/* One step of ipv6_find_hdr(skb, &off, -1, &fragoff, NULL) with off 0. */
static long v6_hdr_step(__u64 i, struct walk *w)
{
	__u8 buf[4];
	__u8 *hp;
	__u16 frag;
	__u8 nh = w->nexthdr;

	if (!ext_hdr(nh) || nh == NEXTHDR_NONE) {
		w->p->proto = nh;
		w->p->thoff = w->start;
		return 1;
	}
	/* The kernel reads a whole ipv6_rt_hdr, and a fragment header's
	 * frag_off, before it looks at either: a header cut short of 4
	 * bytes is an error even where 2 would do. */
	if (nh == NEXTHDR_ROUTING || nh == NEXTHDR_FRAGMENT) {
		hp = bpf_dynptr_slice(&w->ptr, w->start, buf, 4);
		if (!hp)
			goto bad;
		if (nh == NEXTHDR_FRAGMENT) {
			frag = (((__u16)hp[2] << 8) | hp[3]) & ~0x7;
			if (frag) {
				/* A later fragment: its upper layer is unknowable,
				 * unless the next header is not an extension. */
				if (!ext_hdr(hp[0]) || hp[0] == NEXTHDR_NONE) {
					w->p->fragoff = frag;
					w->p->proto = hp[0];
					/* ipv6_find_hdr returns here without
					 * storing the offset, so the matches see
					 * thoff 0: the ones that ignore fragments
					 * (ecn) read the IPv6 header itself. */
					w->p->thoff = 0;
					return 1;
				}
				goto bad;
			}
			w->start += 8;
		} else {
			w->start += ((__u32)hp[1] + 1) << 3;
		}
	} else {
		hp = bpf_dynptr_slice(&w->ptr, w->start, buf, 2);
		if (!hp)
			goto bad;
		if (nh == NEXTHDR_AUTH)
			w->start += ((__u32)hp[1] + 2) << 2;
		else
			w->start += ((__u32)hp[1] + 1) << 3;
	}
	w->nexthdr = hp[0];
	return 0;
bad:
	w->p->proto = -1;
	return 1;
}

/* The option bytes, walked outside struct walk so that its buffer is not
 * on the stack of every match. */
struct optwalk {
	struct walk *w;
	__u8 buf[64];
	__u32 at;
	__u32 len;
};

/* One step of tcp_find_option's walk: kinds 0 and 1 take a byte, others
 * their length byte, 0 counting as 1. */
static long tcp_opt_step(__u64 i, struct optwalk *o)
{
	__u32 at = o->at;
	__u8 kind, len;

	if (at >= o->len || at >= 40)
		return 1;
	kind = o->buf[at & 63];
	o->w->p->opts[kind >> 6] |= 1ULL << (kind & 63);
	if (kind < 2) {
		o->at = at + 1;
		return 0;
	}
	/* The kernel reads the length byte even past the options; any
	 * value then ends the walk, so the zeroed buffer stands in. */
	len = o->buf[(at + 1) & 63];
	o->at = at + (len ? len : 1);
	return 0;
}

static __noinline void parse_tcp_options(struct walk *w)
{
	struct optwalk o = {.w = w};
	__u32 optlen;

	if (!w || w->p->doff < 5)
		return;
	optlen = (__u32)w->p->doff * 4 - 20;
	if (optlen > 40)
		return;
	o.len = optlen;
	/* Re-bound through a register the verifier tracks (optlen <= 40). */
	optlen &= 63;
	if (optlen > 40 || bpf_dynptr_read(o.buf, optlen, &w->ptr, w->p->thoff + 20, 0)) {
		w->p->opts_bad = 1;
		return;
	}
	bpf_loop(40, tcp_opt_step, &o, 0);
}

static __noinline void parse_l4(struct walk *w, int tcpopt)
{
	__u8 buf[20];
	__u8 *h;

	h = bpf_dynptr_slice(&w->ptr, w->p->thoff, buf, 20);
	if (h) {
		w->p->l4len = 20;
	} else {
		h = bpf_dynptr_slice(&w->ptr, w->p->thoff, buf, 8);
		if (h) {
			w->p->l4len = 8;
		} else {
			/* multiport reads only the two ports. */
			h = bpf_dynptr_slice(&w->ptr, w->p->thoff, buf, 4);
			if (!h)
				return;
			w->p->l4len = 4;
		}
	}
	w->p->sport = ((__u16)h[0] << 8) | h[1];
	w->p->dport = ((__u16)h[2] << 8) | h[3];
	w->p->icmp_type = h[0];
	w->p->icmp_code = h[1];
	if (w->p->l4len == 20) {
		w->p->doff = h[12] >> 4;
		w->p->tcpflags = h[13];
		if (tcpopt && w->p->proto == IPPROTO_TCP && w->p->fragoff == 0)
			parse_tcp_options(w);
	}
}

static __noinline int parse_v4(struct walk *w)
{
	__u8 buf[20];
	__u8 *ip = bpf_dynptr_slice(&w->ptr, 0, buf, 20);

	if (!ip)
		return -1;
	__builtin_memcpy(&w->p->src[0], ip + 12, 4);
	__builtin_memcpy(&w->p->dst[0], ip + 16, 4);
	w->p->proto = ip[9];
	w->p->tos = ip[1];
	w->p->ttl = ip[8];
	w->p->iplen = ((__u16)ip[2] << 8) | ip[3];
	w->p->fragoff = (((__u16)ip[6] << 8) | ip[7]) & 0x1fff;
	w->p->thoff = (ip[0] & 0x0f) * 4;
	return 0;
}

static __noinline int parse_v6(struct walk *w)
{
	__u8 buf[40];
	__u8 *ip = bpf_dynptr_slice(&w->ptr, 0, buf, 40);

	if (!ip)
		return -1;
	__builtin_memcpy(w->p->src, ip + 8, 16);
	__builtin_memcpy(w->p->dst, ip + 24, 16);
	w->p->v6 = 1;
	w->p->tos = (ip[0] << 4) | (ip[1] >> 4);
	w->p->ttl = ip[7];
	/* u16 arithmetic, as length_mt6 does it: a jumbo-sized length wraps. */
	w->p->iplen = (((__u16)ip[4] << 8) | ip[5]) + 40;
	w->nexthdr = ip[6];
	w->start = 40;
	w->p->proto = -1;
	/* Every extension header takes at least 8 bytes. */
	bpf_loop(w->p->len / 8 + 1, v6_hdr_step, w, 0);
	return 0;
}

static __always_inline int iface_differs(const __u64 *have, const __u64 *want, const __u64 *mask)
{
	return (((have[0] ^ want[0]) & mask[0]) | ((have[1] ^ want[1]) & mask[1])) != 0;
}

static __always_inline int addr_differs(const __u32 *have, const __u32 *want, const __u32 *mask)
{
	return ((have[0] & mask[0]) != want[0]) | ((have[1] & mask[1]) != want[1]) |
	       ((have[2] & mask[2]) != want[2]) | ((have[3] & mask[3]) != want[3]);
}

static __always_inline int inv(const struct xt_rule *r, __u8 bit)
{
	return (r->inv & bit) != 0;
}

/* ip_packet_match / ip6_packet_match: 1 match, 0 no match, -1 hotdrop. */
static __always_inline int ip_match(const struct xt_rule *r, const struct pkt *p)
{
	if (addr_differs(p->src, r->src, r->smsk) ^ inv(r, INV_SRC))
		return 0;
	if (addr_differs(p->dst, r->dst, r->dmsk) ^ inv(r, INV_DST))
		return 0;
	if (iface_differs(p->in, r->in, r->inmsk) ^ inv(r, INV_IN))
		return 0;
	if (iface_differs(p->out, r->out, r->outmsk) ^ inv(r, INV_OUT))
		return 0;
	if (!p->v6) {
		if ((r->flags & RULE_CHECK_PROTO) && ((p->proto != r->proto) ^ inv(r, INV_PROTO)))
			return 0;
		if (((r->flags & RULE_FRAG) && !p->fragoff) ^ inv(r, INV_FRAG))
			return 0;
		return 1;
	}
	if (!(r->flags & RULE_CHECK_PROTO))
		return 1;
	if (p->proto < 0)
		return -1;
	if (p->proto == r->proto)
		return !inv(r, INV_PROTO);
	return !(r->proto != 0 && !inv(r, INV_PROTO));
}

/* port_match; invert is an invflags bit, any nonzero value inverts. */
static __always_inline int ports(const __u16 *pts, __u16 port, int invert)
{
	return (port >= pts[0] && port <= pts[1]) ^ (invert != 0);
}

/* tcp_mt */
static __always_inline int tcp_match(const struct xt_match *m, const struct pkt *p)
{
	int found;

	if (p->fragoff) {
		/* An offset-1 fragment could rewrite the flags. */
		return p->fragoff == 1 ? -1 : 0;
	}
	if (p->l4len < 20)
		return -1;
	if (!ports(m->spts, p->sport, m->inv & 0x01) || !ports(m->dpts, p->dport, m->inv & 0x02))
		return 0;
	if (!(((p->tcpflags & m->flg_mask) == m->flg_cmp) ^ ((m->inv & 0x04) != 0)))
		return 0;
	if (!m->option)
		return 1;
	if (p->doff < 5 || p->opts_bad)
		return -1;
	found = (p->opts[m->option >> 6] >> (m->option & 63)) & 1;
	return found ^ ((m->inv & 0x08) != 0);
}

/* udp_mt */
static __always_inline int udp_match(const struct xt_match *m, const struct pkt *p)
{
	if (p->fragoff)
		return 0;
	if (p->l4len < 8)
		return -1;
	return ports(m->spts, p->sport, m->inv & 0x01) && ports(m->dpts, p->dport, m->inv & 0x02);
}

/* icmp_match / icmp6_match: only IPv4's icmp_type_code_match takes
 * type 0xff for any type; icmp6_type_code_match compares it as a type. */
static __always_inline int icmp_match(const struct xt_match *m, const struct pkt *p)
{
	int hit;

	if (p->fragoff)
		return 0;
	if (p->l4len < 8)
		return -1;
	hit = (m->type == 0xff && !p->v6) ||
	      (p->icmp_type == m->type && p->icmp_code >= m->code_min && p->icmp_code <= m->code_max);
	return hit ^ ((m->inv & 0x01) != 0);
}

/* ((have ^ want) & mask) == 0, conntrack_addrcmp */
static __always_inline int addr_eq_masked(const __u32 *have, const __u32 *want, const __u32 *mask)
{
	return (((have[0] ^ want[0]) & mask[0]) | ((have[1] ^ want[1]) & mask[1]) |
		((have[2] ^ want[2]) & mask[2]) | ((have[3] ^ want[3]) & mask[3])) == 0;
}

/* The index must be a constant: CO-RE relocates a constant index with
 * the running kernel's element size, while a variable one is scaled by
 * kernel.h's trimmed nf_conntrack_tuple_hash and lands short of the reply
 * tuple. */
static __always_inline const struct nf_conntrack_tuple *ct_tuple(const struct nf_conn *ct, int dir)
{
	return dir ? &ct->tuplehash[1].tuple : &ct->tuplehash[0].tuple;
}

/* The entry's address i: orig src, orig dst, repl src, repl dst. */
static __always_inline void ct_addr(const struct nf_conn *ct, int i, __u32 *a)
{
	const struct nf_conntrack_tuple *t = ct_tuple(ct, i >> 1);

	bpf_probe_read_kernel(a, 16, i & 1 ? &t->dst.u3 : &t->src.u3);
}

static __always_inline __u16 ct_port(const struct nf_conn *ct, int i)
{
	const struct nf_conntrack_tuple *t = ct_tuple(ct, i >> 1);
	__be16 port = 0;

	bpf_probe_read_kernel(&port, 2, i & 1 ? &t->dst.u.all : &t->src.u.all);
	return bpf_ntohs(port);
}

/* conntrack_mt of xt_conntrack.c */
static __always_inline int conntrack_match(const struct xt_ext *x, const struct ct *c)
{
	const struct nf_conn *ct = (const struct nf_conn *)c->conn;
	__u16 flags = x->match_flags, inv = x->invert_flags;
	__u32 statebit = c->statebit, timeout = 0, a[4];
	unsigned long status = 0;
	__u8 proto = 0;
	__s32 left;

	if (ct)
		bpf_probe_read_kernel(&status, sizeof(status), &ct->status);
	if (flags & 0x0001) {
		/* IPS_SRC_NAT, IPS_DST_NAT */
		if (status & (1 << 4))
			statebit |= 1 << 6;
		if (status & (1 << 5))
			statebit |= 1 << 7;
		if (!!(x->state_mask & statebit) ^ !(inv & 0x0001))
			return 0;
	}
	if (!ct)
		return (flags & 0x0001) != 0;
	if ((flags & 0x1000) && ((!c->reply) ^ !(inv & 0x1000)))
		return 0;
	for (int i = 0; i < 4; i++) {
		__u16 bit = 0x0004 << i;

		if (!(flags & bit))
			continue;
		ct_addr(ct, i, a);
		if (addr_eq_masked(a, x->addr[2 * i], x->addr[2 * i + 1]) ^ !(inv & bit))
			return 0;
	}
	if (flags & 0x0002) {
		bpf_probe_read_kernel(&proto, 1, &ct->tuplehash[0].tuple.dst.protonum);
		if ((proto == x->l4proto) ^ !(inv & 0x0002))
			return 0;
	}
	for (int i = 0; i < 4; i++) {
		__u16 bit = 0x0100 << i, port;

		if (!(flags & bit))
			continue;
		port = ct_port(ct, i);
		if (!((port >= x->lo[i] && port <= x->hi[i]) ^ !!(inv & bit)))
			return 0;
	}
	if ((flags & 0x0040) && (!!(x->status_mask & status) ^ !(inv & 0x0040)))
		return 0;
	if (flags & 0x0080) {
		/* nf_ct_expires: (s32)(timeout - (u32)jiffies), at least 0 */
		bpf_probe_read_kernel(&timeout, sizeof(timeout), &ct->timeout);
		left = (__s32)(timeout - (__u32)bpf_jiffies64());
		left = left > 0 ? (__u32)left / CONFIG_HZ : 0;
		if (((__u32)left >= x->expires[0] && (__u32)left <= x->expires[1]) ^ !(inv & 0x0080))
			return 0;
	}
	return 1;
}

static __always_inline int in_range(__u16 port, __u16 lo, __u16 hi)
{
	return (__u16)(port - lo) <= (__u16)(hi - lo);
}

/* multiport_mt: ports_match_v1 over ranges the loader has resolved. */
static __always_inline int multiport_match(const struct xt_ext *x, const struct pkt *p)
{
	int want_src = x->flags != 1, want_dst = x->flags != 0, inv = x->invert != 0;

	if (p->fragoff)
		return 0;
	if (p->l4len < 4)
		return -1;
	for (int i = 0; i < 15; i++) {
		if (i >= x->count)
			break;
		if ((want_src & in_range(p->sport, x->lo[i], x->hi[i])) |
		    (want_dst & in_range(p->dport, x->lo[i], x->hi[i])))
			return !inv;
	}
	return inv;
}

/* iprange_ipv6_lt's order between a packet address and a bound in
 * host-order words: -1, 0 or 1. IPv4 uses the first word only, the others
 * being zero on both sides. */
static __always_inline int addr_cmp(const __u32 *pkt, const __u32 *bound)
{
	for (int i = 0; i < 4; i++) {
		__u32 x = bpf_ntohl(pkt[i]);

		if (x != bound[i])
			return x < bound[i] ? -1 : 1;
	}
	return 0;
}

/* iprange_mt4 / iprange_mt6 */
static __always_inline int iprange_match(const struct xt_ext *x, const struct pkt *p)
{
	if (x->flags & 0x01) {
		if ((addr_cmp(p->src, x->addr[0]) < 0 || addr_cmp(p->src, x->addr[1]) > 0) ^ !!(x->flags & 0x10))
			return 0;
	}
	if (x->flags & 0x02) {
		if ((addr_cmp(p->dst, x->addr[2]) < 0 || addr_cmp(p->dst, x->addr[3]) > 0) ^ !!(x->flags & 0x20))
			return 0;
	}
	return 1;
}

/* pkttype_mt: a looped-back packet counts as multicast (IPv4 to a class D
 * address, every IPv6 one) or else broadcast. */
static __always_inline int pkttype_match(const struct xt_match *m, const struct pkt *p)
{
	__u32 type = p->pkttype;

	if (type == PACKET_LOOPBACK) {
		if (p->v6 || (bpf_ntohl(p->dst[0]) >> 28) == 0xe)
			type = PACKET_MULTICAST;
		else
			type = PACKET_BROADCAST;
	}
	return ((type == m->arg[0]) ^ m->arg[1]) != 0;
}

static __always_inline int ttl_match(const struct xt_match *m, const struct pkt *p)
{
	__u8 v = m->arg[1];

	switch (m->arg[0]) {
	case 0:
		return p->ttl == v;
	case 1:
		return p->ttl != v;
	case 2:
		return p->ttl < v;
	case 3:
		return p->ttl > v;
	}
	return 0;
}

/* ecn_mt4 / ecn_mt6: the TCP bits are read without regard to fragments,
 * and a header too short for them just fails the match. */
static __always_inline int ecn_match(const struct xt_match *m, const struct pkt *p)
{
	__u8 op = m->arg[0], inv = m->inv;

	if ((op & 0x01) && !(((p->tos & 0x03) == (__u8)m->arg[1]) ^ !!(inv & 0x01)))
		return 0;
	if (op & 0x30) {
		if (p->proto < 0 || p->l4len < 20)
			return 0;
		if ((op & 0x10) && (!!(p->tcpflags & 0x40) == !!(inv & 0x10)))
			return 0;
		if ((op & 0x20) && (!!(p->tcpflags & 0x80) == !!(inv & 0x20)))
			return 0;
	}
	return 1;
}

#include "hostmatch.h"
#include "hdrmatch.h"
#include "recent.h"

/* The matches beyond tcp, udp and icmp, as a global function: the
 * verifier checks it once on its own rather than at every match slot of
 * every path, and rules of the older kinds do not pay for the call. x is
 * the match's xt_ext record for the kinds that have one. */
__noinline int more_match(const struct xt_match *m, const struct pkt *p, const struct xt_ext *x)
{
	if (!m || !p)
		return -1;
	switch (m->kind) {
	case MATCH_STATE:
		return (m->arg[0] & p->ct.statebit) != 0;
	case MATCH_MARK:
		return ((p->mark & m->arg[1]) == m->arg[0]) ^ (m->inv != 0);
	case MATCH_PKTTYPE:
		return pkttype_match(m, p);
	case MATCH_LENGTH:
		return (p->iplen >= m->spts[0] && p->iplen <= m->spts[1]) ^ (m->inv != 0);
	case MATCH_TTL:
		return ttl_match(m, p);
	case MATCH_TOS:
		return ((p->tos & m->arg[0]) == m->arg[1]) ^ (m->inv != 0);
	case MATCH_ECN:
		return ecn_match(m, p);
	}
	if (!x)
		return -1;
	switch (m->kind) {
	case MATCH_CONNTRACK:
		return conntrack_match(x, &p->ct);
	case MATCH_MULTIPORT:
		return multiport_match(x, p);
	case MATCH_IPRANGE:
		return iprange_match(x, p);
	}
	return -1;
}

/* Every match beyond tcp, udp and icmp, behind one call: a single call
 * site per match slot keeps the verifier's walk of the rule loop small. */
__noinline int any_match(const struct xt_match *m, const struct pkt *p, const struct xt_ext *x,
			 struct bpf_nf_ctx *ctx)
{
	if (!m)
		return -1;
	switch (m->kind) {
	case MATCH_ADDRTYPE:
	case MATCH_OWNER:
	case MATCH_MAC:
		return host_match(m, p, x);
	case MATCH_RT:
	case MATCH_FRAG:
	case MATCH_OPTS:
	case MATCH_IPV6HEADER:
	case MATCH_AH6:
	case MATCH_SPI:
	case MATCH_TCPMSS:
	case MATCH_SCTP:
		return hdr_match(m, p, x, ctx);
	}
	return more_match(m, p, x);
}

static __always_inline int has_ext(__u8 kind)
{
	return kind == MATCH_CONNTRACK || kind == MATCH_MULTIPORT || kind == MATCH_IPRANGE ||
	       kind == MATCH_OWNER || kind == MATCH_RT || kind == MATCH_OPTS || kind == MATCH_AH6 ||
	       kind == MATCH_SCTP;
}

static __always_inline int ext_match(const struct xt_match *m, const struct pkt *p, void *exts,
				     struct bpf_nf_ctx *ctx)
{
	const struct xt_ext *x = NULL;
	__u32 key;

	switch (m->kind) {
	case MATCH_TCP:
		return tcp_match(m, p);
	case MATCH_UDP:
		return udp_match(m, p);
	case MATCH_ICMP:
		return icmp_match(m, p);
	case MATCH_LIMIT:
	case MATCH_HASHLIMIT:
		return rate_match(m, p);
	case MATCH_RECENT:
		return recent_match(m, p);
	}
	if (has_ext(m->kind)) {
		key = m->ext;
		x = bpf_map_lookup_elem(exts, &key);
	}
	return any_match(m, p, x, ctx);
}

static __always_inline int rule_match(const struct xt_rule *r, const struct walk *w)
{
	const struct xt_match *m;
	int ok = ip_match(r, w->p);
	__u32 key;

	if (ok <= 0)
		return ok;
	for (int i = 0; i < MAX_MATCHES; i++) {
		if (i >= r->nmatch)
			break;
		key = r->mfirst + i;
		m = bpf_map_lookup_elem(w->matches, &key);
		if (!m)
			return -1;
		ok = ext_match(m, w->p, w->exts, w->ctx);
		if (ok <= 0)
			return ok;
	}
	return 1;
}

static __always_inline void count(struct walk *w, __u32 idx)
{
	__u32 key = w->cpu * w->nrules + idx;
	struct xt_counter *c = bpf_map_lookup_elem(w->counters, &key);

	if (!c)
		return;
	/* Atomic: a run nested on this CPU may bump the same counter. */
	__sync_fetch_and_add(&c->packets, 1);
	__sync_fetch_and_add(&c->bytes, w->p->len);
}

/* The first free jump stack slot of this CPU, or -1. A global function,
 * so the verifier walks its loop once rather than at every step. */
__noinline int claim_slot(__u32 *busy)
{
	__u32 old;

	if (!busy)
		return -1;
	for (int s = 0; s < STACK_SLOTS; s++) {
		old = *busy;
		if (old & (1U << s))
			continue;
		if (__sync_val_compare_and_swap(busy, old, old | (1U << s)) == old)
			return s;
	}
	return -1;
}

static __always_inline void release_slot(struct walk *w)
{
	__sync_fetch_and_and(w->busy, ~(1U << w->slot));
}

static __always_inline __u32 *frame(struct walk *w, __u32 sp)
{
	__u32 key = (w->cpu * STACK_SLOTS + (__u32)w->slot) * w->depth + sp;

	return bpf_map_lookup_elem(w->stack, &key);
}

static __always_inline int push(struct walk *w, __u32 ret)
{
	__u32 *f;

	if (w->sp >= w->depth)
		return -1;
	f = frame(w, w->sp);
	if (!f)
		return -1;
	*f = ret;
	w->sp++;
	return 0;
}

static __always_inline __u32 pop(struct walk *w)
{
	__u32 *f;

	if (w->sp == 0)
		return w->under;
	w->sp--;
	f = frame(w, w->sp);
	return f ? *f : w->under;
}

static __always_inline long finish(struct walk *w, __u32 verdict)
{
	w->verdict = verdict;
	w->done = 1;
	return 1;
}

/* Whether the packet may skip the entries a segment's lookup leaves out.
 * Addresses and the protocol are tested before any match, so a rule that
 * fails them never reaches one (an IPv6 packet whose upper layer is
 * unknown would hot-drop on the protocol test). Port keys come from
 * matches that may follow others; the translator keys only rules whose
 * earlier matches cannot hot-drop a packet that passes this test. */
static __always_inline int usable(const struct pkt *p, __u32 field)
{
	if (field == F_SRC || field == F_DST)
		return 1;
	if (p->proto < 0)
		return 0;
	if (field == F_PROTO)
		return 1;
	return !p->fragoff && p->l4len >= 8 &&
	       (p->proto != IPPROTO_TCP || (p->l4len == 20 && p->doff >= 5 && !p->opts_bad));
}

/* One key buffer for both kinds of lookup: global functions' stacks add
 * up with the walk's along the call chain, which the verifier caps. */
union index_key {
	struct xt_prefix_key prefix;
	struct xt_value_key value;
};

/* The list of part f of segment seg for the packet; NULL for none. */
static __always_inline const struct xt_span *lookup_part(__u32 g, __u32 seg, __u32 f, const struct pkt *p)
{
	union index_key k = {};
	void *m;

	switch (f) {
	case F_SRC:
	case F_DST:
		m = bpf_map_lookup_elem(&prefixes, &g);
		if (!m)
			return NULL;
		k.prefix.prefixlen = 32 + (p->v6 ? 128 : 32);
		k.prefix.part = PART_KEY(seg, f);
		__builtin_memcpy(k.prefix.addr, f == F_SRC ? p->src : p->dst, 16);
		break;
	case F_PROTO:
	case F_DPORT:
	case F_SPORT:
		m = bpf_map_lookup_elem(&values, &g);
		if (!m)
			return NULL;
		k.value.part = PART_KEY(seg, f);
		k.value.value = f == F_PROTO ? (__u32)p->proto : f == F_DPORT ? p->dport : p->sport;
		break;
	default:
		return NULL;
	}
	return bpf_map_lookup_elem(m, &k);
}

/* The first position in [lo, hi) of the candidates holding an entry at
 * or after pc: a binary search, the lists being in entry order. */
static __always_inline __u32 seek(void *cands, __u32 pc, __u32 lo, __u32 hi)
{
	__u32 mid, *e;

	for (int i = 0; i < 32 && lo < hi; i++) {
		mid = lo + (hi - lo) / 2;
		e = bpf_map_lookup_elem(cands, &mid);
		if (!e)
			return hi;
		if (*e < pc)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

static __always_inline void leave(struct cursor *c)
{
	c->seg = 0;
	c->linear = 0;
}

/* Moves the walk to pc outside any candidate list: after a jump, a
 * RETURN, or past the last entry of a segment. The cursor moves are
 * global functions: the verifier checks each once, apart from the rule
 * walk's paths, and the walk's states converge. */
__noinline int cursor_goto(struct cursor *c, __u32 pc)
{
	if (!c)
		return -1;
	leave(c);
	c->pc = pc;
	return 0;
}

/* Reads the entry at part f's position into its head. An entry out of
 * the list's order (which the loader never writes) makes the walk go on
 * entry by entry, which is always right. */
static __always_inline void load_head(struct cursor *c, void *cands, __u32 f, __u32 after)
{
	__u32 *e;

	f &= 7;
	c->head[f] = NO_CAND;
	if (c->pos[f] >= c->end[f])
		return;
	e = bpf_map_lookup_elem(cands, &c->pos[f]);
	if (!e || *e < after || *e >= c->segend) {
		c->linear = 1;
		return;
	}
	c->head[f] = *e;
}

/* Moves c->pc to the lowest head of the parts: the next candidate. */
static __always_inline void pick(struct cursor *c)
{
	__u32 best = NO_CAND;

	if (c->linear)
		return;
	for (__u32 f = 0; f < NUM_FIELDS; f++) {
		if (c->head[f] < best) {
			best = c->head[f];
			c->from = f;
		}
	}
	if (best == NO_CAND) {
		leave(c);
		c->pc = c->segend;
		return;
	}
	c->pc = best;
}

/* The walk reaches entry c->pc of segment seg other than by following
 * its lists (from the hook, a jump, a RETURN, or the entry before): look
 * the packet up in each part and move to the first candidate from there
 * on. */
__noinline int cursor_enter(struct cursor *c, const struct pkt *p, __u32 seg)
{
	const struct xt_span *sp;
	const struct xt_seg *s;
	void *m, *cands_m;

	if (!c || !p)
		return -1;
	c->seg = seg;
	c->linear = 1;
	m = bpf_map_lookup_elem(&segs, &c->gen);
	cands_m = bpf_map_lookup_elem(&cands, &c->gen);
	if (!m || !cands_m)
		return 0;
	s = bpf_map_lookup_elem(m, &seg);
	if (!s)
		return 0;
	for (__u32 f = 1; f < NUM_FIELDS; f++)
		if ((s->fields & (1U << f)) && !usable(p, f))
			return 0;
	c->linear = 0;
	c->segend = s->end;
	for (__u32 f = 0; f < NUM_FIELDS; f++) {
		sp = f ? ((s->fields & (1U << f)) ? lookup_part(c->gen, seg, f, p) : NULL) : &s->dflt;
		c->pos[f] = sp ? sp->off : 0;
		c->end[f] = sp ? sp->off + sp->n : 0;
		if (c->pc != s->first)
			c->pos[f] = seek(cands_m, c->pc, c->pos[f], c->end[f]);
		load_head(c, cands_m, f, c->pc);
	}
	pick(c);
	return 0;
}

/* Moves c->pc past entry idx to the next entry the walk must look at. */
__noinline int cursor_next(struct cursor *c, __u32 idx)
{
	void *cands_m;
	__u32 f;

	if (!c)
		return -1;
	c->pc = idx + 1;
	if (!c->seg || c->linear)
		return 0;
	cands_m = bpf_map_lookup_elem(&cands, &c->gen);
	if (!cands_m) {
		c->linear = 1;
		return 0;
	}
	f = c->from & 7;
	c->pos[f]++;
	load_head(c, cands_m, f, idx + 1);
	if (c->linear)
		c->pc = idx + 1;
	else
		pick(c);
	return 0;
}

#include "report.h"

/* One entry of ipt_do_table's loop. */
static long step(__u64 i, struct walk *w)
{
	__u32 idx = w->cur->pc;
	const struct xt_rule *r = bpf_map_lookup_elem(w->rules, &idx);
	int ok;

	if (!r)
		return finish(w, NF_DROP);
	if (r->seg != w->cur->seg) {
		if (r->seg) {
			cursor_enter(w->cur, w->p, r->seg);
			return 0;
		}
		cursor_goto(w->cur, idx);
	}
	ok = rule_match(r, w);
	/* A match that said yes and hot-dropped (pkt.hot) ends the walk once
	 * the entry is done: ipt_do_table tests hotdrop only at the end of
	 * its loop, after the entry's other matches and its target. */
	if (ok < 0 || (!ok && w->p->hot))
		return finish(w, NF_DROP);
	if (!ok) {
		cursor_next(w->cur, idx);
		return 0;
	}
	count(w, idx);
	/* REJECT and LOG report before the switch: calling report_rule from
	 * two cases of it makes the verifier's walk of this callback explode
	 * past its million-instruction limit. REJECT then drops (default). */
	if (r->verdict == V_REJECT || r->verdict == V_LOG)
		report_rule(w, r, idx);
	switch (w->p->hot ? V_DROP : r->verdict) {
	case V_ACCEPT:
		return finish(w, NF_ACCEPT);
	case V_RETURN:
		cursor_goto(w->cur, pop(w));
		return 0;
	case V_JUMP:
		if (push(w, idx + 1))
			return finish(w, NF_DROP);
		cursor_goto(w->cur, r->target);
		return 0;
	case V_GOTO:
		/* A rule without a target goes on with the next entry. */
		if (r->target == idx + 1) {
			cursor_next(w->cur, idx);
			return 0;
		}
		cursor_goto(w->cur, r->target);
		return 0;
	case V_LOG:
		/* XT_CONTINUE: r->target is idx + 1. */
		cursor_next(w->cur, idx);
		return 0;
	}
	return finish(w, NF_DROP);
}

static __always_inline void read_name(__u64 *dst, const struct net_device *dev)
{
	const __u64 *n;

	if (!dev)
		return;
	n = (const __u64 *)dev->name;
	dst[0] = n[0];
	dst[1] = n[1];
}

/* nf_ct_get: the entry is _nfct without its low bits, which are the
 * ctinfo; no entry with ctinfo IP_CT_UNTRACKED is an untracked packet. */
static __always_inline void read_ct(struct ct *c, const struct sk_buff *skb)
{
	unsigned long nfct = skb->_nfct;
	__u32 ctinfo = nfct & NFCT_INFOMASK;

	c->conn = nfct & ~NFCT_INFOMASK;
	if (!c->conn) {
		c->statebit = ctinfo == IP_CT_UNTRACKED ? 1 << 8 : 1 << 0;
		return;
	}
	c->reply = ctinfo >= IP_CT_IS_REPLY;
	c->statebit = 1 << (ctinfo % IP_CT_IS_REPLY + 1);
}

static __always_inline int setup(struct walk *w, struct bpf_nf_ctx *ctx, __u32 g)
{
	w->rules = bpf_map_lookup_elem(&rules, &g);
	w->matches = bpf_map_lookup_elem(&matches, &g);
	w->exts = bpf_map_lookup_elem(&exts, &g);
	w->targs = bpf_map_lookup_elem(&targs, &g);
	w->counters = bpf_map_lookup_elem(&counters, &g);
	w->stack = bpf_map_lookup_elem(&stacks, &g);
	if (!w->rules || !w->matches || !w->exts || !w->targs || !w->counters || !w->stack)
		return -1;
	w->ctx = ctx;
	w->cur->gen = g;
	leave(w->cur);
	__builtin_memset(w->p, 0, sizeof(*w->p));
	w->verdict = NF_DROP;
	w->p->gen = g;
	w->p->len = ctx->skb->len;
	w->p->skb = (__u64)ctx->skb;
	w->p->state = (__u64)ctx->state;
	read_name(w->p->in, ctx->state->in);
	read_name(w->p->out, ctx->state->out);
	return bpf_dynptr_from_skb((struct __sk_buff *)ctx->skb, 0, &w->ptr);
}

/* A built-in chain with no rules: ipt_do_table matches its policy entry
 * at once (no address, protocol or match to test, nothing to hot-drop),
 * so neither parsing nor the walk's scratch and stack are needed. */
static __always_inline int policy_only(struct bpf_nf_ctx *ctx, const struct xt_meta *m, __u32 g, __u32 idx)
{
	void *rulemap = bpf_map_lookup_elem(&rules, &g);
	void *countmap = bpf_map_lookup_elem(&counters, &g);
	const struct xt_rule *r;
	struct xt_counter *c;
	__u32 key;

	if (!rulemap || !countmap)
		return NF_DROP;
	r = bpf_map_lookup_elem(rulemap, &idx);
	if (!r)
		return NF_DROP;
	key = bpf_get_smp_processor_id() * m->nrules + idx;
	c = bpf_map_lookup_elem(countmap, &key);
	if (c) {
		__sync_fetch_and_add(&c->packets, 1);
		__sync_fetch_and_add(&c->bytes, ctx->skb->len);
	}
	return r->verdict == V_ACCEPT ? NF_ACCEPT : NF_DROP;
}

SEC("netfilter")
int xtbpf_filter(struct bpf_nf_ctx *ctx)
{
	const struct nf_hook_state *state = ctx->state;
	__u32 hook = state->hook, zero = 0, g;
	struct xt_meta *m;
	struct walk w = {};
	struct scratch *sc;
	__u32 *gen = bpf_map_lookup_elem(&active, &zero);

	if (!gen)
		return NF_DROP;
	g = *gen & 1;
	m = bpf_map_lookup_elem(&meta, &g);
	if (!m || !(m->flags & META_INSTALLED) || (m->flags & META_PASSTHROUGH))
		return NF_ACCEPT;
	if (hook >= NUM_HOOKS || !(m->hooks & (1U << hook)))
		return NF_ACCEPT;
	if (m->entry[hook] == m->underflow[hook])
		return policy_only(ctx, m, g, m->entry[hook]);
	w.busy = bpf_map_lookup_elem(&busy, &zero);
	if (!w.busy)
		return NF_DROP;
	w.slot = claim_slot(w.busy);
	if (w.slot < 0)
		return NF_DROP;
	sc = bpf_map_lookup_elem(&scratch, &w.slot);
	if (!sc) {
		release_slot(&w);
		return NF_DROP;
	}
	w.p = &sc->p;
	w.cur = &sc->c;
	if (setup(&w, ctx, g)) {
		release_slot(&w);
		return NF_DROP;
	}
	w.depth = m->depth;
	w.nrules = m->nrules;
	w.cpu = bpf_get_smp_processor_id();
	if (state->pf == NFPROTO_IPV4 ? parse_v4(&w) : parse_v6(&w))
		return NF_DROP;
	if (m->flags & META_CONNTRACK)
		read_ct(&w.p->ct, ctx->skb);
	if (m->flags & META_SKBMETA) {
		w.p->mark = ctx->skb->mark;
		w.p->pkttype = BPF_CORE_READ_BITFIELD_PROBED(ctx->skb, pkt_type);
	}
	if (m->flags & META_HLPORTS)
		parse_hlports(&w);
	if (w.p->proto >= 0)
		parse_l4(&w, m->flags & META_TCPOPT);
	w.cur->pc = m->entry[hook];
	w.under = m->underflow[hook];
	bpf_loop(MAX_STEPS, step, &w, 0);
	release_slot(&w);
	return w.done && w.verdict == NF_ACCEPT ? NF_ACCEPT : NF_DROP;
}
