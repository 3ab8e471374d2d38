/* Records shared by the classifier and its Go loader (bpf2go generates
 * the Go twins of the structs named with -type). */
#pragma once

#define MAX_MATCHES 8	/* translate.MaxMatches */
#define STACK_SLOTS 16	/* jump stacks per CPU: one per nested run */

enum match_kind {
	MATCH_TCP = 1,
	MATCH_UDP = 2,
	MATCH_ICMP = 3,	/* icmp and icmp6 */
};

enum verdict_kind {
	V_ACCEPT = 1,
	V_DROP = 2,
	V_RETURN = 3,
	V_JUMP = 4,
	V_GOTO = 5,
	V_ERROR = 6,
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
	__u16 spts[2];	/* tcp, udp */
	__u16 dpts[2];
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
	__u32 target;
	__u32 pad2;
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
