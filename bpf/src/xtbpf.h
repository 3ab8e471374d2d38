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
	MATCH_LIMIT = 20,
	MATCH_HASHLIMIT = 21,
	MATCH_IPV6HEADER = 22,
	MATCH_AH6 = 23,
	MATCH_SPI = 24,	/* ah (IPv4) and esp */
	MATCH_TCPMSS = 25,
	MATCH_SCTP = 26,
	MATCH_RECENT = 27,
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
#define META_HLPORTS 0x80	/* a hashlimit table hashes ports: read them */

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
	__u32 ext;	/* conntrack, multiport, iprange, owner, rt, hbh/dst, ah6,
			 * sctp: index of the xt_ext record */
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
	__u32 target;	/* JUMP, GOTO: entry index; LOG: the next entry's */
	__u32 targ;	/* REJECT, LOG: index of the rule's xt_targ */
	__u32 seg;	/* index segment, 0 for a rule walked in turn */
	__u32 mfirst;	/* its matches: matches[mfirst .. mfirst + nmatch) */
};

/* translate.Field: the packet field an index part looks up; 0 is the
 * default list. */
enum index_field {
	F_SRC = 1,
	F_DST = 2,
	F_PROTO = 3,
	F_DPORT = 4,
	F_SPORT = 5,
	NUM_FIELDS = 6,
};

/* A candidate list, cands[off .. off + n), in entry order. */
struct xt_span {
	__u32 off;
	__u32 n;
};

/* Entries [first, end) of a chain, indexed. */
struct xt_seg {
	__u32 first;
	__u32 end;
	__u32 fields;	/* bit f: the index has a part for field f */
	struct xt_span dflt;	/* the rules filed under no field */
};

/* The word naming a segment's part for a field in the lookup keys. */
#define PART_KEY(seg, field) ((seg) << 3 | (field))

/* Address prefixes: prefixlen counts the part word too. */
struct xt_prefix_key {
	__u32 prefixlen;
	__u32 part;
	__u32 addr[4];
};

struct xt_value_key {
	__u32 part;
	__u32 value;
};

/* Per-generation header: where each hook enters the rule array. */
struct xt_meta {
	__u32 entry[5];
	__u32 underflow[5];
	__u32 hooks;	/* bitmask of hooks the table filters */
	__u32 flags;
	__u32 nrules;
	__u32 depth;	/* jump stack frames per slot */
	__u32 nsegs;	/* index segments, 0 when every chain is walked */
};

struct xt_counter {
	__u64 packets;
	__u64 bytes;
};

/* limit and hashlimit: one record per match of the generation, in the
 * rates map, at xt_match.ext. A limit match keeps its token bucket here
 * (limit_mt's priv, per rule and per generation: a replace starts every
 * bucket afresh, as checkentry does); a hashlimit match finds here its
 * table and what the kernel derives from the table's configuration. */
struct xt_rate {
	/* limit: the bucket, updated with atomics as limit_mt does */
	__u64 prev;
	__u32 credit;
	__u32 credit_cap;
	__u32 cost;
	/* hashlimit: the table's slot in htables */
	__u32 slot;
	__u64 cpj;	/* credits per jiffy: limit, hashlimit by revision */
	/* hashlimit: the table's hash (dsthash_dst) as masks over the packet's
	 * addresses, zero for a field the mode leaves out */
	__u32 smask[4];
	__u32 dmask[4];
	__u32 mode;	/* the table's mode: which ports go into the hash */
	__u32 flags;	/* RATE_* */
	__u64 expire;	/* msecs_to_jiffies(expire) */
	__u64 init[4];	/* rateinfo_init's words for a new entry */
	__u64 bytes_cpj;	/* CREDITS_PER_JIFFY_BYTES */
	__u64 bytes_cap;	/* CREDITS_PER_JIFFY_BYTES * HZ */
	__u32 hz;
	__u32 pad;
	/* hashlimit: the struct hl_ent a new entry is inserted as: not yet
	 * initialised (expires HL_UNSET), which the first packet to lock it
	 * does, as the kernel initialises an entry it created locked */
	__u64 fresh[7];
};

#define HL_UNSET (1ULL << 63)	/* never due for garbage collection */

/* xt_rate.flags: the rule's own mode, and how the table's mode and the
 * rule's revision make rateinfo_recalc treat the entries */
#define RATE_RULE_RATEMATCH 0x01
#define RATE_RULE_BYTES 0x02
#define RATE_RULE_INVERT 0x04
#define RATE_RECALC_RATEMATCH 0x08
#define RATE_TABLE_BYTES 0x10

/* hashlimit_init_dst's ports bits of the table's mode */
#define HL_HASH_DPT 0x02
#define HL_HASH_SPT 0x08

#define MAX_HTABLES 256	/* hashlimit tables per family and namespace */

/* struct dsthash_dst: what identifies an entry of a hashlimit table */
struct hl_key {
	__u32 src[4];
	__u32 dst[4];
	__u16 sport;
	__u16 dport;
};

/* struct dsthash_ent: the rateinfo words are the kernel's union of the
 * token bucket (credit, credit_cap, cost) and the rate-match state
 * (interval | prev_window << 32, current_rate, rate, burst) */
struct hl_ent {
	struct bpf_spin_lock lock;
	__u32 pad;
	__u64 expires;
	__u64 prev;
	__u64 w[4];
};

/* One hashlimit table: its garbage collection timer, and its
 * configuration (struct hashlimit_cfg3 as htable_create set it) and name,
 * from which a restarted daemon finds its tables again. */
struct hl_meta {
	struct bpf_timer timer;
	__u64 gc_ns;	/* msecs_to_jiffies(gc_interval) in nanoseconds */
	__u64 avg;
	__u64 burst;
	__u32 mode;
	__u32 size;
	__u32 max;
	__u32 gc_interval;
	__u32 expire;
	__u32 interval;
	__u8 srcmask;
	__u8 dstmask;
	__u8 bucket_init;	/* rules creating token-bucket entries used it */
	__u8 pad[5];
	char name[256];
};

/* xtbpf_ctl's argument: it reads jiffies and, with arm, starts the
 * garbage collection of the table in slot. */
struct xt_ctl {
	__u64 jiffies;
	__u32 slot;
	__u32 arm;
};

/* recent: xt_match.option is check_set, inv the invert byte (any value
 * but 0 inverts), type the side, arg[0] seconds * HZ in the kernel's
 * 32-bit product, arg[1] hit_count, code_min whether seconds is set, ext
 * the list's slot in rtables. */
#define RC_SIDE_DEST 1
#define RC_CHECK 0x01
#define RC_SET 0x02
#define RC_UPDATE 0x04
#define RC_REMOVE 0x08
#define RC_TTL 0x10
#define RC_REAP 0x20

#define MAX_RTABLES 256		/* recent lists per namespace */
#define RC_MAX_ENTRIES 128	/* ip_list_tot a list can hold; a power of 2 */
#define RC_MAX_STAMPS 64	/* timestamps an entry can keep; a power of 2 */
#define RC_NIL 0xffff		/* no entry: ends of the LRU list */

/* struct recent_entry, at a fixed place of its list's rc_table; a free
 * place has family 0. prev and next link the LRU list, next the free
 * places. */
struct rc_ent {
	__u64 stamps[RC_MAX_STAMPS];
	__u32 addr[4];	/* packet byte order, masked */
	__u16 index;
	__u16 nstamps;
	__u16 prev;
	__u16 next;
	__u8 family;	/* NFPROTO_IPV4 or NFPROTO_IPV6 */
	__u8 ttl;
	__u8 pad[6];
};

/* struct recent_table: one list, whole in one map value under one lock,
 * as the kernel's recent_lock covers a list. */
struct rc_table {
	struct bpf_spin_lock lock;
	__u32 entries;
	__u32 list_tot;	/* ip_list_tot */
	__u32 stamps_mask;	/* nstamps_max_mask */
	__u32 mask[4];	/* the address mask of the rule that created it */
	__u16 head;	/* oldest entry */
	__u16 tail;
	__u16 free;	/* first free place */
	__u16 pad;
	__s32 found;	/* scratch: what a scan found, read back unknown to
			 * the verifier, so that it does not walk what follows
			 * once per place */
	__u32 pad2;
	struct rc_ent e[RC_MAX_ENTRIES];
};

/* A list's name and which families' tables in force name it. */
struct rc_meta {
	char name[200];
	__u8 refs;	/* bit 0: IPv4, bit 1: IPv6 */
	__u8 pad[7];
};

/* xtbpf_recent's argument: one /proc/net/xt_recent write, or the growth
 * of a list's timestamps that recent_mt_check makes (which flushes it). */
#define RC_OP_ADD '+'
#define RC_OP_DEL '-'
#define RC_OP_FLUSH '/'
#define RC_OP_GROW 'g'
struct xt_recent_ctl {
	__u32 slot;
	__u32 op;
	__u32 addr[4];
	__u32 stamps_mask;	/* RC_OP_GROW */
	__u8 family;
	__u8 pad[3];
	__u64 jiffies;	/* out: when it was done */
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
