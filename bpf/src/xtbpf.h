/* Records shared by the classifier and its Go loader (bpf2go generates
 * the Go twins of the structs named with -type). */
#pragma once

#define MAX_MATCHES 8	/* translate.MaxMatches */
#define STACK_SLOTS 16	/* jump stacks per CPU: one per nested run */

enum match_kind {
	MATCH_TCP = 1,
	MATCH_UDP = 2,
	MATCH_ICMP = 3,	/* icmp and icmp6 */
	MATCH_STATE = 4,
	MATCH_CONNTRACK = 5,
	MATCH_MULTIPORT = 6,
	MATCH_IPRANGE = 7,
	MATCH_MARK = 8,
	MATCH_PKTTYPE = 9,
	MATCH_LENGTH = 10,
	MATCH_TTL = 11,	/* ttl and hl */
	MATCH_TOS = 12,	/* tos and dscp */
	MATCH_ECN = 13,
};

enum verdict_kind {
	V_ACCEPT = 1,
	V_DROP = 2,
	V_RETURN = 3,
	V_JUMP = 4,
	V_GOTO = 5,
	V_ERROR = 6,
	V_REJECT = 7,	/* report, then drop */
	V_LOG = 8,	/* report, then the next entry */
};

/* xt_rule.flags */
#define RULE_CHECK_PROTO 0x01
#define RULE_FRAG 0x02

/* xt_rule.inv: the kernel's IPT_INV_* bits */
#define INV_IN 0x01
#define INV_OUT 0x02
#define INV_SRC 0x08
#define INV_DST 0x10
#define INV_FRAG 0x20
#define INV_PROTO 0x40

/* xt_meta.flags */
#define META_INSTALLED 0x01
#define META_PASSTHROUGH 0x02
#define META_TCPOPT 0x04
#define META_CONNTRACK 0x08
#define META_SKBMETA 0x10

/* One match extension; which fields count depends on kind. */
struct xt_match {
	__u8 kind;
	__u8 inv;	/* the extension's own invflags */
	__u8 option;	/* tcp --tcp-option */
	__u8 flg_mask;	/* tcp --tcp-flags */
	__u8 flg_cmp;
	__u8 type;	/* icmp */
	__u8 code_min;
	__u8 code_max;
	__u16 spts[2];	/* tcp, udp; length: min, max */
	__u16 dpts[2];
	/* state: xt_conntrack state bits; mark: mark, mask; pkttype: type;
	 * ttl: mode, value; tos: mask, value; ecn: operation, ip_ect, tcp ect */
	__u32 arg[2];
	__u32 ext;	/* conntrack, multiport, iprange: index of the xt_ext record */
	__u32 pad;
};

/* The payload of a match too large for xt_match, in its own map. */
struct xt_ext {
	/* conntrack: orig src, its mask, orig dst, mask, repl src, mask, repl
	 * dst, mask (packet byte order); iprange: src min, max, dst min, max
	 * (host-order words, compared word by word as iprange_ipv6_lt does) */
	__u32 addr[8][4];
	__u32 expires[2];
	/* multiport: its port ranges, as ports_match_v1 walks them, empty
	 * ones left out; conntrack: orig src, orig dst, repl src, repl dst */
	__u16 lo[16];
	__u16 hi[16];
	__u16 match_flags;
	__u16 invert_flags;
	__u16 state_mask;
	__u16 status_mask;
	__u16 l4proto;
	__u8 count;	/* multiport ranges */
	__u8 flags;	/* multiport flags, iprange flags */
	__u8 invert;
	__u8 pad[5];
};

/* One table entry. Addresses and interface names keep the packet's byte
 * order: the loader copies the ABI's bytes unchanged. */
struct xt_rule {
	__u32 src[4];
	__u32 smsk[4];
	__u32 dst[4];
	__u32 dmsk[4];
	__u64 in[2];
	__u64 inmsk[2];
	__u64 out[2];
	__u64 outmsk[2];
	__u16 proto;
	__u8 flags;
	__u8 inv;
	__u8 verdict;
	__u8 nmatch;
	__u8 pad[2];
	__u32 target;	/* JUMP, GOTO: entry index; LOG: the next entry's */
	__u32 targ;	/* REJECT, LOG: index of the rule's xt_targ */
	struct xt_match m[MAX_MATCHES];
};

/* Per-generation header: where each hook enters the rule array. */
struct xt_meta {
	__u32 entry[5];
	__u32 underflow[5];
	__u32 hooks;	/* bitmask of hooks the table filters */
	__u32 flags;
	__u32 nrules;
	__u32 depth;	/* jump stack frames per slot */
};

struct xt_counter {
	__u64 packets;
	__u64 bytes;
};

/* The arguments of a REJECT or LOG rule, at xt_rule.targ of the
 * generation's target-argument array. */
struct xt_targ {
	__u32 arg;	/* REJECT: reject_with; LOG: level */
	__u8 logflags;	/* LOG: xt_log_info.logflags */
	__u8 pad[3];
	char prefix[32];	/* LOG: xt_log_info.prefix, NUL-padded */
};

#define REPORT_MAC 32	/* link-layer header bytes a report keeps */
#define REPORT_CHUNK 64	/* packet bytes are copied, and padded, in chunks */

/* What a REJECT or LOG rule hands to user space: what the kernel's
 * target would know of the packet, then the packet's first caplen bytes
 * from its network header on, padded to REPORT_CHUNK. */
struct xt_report {
	__u32 rule;	/* entry index */
	__u32 len;	/* skb->len */
	__u32 mark;	/* skb->mark */
	__u32 iif;	/* ifindex of the hook's input device, 0 for none */
	__u32 oif;	/* ifindex of the hook's output device, 0 for none */
	__u32 devif;	/* skb->dev's ifindex, 0 for none */
	__u32 devflags;	/* skb->dev->flags */
	__u32 rtflags;	/* IPv4: rt_flags of the route the skb carries */
	__u32 uid;	/* the socket's fsuid and fsgid, when has_uid */
	__u32 gid;
	__u32 arg;	/* xt_targ.arg */
	__u16 caplen;	/* packet bytes that follow the record */
	__u16 maclen;	/* bytes of mac that hold the link-layer header */
	__u16 machdr;	/* network_header - mac_header, 0xffff when unset */
	__u16 devtype;	/* skb->dev->type */
	__u16 vlan_proto;	/* skb->vlan_proto, network order */
	__u16 vlan_tci;	/* skb->vlan_tci; a tag is present when either is set */
	__u16 csum;	/* ones' complement sum of the bytes past caplen, folded */
	__u8 verdict;	/* V_REJECT or V_LOG */
	__u8 hook;
	__u8 pkttype;	/* skb->pkt_type */
	__u8 ip_summed;	/* skb->ip_summed */
	__u8 csum_valid;	/* skb->csum_valid */
	__u8 rt_input;	/* IPv4: the route is an input route */
	__u8 has_uid;
	__u8 logflags;
	__u8 pad[2];
	char in[16];	/* the hook's device names */
	char out[16];
	char prefix[32];
	__u8 mac[REPORT_MAC];
};
