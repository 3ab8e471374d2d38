/* limit (xt_limit.c) and hashlimit (xt_hashlimit.c): the stateful matches.
 * Included by xtbpf.c once struct pkt is defined. Everything the kernel
 * computes at checkentry or htable_create the loader has computed into the
 * match's xt_rate record; what is left here is the kernel's per-packet
 * arithmetic, word for word. */
#pragma once

#define CLOCK_MONOTONIC 1
#define EEXIST 17
#define LIMIT_TRIES 64

struct rate_array {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_INNER_MAP);
	__uint(max_entries, 1);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(struct xt_rate));
};

/* Per generation, like the rules: a replace brings new limit buckets. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 2);
	__type(key, __u32);
	__array(values, struct rate_array);
} rates SEC(".maps");

/* One hashlimit table: entries are only created up to its max (the
 * kernel's count check; BPF refuses the insert with E2BIG), and only its
 * garbage collection removes them, as htable_gc does. */
struct hl_table {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 1);
	__type(key, struct hl_key);
	__type(value, struct hl_ent);
};

/* The hashlimit tables of this family in this namespace, by slot; they
 * live across generations for as long as a rule names them. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, MAX_HTABLES);
	__type(key, __u32);
	__array(values, struct hl_table);
} htables SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, MAX_HTABLES);
	__type(key, __u32);
	__type(value, struct hl_meta);
} htmeta SEC(".maps");

/* limit_mt: the credit earned since prev (the kernel's 32-bit sum) goes in
 * with one compare-and-swap, retried if another CPU got there first, as the
 * kernel's cmpxchg loop is. */
static __always_inline int limit_match(struct xt_rate *r)
{
	__u32 inc = 0, old, credit;
	__u64 now = bpf_jiffies64(), prev;
	int ok;

	if (*(volatile __u32 *)&r->credit < r->cost && *(volatile __u64 *)&r->prev == now)
		return 0;
	for (int i = 0; i < LIMIT_TRIES; i++) {
		now = bpf_jiffies64();
		prev = __sync_lock_test_and_set(&r->prev, now);
		inc += (__u32)((now - prev) * r->cpj);
		old = *(volatile __u32 *)&r->credit;
		credit = old + inc;
		if (credit > r->credit_cap)
			credit = r->credit_cap;
		ok = credit >= r->cost;
		if (ok)
			credit -= r->cost;
		if (__sync_val_compare_and_swap(&r->credit, old, credit) == old)
			return ok;
	}
	/* LIMIT_TRIES CPUs updated the bucket while this one tried: count the
	 * packet over the limit rather than spin on. */
	return 0;
}

/* hashlimit_init_dst, the packet's part parsed once per packet. */
static __always_inline int hl_key_of(const struct xt_rate *r, const struct pkt *p, struct hl_key *k)
{
	for (int i = 0; i < 4; i++) {
		k->src[i] = p->src[i] & r->smask[i];
		k->dst[i] = p->dst[i] & r->dmask[i];
	}
	if (!(r->mode & (HL_HASH_SPT | HL_HASH_DPT)))
		return 0;
	if (!p->hlports_ok)
		return -1;
	if (r->mode & HL_HASH_SPT)
		k->sport = p->hlports & 0xffff;
	if (r->mode & HL_HASH_DPT)
		k->dport = p->hlports >> 16;
	return 0;
}

/* rateinfo_recalc with the table's mode and the rule's revision. */
static __always_inline void hl_recalc(const struct xt_rate *r, struct hl_ent *e, __u64 now)
{
	__u64 delta = now - e->prev, interval, window, was, cap;

	if (delta == 0)
		return;
	if (r->flags & RATE_RECALC_RATEMATCH) {
		interval = (__u32)((__u32)e->w[0] * r->hz);
		if (delta < interval)
			return;
		e->prev = now;
		window = e->w[1] * interval > delta * e->w[2];
		e->w[0] = (e->w[0] & 0xffffffff) | window << 32;
		e->w[1] = 0;
		return;
	}
	e->prev = now;
	if (r->flags & RATE_TABLE_BYTES) {
		was = e->w[0];
		e->w[0] += r->bytes_cpj * delta;
		cap = r->bytes_cap;
		if (was >= e->w[0]) {
			e->w[0] = cap;
			return;
		}
	} else {
		e->w[0] += delta * r->cpj;
		cap = e->w[1];
	}
	if (e->w[0] > cap)
		e->w[0] = cap;
}

/* The rest of hashlimit_mt_common: 1 under the limit (paid for), 0 over. */
static __always_inline int hl_charge(const struct xt_rate *r, struct hl_ent *e, __u32 len)
{
	__u64 cost;

	if (r->flags & RATE_RULE_RATEMATCH) {
		e->w[1] += r->flags & RATE_RULE_BYTES ? len : 1;
		return !(e->w[0] >> 32) && e->w[1] <= e->w[3];
	}
	if (r->flags & RATE_RULE_BYTES) {
		/* hashlimit_byte_cost */
		cost = (__u64)((len >> 4) + 1) * e->w[2];
		if (cost > r->bytes_cap)
			cost = r->bytes_cap;
		if (e->w[0] < cost && e->w[1]) {
			e->w[1]--;
			e->w[0] = r->bytes_cap;
		}
		cost = (__u32)cost;
	} else {
		cost = e->w[2];
	}
	if (e->w[0] < cost)
		return 0;
	e->w[0] -= cost;
	return 1;
}

/* hashlimit_mt_common: -1 drops the packet (no ports to read, or no room
 * for its entry), else whether the rule matches. */
static __always_inline int hashlimit_match(const struct xt_rate *r, const struct pkt *p)
{
	struct hl_key k = {};
	struct hl_ent *e;
	__u64 now = bpf_jiffies64();
	__u32 slot = r->slot;
	void *ht;
	long err;
	int under;

	if (hl_key_of(r, p, &k))
		return -1;
	ht = bpf_map_lookup_elem(&htables, &slot);
	if (!ht)
		return -1;
	e = bpf_map_lookup_elem(ht, &k);
	if (!e) {
		/* Full (the kernel's max) or out of memory: hotdrop, as
		 * dsthash_alloc_init's NULL is. Another CPU may have created
		 * the entry first: then this packet finds it. */
		err = bpf_map_update_elem(ht, &k, r->fresh, BPF_NOEXIST);
		if (err && err != -EEXIST)
			return -1;
		e = bpf_map_lookup_elem(ht, &k);
		if (!e)
			return -1;
	}
	bpf_spin_lock(&e->lock);
	if (e->expires == HL_UNSET) {
		/* rateinfo_init */
		e->prev = now;
		for (int i = 0; i < 4; i++)
			e->w[i] = r->init[i];
	} else {
		hl_recalc(r, e, now);
	}
	e->expires = now + r->expire;
	under = hl_charge(r, e, p->len);
	bpf_spin_unlock(&e->lock);
	return under ^ !!(r->flags & RATE_RULE_INVERT);
}

/* limit and hashlimit, evaluated only when the walk reaches them, as the
 * kernel's are: a global function, verified once. */
__noinline int rate_match(const struct xt_match *m, const struct pkt *p)
{
	struct xt_rate *r;
	__u32 g, idx;
	void *inner;

	if (!m || !p)
		return -1;
	g = p->gen;
	inner = bpf_map_lookup_elem(&rates, &g);
	if (!inner)
		return -1;
	idx = m->ext;
	r = bpf_map_lookup_elem(inner, &idx);
	if (!r)
		return -1;
	if (m->kind == MATCH_LIMIT)
		return limit_match(r);
	return hashlimit_match(r, p);
}

/* One step of ipv6_skip_exthdr from the end of the IPv6 header. */
static long v6_skip_step(__u64 i, struct walk *w)
{
	__u8 buf[4];
	__u8 *hp;
	__u8 nh = w->nexthdr;

	if (!ext_hdr(nh)) {
		w->p->proto = nh;
		w->p->thoff = w->start;
		return 1;
	}
	if (nh == NEXTHDR_NONE)
		goto bad;
	if (nh == NEXTHDR_FRAGMENT) {
		hp = bpf_dynptr_slice(&w->ptr, w->start, buf, 4);
		if (!hp)
			goto bad;
		if ((((__u16)hp[2] << 8) | hp[3]) & ~0x7) {
			/* A later fragment: the walk stops at its header. */
			w->p->proto = nh;
			w->p->thoff = w->start;
			return 1;
		}
		w->start += 8;
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

/* proto_ports_offset */
static __always_inline int ports_offset(__s32 proto)
{
	switch (proto) {
	case 6: case 17: case 33: case 50: case 132: case 136:
		return 0;
	case 51:
		return 4;
	}
	return -1;
}

/* The ports hashlimit_init_dst reads, for tables that hash them: behind
 * the IPv4 header, or behind what ipv6_skip_exthdr skips (which is not
 * what ipv6_find_hdr finds, so it is walked again here); zero for a
 * protocol without ports. Runs before the rest of the parse so that it can
 * use the walk's scratch, and leaves thoff and proto as it found them. A
 * function of its own: the program's stack has no room left for its
 * locals. */
static __noinline void parse_hlports(struct walk *w)
{
	__s32 proto = w->p->proto;
	__u32 thoff = w->p->thoff, at;
	__u8 buf[4], nh;
	__u8 *pp;
	int poff;

	if (w->p->v6) {
		if (bpf_dynptr_read(&nh, 1, &w->ptr, 6, 0))
			return;
		w->nexthdr = nh;
		w->start = 40;
		w->p->proto = -1;
		bpf_loop(w->p->len / 8 + 1, v6_skip_step, w, 0);
	}
	if (w->p->proto >= 0) {
		poff = ports_offset(w->p->proto);
		at = w->p->thoff + poff;
		pp = poff < 0 ? 0 : bpf_dynptr_slice(&w->ptr, at, buf, 4);
		if (poff < 0) {
			w->p->hlports_ok = 1;
		} else if (pp) {
			__builtin_memcpy(&w->p->hlports, pp, 4);
			w->p->hlports_ok = 1;
		}
	}
	w->p->proto = proto;
	w->p->thoff = thoff;
}

/* htable_gc: the entries whose expiry has come go. */
static long gc_entry(void *map, struct hl_key *key, struct hl_ent *e, __u64 *now)
{
	if ((__s64)(*now - e->expires) >= 0)
		bpf_map_delete_elem(map, key);
	return 0;
}

static int gc_table(void *map, __u32 *slot, struct hl_meta *meta)
{
	__u64 now = bpf_jiffies64();
	void *ht = bpf_map_lookup_elem(&htables, slot);

	if (ht)
		bpf_for_each_map_elem(ht, gc_entry, &now, 0);
	bpf_timer_start(&meta->timer, meta->gc_ns, 0);
	return 0;
}

/* Run by the loader: jiffies for the limit buckets it starts, and the
 * garbage collection of a table it created (htable_create queues it). */
SEC("syscall")
int xtbpf_ctl(struct xt_ctl *a)
{
	struct hl_meta *m;
	__u32 slot;

	a->jiffies = bpf_jiffies64();
	if (!a->arm)
		return 0;
	slot = a->slot;
	m = bpf_map_lookup_elem(&htmeta, &slot);
	if (!m)
		return 1;
	if (bpf_timer_init(&m->timer, &htmeta, CLOCK_MONOTONIC))
		return 2;
	if (bpf_timer_set_callback(&m->timer, gc_table))
		return 3;
	return bpf_timer_start(&m->timer, m->gc_ns, 0) ? 4 : 0;
}
