/* recent (xt_recent.c): named lists of recently seen addresses, shared by
 * every rule of either family that names them. A list is one map value
 * with its lock, as the kernel's recent_lock covers it; what the kernel
 * keeps in hash chains and an LRU list is here a fixed array of entries,
 * found by a scan, with the LRU list and the free places linked through
 * it. Included by
 * xtbpf.c once struct pkt and the host readers are defined. */
#pragma once

#define NFPROTO_IPV4 2
#define NFPROTO_IPV6 10
#define RC_IDX (RC_MAX_ENTRIES - 1)
#define RC_STAMP (RC_MAX_STAMPS - 1)

struct rc_array {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct rc_table);
};

/* The namespace's lists by slot: one map for both families' programs. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, MAX_RTABLES);
	__type(key, __u32);
	__array(values, struct rc_array);
} rtables SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, MAX_RTABLES);
	__type(key, __u32);
	__type(value, struct rc_meta);
} rtmeta SEC(".maps");

static __always_inline void rc_unlink(struct rc_table *t, __u32 i)
{
	struct rc_ent *e = &t->e[i & RC_IDX];
	__u16 prev = e->prev, next = e->next;

	if (prev == RC_NIL)
		t->head = next;
	else
		t->e[prev & RC_IDX].next = next;
	if (next == RC_NIL)
		t->tail = prev;
	else
		t->e[next & RC_IDX].prev = prev;
}

static __always_inline void rc_link_tail(struct rc_table *t, __u32 i)
{
	struct rc_ent *e = &t->e[i & RC_IDX];

	e->prev = t->tail;
	e->next = RC_NIL;
	if (t->tail == RC_NIL)
		t->head = i;
	else
		t->e[t->tail & RC_IDX].next = i;
	t->tail = i;
}

/* recent_entry_remove: the place goes back to the free list. */
static __always_inline void rc_remove(struct rc_table *t, __u32 i)
{
	rc_unlink(t, i);
	t->e[i & RC_IDX].family = 0;
	t->e[i & RC_IDX].next = t->free;
	t->free = i;
	t->entries--;
}

/* recent_entry_lookup: the place of the entry, or -1. */
static __always_inline int rc_lookup(struct rc_table *t, const __u32 *a, __u8 fam, __u8 ttl)
{
	struct rc_ent *e;
	int found = -1;

	for (int i = 0; i < RC_MAX_ENTRIES; i++) {
		e = &t->e[i];
		if (e->family != fam || e->addr[0] != a[0] || e->addr[1] != a[1] || e->addr[2] != a[2] ||
		    e->addr[3] != a[3])
			continue;
		if (ttl == e->ttl || !ttl || !e->ttl) {
			found = i;
			break;
		}
	}
	*(volatile __s32 *)&t->found = found;
	return *(volatile __s32 *)&t->found;
}

/* recent_entry_init: the oldest entry makes room in a full list. */
static __always_inline void rc_init(struct rc_table *t, const __u32 *a, __u8 fam, __u8 ttl, __u64 now)
{
	struct rc_ent *e;
	__u32 i;

	if (t->entries >= t->list_tot && t->head != RC_NIL)
		rc_remove(t, t->head);
	i = t->free;
	if (i == RC_NIL)
		return;
	e = &t->e[i & RC_IDX];
	t->free = e->next;
	for (int k = 0; k < 4; k++)
		e->addr[k] = a[k];
	e->family = fam;
	e->ttl = ttl;
	e->stamps[0] = now;
	e->nstamps = 1;
	e->index = 1;
	rc_link_tail(t, i);
	t->entries++;
}

/* recent_entry_update */
static __always_inline void rc_update(struct rc_table *t, __u32 i, __u64 now)
{
	struct rc_ent *e = &t->e[i & RC_IDX];
	__u16 idx = e->index & t->stamps_mask;

	e->stamps[idx & RC_STAMP] = now;
	e->index = idx + 1;
	if (e->index > e->nstamps)
		e->nstamps = e->index;
	rc_unlink(t, i);
	rc_link_tail(t, i);
}

/* recent_table_flush: every place free, in order. */
static __always_inline void rc_flush(struct rc_table *t)
{
	for (int i = 0; i < RC_MAX_ENTRIES; i++) {
		t->e[i].family = 0;
		t->e[i].next = i + 1 < RC_MAX_ENTRIES ? i + 1 : RC_NIL;
	}
	t->entries = 0;
	t->head = RC_NIL;
	t->tail = RC_NIL;
	t->free = 0;
}

/* time_after(a, b) */
static __always_inline int rc_after(__u64 a, __u64 b)
{
	return (__s64)(b - a) < 0;
}

/* recent_entry_reap: the oldest entry goes if its last timestamp is before
 * time, unless it is the entry about to be updated. */
static __always_inline void rc_reap(struct rc_table *t, __u64 time, __u32 working, int update)
{
	__u32 h = t->head;
	struct rc_ent *e;

	if (h == RC_NIL || (h == working && update))
		return;
	e = &t->e[h & RC_IDX];
	if (rc_after(time, e->stamps[(e->index - 1) & RC_STAMP]))
		rc_remove(t, h);
}

/* The body of recent_mt under the lock, for the masked address a. */
static __always_inline int rc_match(struct rc_table *t, const struct xt_match *m, const __u32 *a, __u8 fam,
				    __u8 ttl, __u64 now)
{
	__u8 cs = m->option;
	int ret = m->inv != 0, i, hits = 0, upd;
	__u64 time;
	struct rc_ent *e;

	i = rc_lookup(t, a, fam, cs & RC_TTL ? ttl : 0);
	if (i < 0) {
		if (!(cs & RC_SET))
			return ret;
		rc_init(t, a, fam, ttl, now);
		return !ret;
	}
	if (cs & RC_SET) {
		ret = !ret;
	} else if (cs & RC_REMOVE) {
		rc_remove(t, i);
		ret = !ret;
	} else if (cs & (RC_CHECK | RC_UPDATE)) {
		time = now - m->arg[0];
		e = &t->e[i & RC_IDX];
		for (int k = 0; k < RC_MAX_STAMPS; k++) {
			if (k >= e->nstamps)
				break;
			if (m->code_min && rc_after(time, e->stamps[k]))
				continue;
			if (!m->arg[1] || ++hits >= m->arg[1]) {
				ret = !ret;
				break;
			}
		}
		upd = (cs & RC_UPDATE) && ret;
		if (cs & RC_REAP)
			rc_reap(t, time, i, upd);
	}
	if ((cs & RC_SET) || ((cs & RC_UPDATE) && ret)) {
		rc_update(t, i, now);
		t->e[i & RC_IDX].ttl = ttl;
	}
	return ret;
}

/* "use TTL as seen before forwarding": a packet leaving by a device that
 * no socket of the hook's namespace sent had its TTL decremented. */
static __always_inline __u8 rc_ttl(const struct pkt *p)
{
	const struct nf_hook_state___xm *st = KPTR(struct nf_hook_state___xm, p->state);
	const struct sk_buff___xm *skb = KPTR(struct sk_buff___xm, p->skb);
	const struct sock___xm *sk;

	if (!BPF_CORE_READ(st, out))
		return p->ttl;
	sk = BPF_CORE_READ(skb, sk);
	if (!sk || (__u64)BPF_CORE_READ(sk, __sk_common.skc_net.net) != hook_net(p))
		return p->ttl + 1;
	return p->ttl;
}

static __always_inline struct rc_table *rc_get(__u32 slot)
{
	__u32 zero = 0;
	void *inner = bpf_map_lookup_elem(&rtables, &slot);

	return inner ? bpf_map_lookup_elem(inner, &zero) : NULL;
}

/* recent_mt: a global function, verified once. */
__noinline int recent_match(const struct xt_match *m, const struct pkt *p)
{
	struct rc_table *t;
	__u32 a[4] = {};
	__u64 now;
	__u8 ttl, fam;
	int ret;

	if (!m || !p)
		return -1;
	t = rc_get(m->ext);
	if (!t)
		return -1;
	if (p->v6) {
		for (int k = 0; k < 4; k++)
			a[k] = m->type == RC_SIDE_DEST ? p->dst[k] : p->src[k];
		fam = NFPROTO_IPV6;
	} else {
		a[0] = m->type == RC_SIDE_DEST ? p->dst[0] : p->src[0];
		fam = NFPROTO_IPV4;
	}
	ttl = rc_ttl(p);
	now = bpf_jiffies64();
	bpf_spin_lock(&t->lock);
	for (int k = 0; k < 4; k++)
		a[k] &= t->mask[k];
	ret = rc_match(t, m, a, fam, ttl, now);
	bpf_spin_unlock(&t->lock);
	return ret;
}

/* Run by the daemon: a write to the list's /proc file (recent_mt_proc_write
 * after parsing), or a rule that needs more timestamps than the list
 * keeps (recent_mt_check flushes it and grows them). 1: no such list. */
SEC("syscall")
int xtbpf_recent(struct xt_recent_ctl *a)
{
	struct rc_table *t = rc_get(a->slot);
	__u64 now = bpf_jiffies64();
	__u32 addr[4];
	int i;

	if (!t)
		return 1;
	a->jiffies = now;
	for (int k = 0; k < 4; k++)
		addr[k] = a->addr[k];
	bpf_spin_lock(&t->lock);
	switch (a->op) {
	case RC_OP_FLUSH:
		rc_flush(t);
		break;
	case RC_OP_GROW:
		if (a->stamps_mask > t->stamps_mask) {
			rc_flush(t);
			t->stamps_mask = a->stamps_mask;
		}
		break;
	case RC_OP_ADD:
	case RC_OP_DEL:
		i = rc_lookup(t, addr, a->family, 0);
		if (i < 0 && a->op == RC_OP_ADD)
			rc_init(t, addr, a->family, 0, now);
		else if (i >= 0 && a->op == RC_OP_ADD)
			rc_update(t, i, now);
		else if (i >= 0)
			rc_remove(t, i);
		break;
	}
	bpf_spin_unlock(&t->lock);
	return 0;
}
