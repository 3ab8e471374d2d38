/* Matches that read protocol headers at offsets only they compute: the
 * IPv6 extension header matches (rt, frag, hbh, dst, ipv6header, ah), the
 * IPsec SPIs of IPv4 ah and of esp, tcpmss, and sctp (sctp.h). Each runs
 * from a global function that gets the program's context, so that it can
 * open the packet itself and walk it with bpf_loop: nothing of this is
 * parsed for packets no such rule looks at. */
#pragma once

#define NEXTHDR_ESP 50
#define NF_ENOENT 2
#define NF_EBADMSG 74
#define IP6_MF 0x0001

/* Hot-drop, as the matches return it. */
#define HOTDROP (-1)

/* ipv6_find_hdr(skb, &off, target, NULL, NULL) for an extension header
 * target, one header per bpf_loop step. */
struct find_hdr {
	struct bpf_dynptr ptr;
	__u32 start;
	__s32 ret;	/* the offset found, or -NF_ENOENT, -NF_EBADMSG */
	__u8 nh;
	__u8 target;
};

static long find_hdr_step(__u64 i, struct find_hdr *f)
{
	__u8 hp[4] = {};
	__u8 nh = f->nh;
	int found = nh == f->target;
	__u32 hdrlen;

	if (!ext_hdr(nh) || nh == NEXTHDR_NONE) {
		f->ret = -NF_ENOENT;
		return 1;
	}
	/* A routing header is read whole (4 bytes), a fragment header up to
	 * its frag_off, the others for their 2-byte opt header. */
	if (bpf_dynptr_read(hp, nh == NEXTHDR_ROUTING || nh == NEXTHDR_FRAGMENT ? 4 : 2, &f->ptr, f->start, 0)) {
		f->ret = -NF_EBADMSG;
		return 1;
	}
	if (nh == NEXTHDR_FRAGMENT) {
		if (((((__u16)hp[2] << 8) | hp[3]) & ~0x7)) {
			f->ret = found ? (__s32)f->start : -NF_ENOENT;
			return 1;
		}
		hdrlen = 8;
	} else if (nh == NEXTHDR_AUTH) {
		hdrlen = ((__u32)hp[1] + 2) << 2;
	} else {
		hdrlen = ((__u32)hp[1] + 1) << 3;
	}
	if (found) {
		f->ret = f->start;
		return 1;
	}
	f->nh = hp[0];
	f->start += hdrlen;
	return 0;
}

static __always_inline __s32 find_hdr(struct find_hdr *f, __u8 target, const struct pkt *p)
{
	__u8 nh;

	if (bpf_dynptr_read(&nh, 1, &f->ptr, 6, 0))
		return -NF_EBADMSG;
	f->nh = nh;
	f->start = 40;
	f->target = target;
	f->ret = -NF_EBADMSG;
	/* Every extension header takes at least 8 bytes. */
	bpf_loop(p->len / 8 + 1, find_hdr_step, f, 0);
	return f->ret;
}

/* The header found, or how the match ends without it. */
#define FOUND_OR_RETURN(off, f, target, p)                         \
	do {                                                       \
		off = find_hdr(f, target, p);                      \
		if (off < 0)                                       \
			return off == -NF_ENOENT ? 0 : HOTDROP;    \
	} while (0)

static __always_inline int open_pkt(struct bpf_dynptr *ptr, struct bpf_nf_ctx *ctx)
{
	return bpf_dynptr_from_skb((struct __sk_buff *)ctx->skb, 0, ptr);
}

static __always_inline int in_range32(__u32 lo, __u32 hi, __u32 v, int invert)
{
	return (v >= lo && v <= hi) ^ (invert != 0);
}

static __always_inline __u32 be32(const __u8 *b)
{
	return ((__u32)b[0] << 24) | ((__u32)b[1] << 16) | ((__u32)b[2] << 8) | b[3];
}

/* The routing header's addresses, compared one per bpf_loop step. */
struct rt_walk {
	struct find_hdr f;
	const struct xt_ext *x;
	__u32 ptr;
	__u32 n;	/* addresses in the header */
	__u32 i;	/* addresses of the rule matched so far */
	__u8 loose;
	__u8 hotdrop;
};

/* --rt-0-addrs: the header's first addresses are the rule's; with
 * --rt-0-not-strict, the rule's appear among the header's in order. */
static long rt_addr_step(__u64 k, struct rt_walk *r)
{
	const __u32 *want;
	__u32 a[4];

	if (r->i >= r->x->count || (r->loose ? k >= r->n : k != r->i))
		return 1;
	if (bpf_dynptr_read(a, sizeof(a), &r->f.ptr, r->ptr + 8 + 16 * k, 0)) {
		r->hotdrop = 1;
		return 1;
	}
	want = r->x->addr[r->i & 15];
	if (a[0] == want[0] && a[1] == want[1] && a[2] == want[2] && a[3] == want[3])
		r->i++;
	return 0;
}

/* rt_mt6. x: addr the addresses, val[0] the type, val[1] the length,
 * expires the segments-left range, count the number of addresses. */
static __noinline int rt_match(const struct xt_ext *x, const struct pkt *p, struct bpf_nf_ctx *ctx)
{
	struct rt_walk r = {.x = x};
	__u8 buf[8];
	__u8 *rh;
	__s32 off;
	__u32 hdrlen;
	int ret;

	if (!x || !p || open_pkt(&r.f.ptr, ctx))
		return HOTDROP;
	FOUND_OR_RETURN(off, &r.f, NEXTHDR_ROUTING, p);
	rh = bpf_dynptr_slice(&r.f.ptr, off, buf, 4);
	if (!rh)
		return HOTDROP;
	hdrlen = ((__u32)rh[1] + 1) << 3;
	if (p->len - off < hdrlen)
		return HOTDROP;
	ret = in_range32(x->expires[0], x->expires[1], rh[3], x->invert & 0x02) &&
	      (!(x->flags & 0x04) || ((x->val[1] == hdrlen) ^ !!(x->invert & 0x04))) &&
	      (!(x->flags & 0x01) || ((x->val[0] == rh[2]) ^ !!(x->invert & 0x01)));
	if (ret && (x->flags & 0x08)) {
		rh = bpf_dynptr_slice(&r.f.ptr, off + 4, buf, 4);
		if (!rh)
			return HOTDROP;
		ret = be32(rh) == 0;
	}
	if (!(x->flags & 0x10))
		return ret;
	r.ptr = off;
	r.n = (hdrlen - 8) / 16;
	r.loose = (x->flags & 0x20) != 0;
	if (x->count > r.n)
		return 0;
	bpf_loop(r.n, rt_addr_step, &r, 0);
	if (r.hotdrop)
		return HOTDROP;
	return r.i == x->count && (r.loose || r.i == r.n) && ret;
}

/* frag_mt6. arg: the identification range, option: flags, inv: invflags. */
static __noinline int frag_match(const struct xt_match *m, const struct pkt *p, struct bpf_nf_ctx *ctx)
{
	struct find_hdr f = {};
	__u8 buf[8];
	__u8 *fh;
	__s32 off;
	__u16 fo;

	if (!m || !p || open_pkt(&f.ptr, ctx))
		return HOTDROP;
	FOUND_OR_RETURN(off, &f, NEXTHDR_FRAGMENT, p);
	fh = bpf_dynptr_slice(&f.ptr, off, buf, 8);
	if (!fh)
		return HOTDROP;
	fo = ((__u16)fh[2] << 8) | fh[3];
	return in_range32(m->arg[0], m->arg[1], be32(fh + 4), m->inv & 0x01) &&
	       !((m->option & 0x04) && (fh[1] || (fo & 0x6))) &&
	       !((m->option & 0x08) && (fo & ~0x7)) &&
	       !((m->option & 0x10) && !(fo & IP6_MF)) &&
	       !((m->option & 0x20) && (fo & IP6_MF));
}

/* hbh_mt6's walk of the options, one per bpf_loop step. It gives up (no
 * match, no drop) on an option it cannot read or that runs past the
 * header, except that the last option sought may run past it. */
struct opts_walk {
	struct find_hdr f;
	const struct xt_ext *x;
	__u32 len;	/* skb->len */
	__u32 ptr;
	__u32 hdrlen;	/* bytes of the header left */
	__u32 k;	/* options of the rule matched */
	__u8 ret;	/* 1 go on, 0 no match */
};

static long opts_step(__u64 i, struct opts_walk *o)
{
	__u32 optlen = 1;
	__u16 want;
	__u8 t, l;

	if (o->k >= o->x->count || o->k >= 16 || o->hdrlen < 1 || bpf_dynptr_read(&t, 1, &o->f.ptr, o->ptr, 0))
		return 1;
	want = o->x->lo[o->k & 15];
	if (t != want >> 8) {
		o->ret = 0;
		return 1;
	}
	if (t) {
		if (o->hdrlen < 2 || bpf_dynptr_read(&l, 1, &o->f.ptr, o->ptr + 1, 0))
			return 1;
		if ((want & 0xff) != 0xff && (want & 0xff) != l) {
			o->ret = 0;
			return 1;
		}
		optlen = (__u32)l + 2;
	}
	/* u32 arithmetic, as the kernel's: len - optlen may wrap. */
	if ((o->ptr > o->len - optlen || o->hdrlen < optlen) && o->k + 1 < o->x->count)
		return 1;
	o->ptr += optlen;
	o->hdrlen -= optlen;
	o->k++;
	return 0;
}

/* hbh_mt6 for the header m->type names. x: lo the options (type << 8 |
 * length), count their number, val[0] the header length. */
static __noinline int opts_match(const struct xt_match *m, const struct pkt *p, const struct xt_ext *x,
				 struct bpf_nf_ctx *ctx)
{
	struct opts_walk o = {.x = x, .ret = 1};
	__u8 buf[2];
	__u8 *oh;
	__s32 off;
	int ret;

	if (!m || !p || !x || open_pkt(&o.f.ptr, ctx))
		return HOTDROP;
	FOUND_OR_RETURN(off, &o.f, m->type, p);
	oh = bpf_dynptr_slice(&o.f.ptr, off, buf, 2);
	if (!oh)
		return HOTDROP;
	o.hdrlen = ((__u32)oh[1] + 1) << 3;
	o.len = p->len;
	if (o.len - off < o.hdrlen)
		return HOTDROP;
	ret = !(x->flags & 0x01) || ((x->val[0] == o.hdrlen) ^ !!(x->invert & 0x01));
	if (!(x->flags & 0x02))
		return ret;
	o.ptr = off + 2;
	o.hdrlen -= 2;
	bpf_loop(16, opts_step, &o, 0);
	return o.ret && o.k == x->count && ret;
}

/* ipv6header_mt6's own walk of the header chain: it goes on past
 * fragment headers, stops at ESP, and gives up (no match) when fewer than
 * 2 bytes are left for the next header. */
struct hdr_mask {
	struct bpf_dynptr ptr;
	__u32 start;
	__u32 len;
	__u8 nh;
	__u8 mask;
	__u8 ret;	/* 1 evaluate the mask, 0 no match, 2 hot-drop */
};

static long hdr_mask_step(__u64 i, struct hdr_mask *h)
{
	__u8 buf[2];
	__u8 *hp;
	__u8 nh = h->nh;

	if (!ext_hdr(nh) && nh != NEXTHDR_ESP)
		return 1;
	if (nh == NEXTHDR_NONE) {
		h->mask |= 0x02;
		return 1;
	}
	if (h->start + 2 > h->len) {
		h->ret = 0;
		return 1;
	}
	if (nh == NEXTHDR_ESP) {
		h->mask |= 0x04;
		return 1;
	}
	hp = bpf_dynptr_slice(&h->ptr, h->start, buf, 2);
	if (!hp) {
		h->ret = 2;
		return 1;
	}
	switch (nh) {
	case NEXTHDR_HOP:
		h->mask |= 0x80;
		h->start += ((__u32)hp[1] + 1) << 3;
		break;
	case NEXTHDR_ROUTING:
		h->mask |= 0x20;
		h->start += ((__u32)hp[1] + 1) << 3;
		break;
	case NEXTHDR_FRAGMENT:
		h->mask |= 0x10;
		h->start += 8;
		break;
	case NEXTHDR_AUTH:
		h->mask |= 0x08;
		h->start += ((__u32)hp[1] + 2) << 2;
		break;
	default: /* NEXTHDR_DEST */
		h->mask |= 0x40;
		h->start += ((__u32)hp[1] + 1) << 3;
	}
	h->nh = hp[0];
	return h->start > h->len;
}

/* ipv6header_mt6. arg: matchflags, invflags; option: modeflag. */
static __noinline int ipv6header_match(const struct xt_match *m, const struct pkt *p, struct bpf_nf_ctx *ctx)
{
	struct hdr_mask h = {.start = 40, .ret = 1};
	__u8 match, inv;

	if (!m || !p || open_pkt(&h.ptr, ctx) || bpf_dynptr_read(&h.nh, 1, &h.ptr, 6, 0))
		return HOTDROP;
	h.len = p->len;
	bpf_loop(p->len / 8 + 1, hdr_mask_step, &h, 0);
	if (h.ret != 1)
		return h.ret ? HOTDROP : 0;
	if (h.nh != NEXTHDR_NONE && h.nh != NEXTHDR_ESP)
		h.mask |= 0x01;
	match = m->arg[0];
	inv = m->arg[1];
	if (m->option)
		return !((h.mask ^ match ^ inv) & match);
	return inv ? h.mask != match : h.mask == match;
}

/* ah_mt6. x: val the SPI range and the length, flags hdrres, invert the
 * invflags. */
static __noinline int ah6_match(const struct xt_ext *x, const struct pkt *p, struct bpf_nf_ctx *ctx)
{
	struct find_hdr f = {};
	__u8 buf[12];
	__u8 *ah;
	__s32 off;
	__u32 hdrlen;

	if (!x || !p || open_pkt(&f.ptr, ctx))
		return HOTDROP;
	FOUND_OR_RETURN(off, &f, NEXTHDR_AUTH, p);
	ah = bpf_dynptr_slice(&f.ptr, off, buf, 12);
	if (!ah)
		return HOTDROP;
	hdrlen = ((__u32)ah[1] + 2) << 2;
	if (p->len - off < hdrlen)
		return HOTDROP;
	return in_range32(x->val[0], x->val[1], be32(ah + 4), x->invert & 0x01) &&
	       (!x->val[2] || ((x->val[2] == hdrlen) ^ !!(x->invert & 0x02))) &&
	       !(x->flags && (ah[2] || ah[3]));
}

/* ah_mt (IPv4) and esp_mt. arg: the SPI range; option: the header's size;
 * type: the SPI's offset in it. */
static __noinline int spi_match(const struct xt_match *m, const struct pkt *p, struct bpf_nf_ctx *ctx)
{
	struct bpf_dynptr ptr;
	__u8 spi[4];

	if (!m || !p || p->fragoff)
		return 0;
	if (open_pkt(&ptr, ctx) || p->len < p->thoff + m->option ||
	    bpf_dynptr_read(spi, 4, &ptr, p->thoff + m->type, 0))
		return HOTDROP;
	return in_range32(m->arg[0], m->arg[1], be32(spi), m->inv & 0x01);
}

/* tcpmss_mt's walk of the options, the one tcp_find_option makes. */
struct mss_walk {
	__u8 op[64];
	__u32 len;
	__u32 at;
	__s32 mss;	/* the first well-formed MSS option, or -1 */
};

static long mss_step(__u64 i, struct mss_walk *w)
{
	__u32 at = w->at & 63;

	if (w->at >= w->len)
		return 1;
	if (w->op[at] == 2 && w->len - at >= 4 && w->op[(at + 1) & 63] == 4) {
		w->mss = ((__u16)w->op[(at + 2) & 63] << 8) | w->op[(at + 3) & 63];
		return 1;
	}
	/* Past the options the kernel reads a byte of whatever follows; any
	 * value ends the walk. */
	if (w->op[at] < 2 || at + 1 >= w->len || !w->op[(at + 1) & 63])
		w->at = at + 1;
	else
		w->at = at + w->op[(at + 1) & 63];
	return 0;
}

/* tcpmss_mt: the TCP header at the transport offset, whatever the
 * fragment offset; "match ^ invert" on the u8 invert. spts: the MSS
 * range, inv: invert. */
static __noinline int tcpmss_match(const struct xt_match *m, const struct pkt *p, struct bpf_nf_ctx *ctx)
{
	struct mss_walk w = {.mss = -1};
	struct bpf_dynptr ptr;
	__u8 th[20];
	__u32 optlen;

	if (!m || !p || open_pkt(&ptr, ctx) || bpf_dynptr_read(th, 20, &ptr, p->thoff, 0) || (th[12] >> 4) < 5)
		return HOTDROP;
	optlen = (th[12] >> 4) * 4 - 20;
	if (!optlen)
		return m->inv != 0;
	optlen &= 63;
	if (optlen > 40 || bpf_dynptr_read(w.op, optlen, &ptr, p->thoff + 20, 0))
		return HOTDROP;
	w.len = optlen;
	bpf_loop(40, mss_step, &w, 0);
	if (w.mss < 0)
		return m->inv != 0;
	return (((__u16)w.mss >= m->spts[0] && (__u16)w.mss <= m->spts[1]) ^ m->inv) != 0;
}

#include "sctp.h"

/* The matches of this file, as a global function verified once. */
__noinline int hdr_match(const struct xt_match *m, const struct pkt *p, const struct xt_ext *x,
			 struct bpf_nf_ctx *ctx)
{
	if (!m)
		return HOTDROP;
	switch (m->kind) {
	case MATCH_RT:
		return rt_match(x, p, ctx);
	case MATCH_FRAG:
		return frag_match(m, p, ctx);
	case MATCH_OPTS:
		return opts_match(m, p, x, ctx);
	case MATCH_IPV6HEADER:
		return ipv6header_match(m, p, ctx);
	case MATCH_AH6:
		return ah6_match(x, p, ctx);
	case MATCH_SPI:
		return spi_match(m, p, ctx);
	case MATCH_TCPMSS:
		return tcpmss_match(m, p, ctx);
	case MATCH_SCTP:
		/* p lies in the run's scratch slot, which sctp may mark. */
		return sctp_match(x, (struct pkt *)p, ctx);
	}
	return HOTDROP;
}
