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
	MATCH_ADDRTYPE = 14,
	MATCH_OWNER = 15,
	MATCH_MAC = 16,
	MATCH_RT = 17,
	MATCH_FRAG = 18,
	MATCH_OPTS = 19,	/* hbh and dst */
	/* 20 and 21 are limit and hashlimit's */
	MATCH_IPV6HEADER = 22,
	MATCH_AH6 = 23,
	MATCH_SPI = 24,	/* ah (IPv4) and esp */
	MATCH_TCPMSS = 25,
};

/* addrtype: xt_match.option names the device limiting the lookup */
#define ADDRTYPE_LIMIT_IN 1
#define ADDRTYPE_LIMIT_OUT 2
/* addrtype type bits, 1 << RTN_* */
#define ADDRTYPE_UNSPEC 0x0001
#define ADDRTYPE_UNICAST 0x0002
#define ADDRTYPE_MULTICAST 0x0020

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
#define META_CONNTRACK 0x08
#define META_SKBMETA 0x10

/* One match extension; which fields count depends on kind. */
struct xt_match {
	__u8 kind;
	__u8 inv;	/* the extension's own invflags */
	__u8 option;	/* tcp --tcp-option; addrtype: the limiting device; frag:
			 * flags; ipv6header: modeflag; ah/esp: header size */
	__u8 flg_mask;	/* tcp --tcp-flags */
	__u8 flg_cmp;
	__u8 type;	/* icmp; hbh/dst: the header; ah/esp: the SPI's offset */
	__u8 code_min;
	__u8 code_max;
	__u16 spts[2];	/* tcp, udp; length, tcpmss: min, max */
	__u16 dpts[2];
	/* state: xt_conntrack state bits; mark: mark, mask; pkttype: type;
	 * ttl: mode, value; tos: mask, value; ecn: operation, ip_ect, tcp ect;
	 * addrtype: source types, destination types (inv: bit 0 inverts the
	 * source, bit 1 the destination); mac: the address's 6 bytes; frag,
	 * ah, esp: id or SPI range; ipv6header: matchflags, invflags */
	__u32 arg[2];
	__u32 ext;	/* conntrack, multiport, iprange, owner, rt, hbh/dst, ah6:
			 * index of the xt_ext record */
	__u32 pad;
};

/* The payload of a match too large for xt_match, in its own map. */
struct xt_ext {
	/* conntrack: orig src, its mask, orig dst, mask, repl src, mask, repl
	 * dst, mask (packet byte order); iprange: src min, max, dst min, max
	 * (host-order words, compared word by word as iprange_ipv6_lt does);
	 * owner: addr[0] is uid min, max, gid min, max, flags the match bits,
	 * invert the invert bits; rt: the addresses (packet byte order) */
	__u32 addr[16][4];
	/* rt: type, length; hbh/dst: length; ah6: SPI min, max, length */
	__u32 val[4];
	__u32 expires[2];	/* conntrack; rt: segments left min, max */
	/* multiport: its port ranges, as ports_match_v1 walks them, empty
	 * ones left out; conntrack: orig src, orig dst, repl src, repl dst;
	 * hbh/dst: lo the options, type << 8 | length */
	__u16 lo[16];
	__u16 hi[16];
	__u16 match_flags;
	__u16 invert_flags;
	__u16 state_mask;
	__u16 status_mask;
	__u16 l4proto;
	__u8 count;	/* multiport ranges; rt addresses; hbh/dst options */
	__u8 flags;	/* multiport, iprange, owner, rt, hbh/dst flags; ah6 hdrres */
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
