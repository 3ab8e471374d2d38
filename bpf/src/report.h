/* REJECT and LOG. A netfilter program can only give a verdict: it cannot
 * build or send a packet, nor print to the kernel log. So a REJECT or LOG
 * rule hands user space a report of the packet and of what the kernel's
 * target would have known of it, and user space sends the reply
 * (ipt_REJECT, ip6t_REJECT) or writes the line (nf_log_syslog). Included
 * by xtbpf.c after struct walk. */
#pragma once

#define CAP_V4 576	/* icmp_send quotes at most 576 bytes, headers included */
#define CAP_V6 1280	/* icmp6_send quotes up to the IPv6 minimum MTU */
#define CAP_CHUNKS (CAP_V6 / REPORT_CHUNK)
#define SKB_DST_PTRMASK (~1UL)
#define MAC_UNSET 0xffff
#define TCP_TIME_WAIT 6
#define TCP_NEW_SYN_RECV 12
#define XT_LOG_UID 0x08
#define CHECKSUM_UNNECESSARY 1

/* A map key in .rodata rather than on the stack, which the walk uses up. */
static const __u32 zero_key = 0;

/* The folded ones' complement sum, in network order, of the packet bytes
 * [from, len): the bytes past what the report carries, so that user space
 * can verify the transport checksum as nf_ip_checksum and nf_ip6_checksum
 * do. Words are added little-endian, eight bytes at a time, and the sum
 * swapped at the end (RFC 1071). The walk leaves report almost no stack,
 * so the bytes are read into scratch, eight bytes of the record that the
 * packet's own bytes overwrite afterwards. */
static __always_inline __u16 csum_rest(struct bpf_dynptr *skb, __u64 *scratch, __u32 from, __u32 len)
{
	struct bpf_iter_num it;
	__u32 off = from, n;
	__u64 sum = 0, v;
	__u16 folded;

	if (from >= len)
		return 0;
	bpf_iter_num_new(&it, 0, (len - from + 7) / 8);
	while (bpf_iter_num_next(&it)) {
		n = len - off;
		if (n > sizeof(*scratch))
			n = sizeof(*scratch);
		*scratch = 0;
		if (bpf_dynptr_read(scratch, n, skb, off, 0))
			break;
		v = *scratch;
		sum += (v & 0xffff) + ((v >> 16) & 0xffff) + ((v >> 32) & 0xffff) + (v >> 48);
		off += n;
	}
	bpf_iter_num_destroy(&it);
	for (int k = 0; k < 4; k++)
		sum = (sum & 0xffff) + (sum >> 16);
	folded = sum;
	return (folded >> 8) | (folded << 8);
}

/* The link-layer header, for LOG's MAC= (dump_mac_header), which the
 * kernel prints only for packets with an input device. */
static __always_inline void report_mac(struct xt_report *rep, const struct sk_buff *skb,
				       const struct net_device *dev)
{
	__u16 mh = skb->mac_header, nh = skb->network_header;
	__u32 hh;

	rep->devtype = dev->type;
	rep->machdr = mh == MAC_UNSET ? MAC_UNSET : (__u16)(nh - mh);
	hh = dev->hard_header_len;
	if (mh == MAC_UNSET || mh == nh || !hh)
		return;
	if (hh > REPORT_MAC)
		hh = REPORT_MAC;
	/* Re-check on the register the helper gets: the clamp above may be
	 * compiled into a select the verifier cannot bound. */
	barrier_var(hh);
	if (hh > REPORT_MAC)
		return;
	if (!bpf_probe_read_kernel(rep->mac, hh, skb->head + mh))
		rep->maclen = hh;
}

/* nf_log_dump_sk_uid_gid: the fsuid and fsgid of the socket's file, for a
 * full socket of the packet's own namespace. */
static __always_inline void report_uid(struct xt_report *rep, const struct sk_buff *skb,
				       const struct nf_hook_state *state)
{
	const struct sock *sk = skb->sk;
	const struct socket *so;
	const struct file *f;
	unsigned char st;

	if (!sk)
		return;
	st = sk->__sk_common.skc_state;
	if (st == TCP_TIME_WAIT || st == TCP_NEW_SYN_RECV || sk->__sk_common.skc_net.net != state->net)
		return;
	so = sk->sk_socket;
	f = so ? so->file : NULL;
	if (!f)
		return;
	rep->uid = f->f_cred->fsuid.val;
	rep->gid = f->f_cred->fsgid.val;
	rep->has_uid = 1;
}

/* What icmp_send reads of the IPv4 route: RTCF_BROADCAST, RTCF_MULTICAST
 * and RTCF_LOCAL, and whether it is an input route. */
static __always_inline void report_route(struct xt_report *rep, const struct sk_buff *skb)
{
	const struct rtable *rt = (const struct rtable *)(skb->_skb_refdst & SKB_DST_PTRMASK);

	if (!rt)
		return;
	rep->rtflags = BPF_CORE_READ(rt, rt_flags);
	rep->rt_input = BPF_CORE_READ(rt, rt_is_input);
}

static __always_inline void dev_name(char *dst, const struct net_device *dev)
{
	if (dev)
		__builtin_memcpy(dst, dev->name, 16);
}

static __always_inline void report_head(struct xt_report *rep, struct bpf_nf_ctx *ctx, const struct xt_targ *t,
					__u32 idx, __u32 kind, __u32 caplen)
{
	const struct nf_hook_state *state = ctx->state;
	const struct sk_buff *skb = ctx->skb;
	const struct net_device *dev = skb->dev;

	rep->rule = idx;
	rep->len = skb->len;
	rep->mark = skb->mark;
	rep->iif = state->in ? state->in->ifindex : 0;
	rep->oif = state->out ? state->out->ifindex : 0;
	rep->arg = t->arg;
	rep->logflags = t->logflags;
	rep->caplen = caplen;
	rep->machdr = MAC_UNSET;
	rep->verdict = kind;
	rep->hook = state->hook;
	rep->pkttype = BPF_CORE_READ_BITFIELD_PROBED(skb, pkt_type);
	rep->ip_summed = BPF_CORE_READ_BITFIELD_PROBED(skb, ip_summed);
	rep->csum_valid = BPF_CORE_READ_BITFIELD_PROBED(skb, csum_valid);
	rep->vlan_proto = skb->vlan_proto;
	rep->vlan_tci = skb->vlan_tci;
	dev_name(rep->in, state->in);
	dev_name(rep->out, state->out);
	__builtin_memcpy(rep->prefix, t->prefix, sizeof(rep->prefix));
	if (dev) {
		rep->devif = dev->ifindex;
		rep->devflags = dev->flags;
		if (kind == V_LOG && state->in)
			report_mac(rep, skb, dev);
	}
	if (kind == V_LOG && (t->logflags & XT_LOG_UID))
		report_uid(rep, skb, state);
	if (state->pf == NFPROTO_IPV4)
		report_route(rep, skb);
}

/* report hands entry idx's REJECT or LOG run on this packet to user
 * space. A global function, so that the verifier checks it once rather
 * than on every path of the walk that reaches such a rule. A full ring
 * loses the report: the verdict stands regardless, as a REJECT whose reply
 * the kernel could not allocate still drops. */
__noinline int report(struct bpf_nf_ctx *ctx, struct bpf_dynptr *skb, const struct xt_targ *t, __u32 idx,
		      __u32 kind)
{
	__u32 len, cap, caplen, size;
	struct bpf_dynptr pkt, rp;
	struct xt_report *rep;
	__u64 *scratch;
	void *ring;

	/* The argument cannot be kept across helper calls: work on a clone
	 * on this frame's stack. */
	if (bpf_dynptr_clone(skb, &pkt) || !ctx || !t)
		return -1;
	ring = bpf_map_lookup_elem(&reports, &zero_key);
	if (!ring)
		return -1;
	len = ctx->skb->len;
	cap = ctx->state->pf == NFPROTO_IPV4 ? CAP_V4 : CAP_V6;
	caplen = len < cap ? len : cap;
	size = sizeof(*rep) + ((caplen + REPORT_CHUNK - 1) & ~(REPORT_CHUNK - 1));
	if (bpf_ringbuf_reserve_dynptr(ring, size, 0, &rp))
		goto discard;
	rep = bpf_dynptr_data(&rp, 0, sizeof(*rep));
	if (!rep)
		goto discard;
	report_head(rep, ctx, t, idx, kind, caplen);
	if (kind == V_REJECT && rep->ip_summed != CHECKSUM_UNNECESSARY && !rep->csum_valid && len > caplen) {
		scratch = bpf_dynptr_data(&rp, sizeof(*rep), sizeof(*scratch));
		if (!scratch)
			goto discard;
		rep->csum = csum_rest(&pkt, scratch, caplen, len);
	}
	for (int k = 0; k < CAP_CHUNKS; k++) {
		__u32 off = k * REPORT_CHUNK, n;
		__u8 *dst;

		if (off >= caplen)
			break;
		dst = bpf_dynptr_data(&rp, sizeof(*rep) + off, REPORT_CHUNK);
		if (!dst)
			goto discard;
		n = caplen - off;
		if (n > REPORT_CHUNK)
			n = REPORT_CHUNK;
		if (bpf_dynptr_read(dst, n, &pkt, off, 0))
			goto discard;
	}
	bpf_ringbuf_submit_dynptr(&rp, 0);
	return 0;
discard:
	bpf_ringbuf_discard_dynptr(&rp, 0);
	return -1;
}

/* The REJECT or LOG rule r, entry idx, reports the packet. */
static __always_inline void report_rule(struct walk *w, const struct xt_rule *r, __u32 idx)
{
	__u32 key = r->targ;

	report(w->ctx, &w->ptr, bpf_map_lookup_elem(w->targs, &key), idx, r->verdict);
}
