/* sctp_mt (xt_sctp.c), both families, run from hdr_match. Its chunk walk,
 * match_packet, takes one chunk per bpf_loop step. A chunk takes at least
 * 4 bytes, so a packet has at most skb->len / 4 of them: the walk goes on
 * through up to 128 bpf_loop calls of 1 << 23 steps each (the steps of an
 * outer bpf_loop, so that the verifier walks them once), which covers
 * every skb length: no packet is ever cut short of the kernel's answer. */
#pragma once

/* xt_sctp_info.flags and chunk_match_type */
#define XT_SCTP_SRC_PORTS 0x01
#define XT_SCTP_DEST_PORTS 0x02
#define XT_SCTP_CHUNK_TYPES 0x04
#define SCTP_CHUNK_MATCH_ANY 0x01
#define SCTP_CHUNK_MATCH_ALL 0x02
#define SCTP_CHUNK_MATCH_ONLY 0x04

/* sctp_walk.ret before the walk decides: still walking, or past the end */
#define SCTP_WALKING 2
#define SCTP_END 3

struct sctp_walk {
	struct bpf_dynptr ptr;
	const struct xt_ext *x;
	__u32 left[8];	/* "all": the rule's chunk types not seen with their flags */
	__u32 off;
	__u32 len;	/* skb->len */
	__s8 ret;	/* 0 or 1 decided, HOTDROP, SCTP_WALKING or SCTP_END */
};

/* match_flags: the first flag_info entry for the chunk type decides. */
static __always_inline int sctp_flags_ok(const struct xt_ext *x, __u8 type, __u8 flags)
{
	for (int i = 0; i < 4; i++) {
		if (i >= x->count)
			break;
		if ((x->lo[2 + i] & 0xff) == type)
			return (flags & x->hi[2 + i]) == x->lo[2 + i] >> 8;
	}
	return 1;
}

static __always_inline long sctp_decide(struct sctp_walk *w, __s8 ret)
{
	w->ret = ret;
	return 1;
}

/* One chunk of match_packet's do { } while (offset < skb->len). */
static long sctp_chunk_step(__u64 i, struct sctp_walk *w)
{
	const struct xt_ext *x = w->x;
	__u32 mtype = x->val[0];
	__u8 ch[4];
	__u16 len;
	__u8 type;

	if (bpf_dynptr_read(ch, 4, &w->ptr, w->off, 0))
		return sctp_decide(w, HOTDROP);
	len = ((__u16)ch[2] << 8) | ch[3];
	if (!len)
		return sctp_decide(w, HOTDROP);
	w->off += ((__u32)len + 3) & ~3U;
	type = ch[0];
	if ((x->addr[type >> 7][(type >> 5) & 3] >> (type & 31)) & 1) {
		int ok = sctp_flags_ok(x, type, ch[1]);

		if (mtype == SCTP_CHUNK_MATCH_ANY && ok)
			return sctp_decide(w, 1);
		if (mtype == SCTP_CHUNK_MATCH_ALL && ok)
			w->left[(type >> 5) & 7] &= ~(1U << (type & 31));
		if (mtype == SCTP_CHUNK_MATCH_ONLY && !ok)
			return sctp_decide(w, 0);
	} else if (mtype == SCTP_CHUNK_MATCH_ONLY) {
		return sctp_decide(w, 0);
	}
	if (w->off >= w->len)
		return sctp_decide(w, SCTP_END);
	return 0;
}

/* Up to 1 << 23 chunks, bpf_loop's most. */
static long sctp_chunk_run(__u64 k, struct sctp_walk *w)
{
	bpf_loop(1 << 23, sctp_chunk_step, w, 0);
	return w->ret != SCTP_WALKING;
}

/* match_packet: 1, 0 or HOTDROP. Match types other than the three walk
 * to the end and never match. */
static __always_inline int sctp_chunks(struct sctp_walk *w)
{
	const struct xt_ext *x = w->x;
	__u32 rest = x->val[1];

	bpf_loop(128, sctp_chunk_run, w, 0);
	if (w->ret != SCTP_END)
		return w->ret;
	switch (x->val[0]) {
	case SCTP_CHUNK_MATCH_ALL:
		for (int i = 0; i < 8; i++)
			rest |= w->left[i];
		return !rest;
	case SCTP_CHUNK_MATCH_ONLY:
		return 1;
	}
	return 0;
}

static __always_inline int sctp_port_ok(const struct xt_ext *x, int at, __u8 flag, __u16 port)
{
	return !(x->flags & flag) || (((port >= x->lo[at] && port <= x->hi[at])) ^ !!(x->invert & flag));
}

/* sctp_mt. An inverted --chunk-types turns a hot-drop of the walk into a
 * match that hot-drops: it says yes and sets pkt.hot, which the packet's
 * parse left 0 in its scratch slot. x: see encodeSCTP in bpf/sctp.go. */
static __noinline int sctp_match(const struct xt_ext *x, struct pkt *p, struct bpf_nf_ctx *ctx)
{
	struct sctp_walk w = {.x = x, .ret = SCTP_WALKING};
	__u8 sh[12];
	int ret;

	if (!x || !p)
		return HOTDROP;
	if (p->fragoff)
		return 0;
	if (open_pkt(&w.ptr, ctx) || bpf_dynptr_read(sh, sizeof(sh), &w.ptr, p->thoff, 0))
		return HOTDROP;
	if (!sctp_port_ok(x, 0, XT_SCTP_SRC_PORTS, ((__u16)sh[0] << 8) | sh[1]) ||
	    !sctp_port_ok(x, 1, XT_SCTP_DEST_PORTS, ((__u16)sh[2] << 8) | sh[3]))
		return 0;
	if (!(x->flags & XT_SCTP_CHUNK_TYPES))
		return 1;
	for (int i = 0; i < 8; i++)
		w.left[i] = x->addr[i >> 2][i & 3];
	w.off = p->thoff + sizeof(sh);
	w.len = p->len;
	ret = sctp_chunks(&w);
	if (!(x->invert & XT_SCTP_CHUNK_TYPES))
		return ret;
	if (ret == HOTDROP)
		p->hot = 1;
	return ret == HOTDROP || !ret;
}
