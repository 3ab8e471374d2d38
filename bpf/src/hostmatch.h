/* Matches that read the host's state rather than the packet: addrtype
 * (the routing tables), owner (the sending socket) and mac (the link-layer
 * header in front of the packet). Each reads the kernel's own structures
 * under the RCU read lock the netfilter hook holds, through CO-RE
 * relocated probe reads, so it sees exactly what xt_addrtype, xt_owner and
 * xt_mac would see at that moment. The ___xm flavours name the fields of
 * kernel structures kernel.h leaves out. */
#pragma once

struct net___xm;

struct nf_hook_state___xm {
	struct net_device *in;
	struct net_device *out;
	struct net___xm *net;
} __attribute__((preserve_access_index));

typedef struct {
	struct net___xm *net;
} possible_net_t___xm;

struct ipv4_devconf___xm {
	int data[33];
} __attribute__((preserve_access_index));

struct in_device___xm {
	struct ipv4_devconf___xm cnf;
} __attribute__((preserve_access_index));

struct list_head___xm {
	struct list_head___xm *next;
} __attribute__((preserve_access_index));

struct net_device___xm {
	unsigned long priv_flags:32;
	possible_net_t___xm nd_net;
	struct in_device___xm *ip_ptr;
	unsigned short type;
	struct {
		struct list_head___xm upper;
	} adj_list;
	unsigned char priv[0];
} __attribute__((preserve_access_index));

struct netdev_adjacent___xm {
	struct net_device___xm *dev;
	_Bool master;
	struct list_head___xm list;
} __attribute__((preserve_access_index));

/* drivers/net/vrf.c: the table a VRF device and its ports route by. */
struct net_vrf {
	__u32 tb_id;
} __attribute__((preserve_access_index));

struct hlist_node___xm {
	struct hlist_node___xm *next;
} __attribute__((preserve_access_index));

struct hlist_head___xm {
	struct hlist_node___xm *first;
} __attribute__((preserve_access_index));

struct fib_table___xm {
	struct hlist_node___xm tb_hlist;
	__u32 tb_id;
	unsigned long *tb_data;
} __attribute__((preserve_access_index));

struct netns_ipv4___xm {
	struct hlist_head___xm *fib_table_hash;
	struct ipv4_devconf___xm *devconf_all;
} __attribute__((preserve_access_index));

struct uid_gid_extent {
	__u32 first;
	__u32 lower_first;
	__u32 count;
} __attribute__((preserve_access_index));

struct uid_gid_map {
	struct uid_gid_extent extent[5];
	__u32 nr_extents;
	struct uid_gid_extent *forward;
} __attribute__((preserve_access_index));

struct user_namespace___xm {
	struct uid_gid_map uid_map;
	struct uid_gid_map gid_map;
} __attribute__((preserve_access_index));

struct net___xm {
	struct netns_ipv4___xm ipv4;
	struct user_namespace___xm *user_ns;
} __attribute__((preserve_access_index));

struct key_vector {
	__u32 key;
	unsigned char pos;
	unsigned char bits;
	unsigned char slen;
	struct hlist_head___xm leaf;	/* shares its place with the child array */
} __attribute__((preserve_access_index));

struct tnode {
	struct key_vector *parent;
	struct key_vector kv[1];
} __attribute__((preserve_access_index));

struct fib_alias {
	struct hlist_node___xm fa_list;
	struct fib_info___xm *fa_info;
	__u8 fa_dscp;
	__u8 fa_type;
	__u8 fa_slen;
} __attribute__((preserve_access_index));

struct fib_nh_common {
	struct net_device___xm *nhc_dev;
	unsigned char nhc_flags;
} __attribute__((preserve_access_index));

struct fib_nh {
	struct fib_nh_common nh_common;
} __attribute__((preserve_access_index));

struct nh_info {
	_Bool reject_nh;
	struct fib_nh_common fib_nhc;
} __attribute__((preserve_access_index));

struct nexthop___xm;

struct nh_grp_entry {
	struct nexthop___xm *nh;
} __attribute__((preserve_access_index));

struct nh_group {
	__u16 num_nh;
	_Bool is_multipath;
	struct nh_grp_entry nh_entries[0];
} __attribute__((preserve_access_index));

struct nexthop___xm {
	_Bool is_group;
	struct nh_info *nh_info;
	struct nh_group *nh_grp;
} __attribute__((preserve_access_index));

struct fib_info___xm {
	unsigned int fib_flags;
	unsigned char fib_dead;
	int fib_nhs;
	struct nexthop___xm *nh;
	struct fib_nh fib_nh[0];
} __attribute__((preserve_access_index));

#define RTN_UNICAST 1
#define RTN_BROADCAST 3
#define RTN_MULTICAST 5
#define RTN_BLACKHOLE 6	/* this type and those above are errors (fib_props) */
#define RT_TABLE_LOCAL 255
#define FIB_TABLE_HASHSZ 256	/* CONFIG_IP_MULTIPLE_TABLES */
#define KEYLENGTH 32
#define RTNH_F_DEAD 1
#define RTNH_F_LINKDOWN 16
#define IFF_L3MDEV_MASTER 0x40000
#define IFF_L3MDEV_SLAVE 0x200000
#define IPV4_DEVCONF_IGNORE_ROUTES_WITH_LINKDOWN 29

/* The kernel object a u64 in struct pkt points to. */
#define KPTR(type, v) ((const type *)(unsigned long)(v))

static __always_inline __u64 rd_ptr(__u64 addr)
{
	__u64 v = 0;

	bpf_probe_read_kernel(&v, sizeof(v), (const void *)(unsigned long)addr);
	return v;
}

/* xt_net(par): the hook's namespace. BPF_PROG_TEST_RUN leaves state->net
 * unset, so a test run falls back to its devices' namespace, which a real
 * hook's state->net always equals. */
static __always_inline __u64 hook_net(const struct pkt *p)
{
	const struct nf_hook_state___xm *st = KPTR(struct nf_hook_state___xm, p->state);
	__u64 net = (__u64)BPF_CORE_READ(st, net);
	const struct net_device___xm *dev;

	if (net)
		return net;
	dev = (const void *)BPF_CORE_READ(st, out);
	if (!dev)
		dev = (const void *)BPF_CORE_READ(st, in);
	return dev ? (__u64)BPF_CORE_READ(dev, nd_net.net) : 0;
}

/* l3mdev_fib_table: the table of the VRF a device is, or is a port of;
 * 0 for any other device. Only the VRF driver sets these flags. */
static __always_inline __u32 l3mdev_table(__u64 dev)
{
	const struct net_device___xm *d = KPTR(struct net_device___xm, dev);
	const struct netdev_adjacent___xm *up;
	__u64 head = dev + bpf_core_field_offset(struct net_device___xm, adj_list.upper);
	__u32 flags;
	__u64 first;

	if (!dev || !bpf_core_type_exists(struct net_vrf))
		return 0;
	flags = BPF_CORE_READ_BITFIELD_PROBED(d, priv_flags);
	if (flags & IFF_L3MDEV_SLAVE) {
		/* netdev_master_upper_dev_get_rcu */
		first = rd_ptr(head);
		if (first == head)
			return 0;
		up = (const void *)(first - bpf_core_field_offset(struct netdev_adjacent___xm, list));
		if (!BPF_CORE_READ(up, master))
			return 0;
		d = (const void *)BPF_CORE_READ(up, dev);
	} else if (!(flags & IFF_L3MDEV_MASTER)) {
		return 0;
	}
	return BPF_CORE_READ((const struct net_vrf *)((const char *)d + bpf_core_field_offset(struct net_device___xm, priv)), tb_id);
}

/* fib_table_lookup's walk as a state machine, one bpf_loop step per
 * node, alias or nexthop visited, so that any table the kernel can hold
 * is walked to the end. */
enum fib_state {
	FW_TABLE,	/* fib_get_table: the hash bucket's tables, n the node at hand */
	FW_DESCEND,	/* step 1: travel to the longest prefix match */
	FW_PREFIX,	/* step 2: sort out leaves */
	FW_BACK,	/* backtrace: strip a bit off cindex, or ascend */
	FW_ALIAS,	/* step 3: the leaf's aliases, fa the one at hand */
	FW_NH,		/* the alias's own nexthops, nhsel the one at hand */
	FW_NHOBJ,	/* the alias's nexthop object (group entry nhsel) */
	FW_DONE,
};

struct fib_walk {
	__u64 pn;	/* struct key_vector *: where backtracking resumes */
	__u64 n;
	__u64 fa;	/* struct fib_alias * */
	__u64 fi;	/* struct fib_info * of the alias that matched */
	__u32 key;
	__u32 cindex;
	__u32 index;	/* key ^ leaf key, for the aliases' prefix lengths */
	__u32 nhsel;
	__u32 tb_id;
	__s32 type;	/* RTN_* found; -1: no route (an error or none); -2: no table */
	__u8 state;
	__u8 fa_type;
};

static __always_inline __u64 kv_child(__u64 n, __u64 i)
{
	return rd_ptr(n + bpf_core_field_offset(struct key_vector, leaf) + i * sizeof(__u64));
}

static __always_inline __u64 kv_parent(__u64 n)
{
	return rd_ptr(n - bpf_core_field_offset(struct tnode, kv) + bpf_core_field_offset(struct tnode, parent));
}

static __always_inline __u32 kv_key(__u64 n)
{
	return BPF_CORE_READ(KPTR(struct key_vector, n), key);
}

static __always_inline __u8 kv_pos(__u64 n)
{
	return BPF_CORE_READ(KPTR(struct key_vector, n), pos);
}

static __always_inline __u8 kv_bits(__u64 n)
{
	return BPF_CORE_READ(KPTR(struct key_vector, n), bits);
}

static __always_inline __u8 kv_slen(__u64 n)
{
	return BPF_CORE_READ(KPTR(struct key_vector, n), slen);
}

static __always_inline long fib_done(struct fib_walk *w, __s32 type)
{
	w->type = type;
	w->state = FW_DONE;
	return 1;
}

/* A leaf: its aliases are tried in list order. */
static __always_inline long fib_found(struct fib_walk *w)
{
	w->index = w->key ^ kv_key(w->n);
	w->fa = rd_ptr(w->n + bpf_core_field_offset(struct key_vector, leaf));
	if (w->fa)
		w->fa -= bpf_core_field_offset(struct fib_alias, fa_list);
	w->state = FW_ALIAS;
	return 0;
}

static long fib_table(struct fib_walk *w)
{
	__u64 tb = w->n - bpf_core_field_offset(struct fib_table___xm, tb_hlist);

	if (!w->n)
		return fib_done(w, -2);
	if (BPF_CORE_READ(KPTR(struct fib_table___xm, tb), tb_id) != w->tb_id) {
		w->n = rd_ptr(w->n + bpf_core_field_offset(struct hlist_node___xm, next));
		return 0;
	}
	/* The trie's root is tb_data; its only child heads the trie. */
	w->pn = (__u64)BPF_CORE_READ(KPTR(struct fib_table___xm, tb), tb_data);
	w->n = kv_child(w->pn, 0);
	if (!w->n)
		return fib_done(w, -1);
	w->cindex = 0;
	w->state = FW_DESCEND;
	return 0;
}

static long fib_descend(struct fib_walk *w)
{
	__u8 pos = kv_pos(w->n), bits = kv_bits(w->n);
	__u64 index = (__u64)(w->key ^ kv_key(w->n)) >> (pos & 63);

	if (index >= (1ULL << (bits & 63))) {
		w->state = FW_PREFIX;
		return 0;
	}
	if (!bits)
		return fib_found(w);
	if (kv_slen(w->n) > pos) {
		w->pn = w->n;
		w->cindex = index;
	}
	w->n = kv_child(w->n, index);
	if (!w->n)
		w->state = FW_BACK;
	return 0;
}

static long fib_prefix(struct fib_walk *w)
{
	__u32 prefix = kv_key(w->n);
	__u64 child;

	/* prefix_mismatch, or no longer prefix below this node */
	if (((w->key ^ prefix) & (prefix | -prefix)) || kv_slen(w->n) == kv_pos(w->n)) {
		w->state = FW_BACK;
		return 0;
	}
	if (!kv_bits(w->n))
		return fib_found(w);
	child = kv_child(w->n, 0);
	if (child)
		w->n = child;
	else
		w->state = FW_BACK;
	return 0;
}

static long fib_back(struct fib_walk *w)
{
	__u32 pkey;
	__u8 pos;

	if (!w->cindex) {
		pkey = kv_key(w->pn);
		if (kv_pos(w->pn) >= KEYLENGTH)
			return fib_done(w, -1);
		w->pn = kv_parent(w->pn);
		pos = kv_pos(w->pn);
		w->cindex = (__u64)(pkey ^ kv_key(w->pn)) >> (pos & 63);
		return 0;
	}
	w->cindex &= w->cindex - 1;
	w->n = kv_child(w->pn, w->cindex);
	if (w->n)
		w->state = FW_PREFIX;
	return 0;
}

/* ip_ignore_linkdown: the device's or every device's
 * ignore_routes_with_linkdown. */
static __always_inline int ignore_linkdown(__u64 dev)
{
	const struct net_device___xm *d = KPTR(struct net_device___xm, dev);
	const struct in_device___xm *in = d ? BPF_CORE_READ(d, ip_ptr) : NULL;
	const struct net___xm *net;

	if (!in)
		return 0;
	net = BPF_CORE_READ(d, nd_net.net);
	return BPF_CORE_READ(net, ipv4.devconf_all, data[IPV4_DEVCONF_IGNORE_ROUTES_WITH_LINKDOWN - 1]) ||
	       BPF_CORE_READ(in, cnf.data[IPV4_DEVCONF_IGNORE_ROUTES_WITH_LINKDOWN - 1]);
}

/* fib_lookup_good_nhc for a flow with no output interface. */
static __always_inline int nhc_good(__u64 nhc)
{
	__u8 flags = BPF_CORE_READ(KPTR(struct fib_nh_common, nhc), nhc_flags);

	if (flags & RTNH_F_DEAD)
		return 0;
	return !((flags & RTNH_F_LINKDOWN) &&
		 ignore_linkdown((__u64)BPF_CORE_READ(KPTR(struct fib_nh_common, nhc), nhc_dev)));
}

static __always_inline __u64 nh_info_nhc(__u64 nh)
{
	__u64 nhi = (__u64)BPF_CORE_READ(KPTR(struct nexthop___xm, nh), nh_info);

	return nhi + bpf_core_field_offset(struct nh_info, fib_nhc);
}

static __always_inline __u64 nh_group_entry(__u64 grp, __u32 i)
{
	return rd_ptr(grp + bpf_core_field_offset(struct nh_group, nh_entries) +
		      (__u64)i * bpf_core_type_size(struct nh_grp_entry) +
		      bpf_core_field_offset(struct nh_grp_entry, nh));
}

/* nexthop_is_blackhole */
static __always_inline int nh_blackhole(__u64 nh)
{
	const struct nh_group *grp;

	if (BPF_CORE_READ(KPTR(struct nexthop___xm, nh), is_group)) {
		grp = BPF_CORE_READ(KPTR(struct nexthop___xm, nh), nh_grp);
		if (BPF_CORE_READ(grp, num_nh) > 1)
			return 0;
		nh = nh_group_entry((__u64)grp, 0);
	}
	return BPF_CORE_READ(KPTR(struct nexthop___xm, nh), nh_info, reject_nh);
}

static __always_inline __u64 next_alias(__u64 fa)
{
	__u64 node = rd_ptr(fa + bpf_core_field_offset(struct fib_alias, fa_list) +
			    bpf_core_field_offset(struct hlist_node___xm, next));

	return node ? node - bpf_core_field_offset(struct fib_alias, fa_list) : 0;
}

static long fib_alias_step(struct fib_walk *w)
{
	const struct fib_alias *fa = KPTR(struct fib_alias, w->fa);
	const struct fib_info___xm *fi;
	__u8 slen, type;

	if (!w->fa) {
		w->state = FW_BACK;	/* miss */
		return 0;
	}
	slen = BPF_CORE_READ(fa, fa_slen);
	fi = BPF_CORE_READ(fa, fa_info);
	type = BPF_CORE_READ(fa, fa_type);
	/* Only aliases without a DSCP match the lookup's flow (tos 0). */
	if ((__u64)w->index >= (1ULL << (slen & 63)) || BPF_CORE_READ(fa, fa_dscp) ||
	    BPF_CORE_READ(fi, fib_dead))
		goto next;
	if (type >= RTN_BLACKHOLE)
		return fib_done(w, -1);
	if (BPF_CORE_READ(fi, fib_flags) & RTNH_F_DEAD)
		goto next;
	w->fi = (__u64)fi;
	w->fa_type = type;
	w->nhsel = 0;
	if (BPF_CORE_READ(fi, nh)) {
		if (nh_blackhole((__u64)BPF_CORE_READ(fi, nh)))
			return fib_done(w, -1);
		w->state = FW_NHOBJ;
		return 0;
	}
	w->state = FW_NH;
	return 0;
next:
	w->fa = next_alias(w->fa);
	return 0;
}

static long fib_nh_step(struct fib_walk *w)
{
	const struct fib_info___xm *fi = KPTR(struct fib_info___xm, w->fi);
	__u64 nhc;

	if ((__s32)w->nhsel >= BPF_CORE_READ(fi, fib_nhs)) {
		w->fa = next_alias(w->fa);
		w->state = FW_ALIAS;
		return 0;
	}
	nhc = w->fi + bpf_core_field_offset(struct fib_info___xm, fib_nh) +
	      (__u64)w->nhsel * bpf_core_type_size(struct fib_nh) + bpf_core_field_offset(struct fib_nh, nh_common);
	if (nhc_good(nhc))
		return fib_done(w, w->fa_type);
	w->nhsel++;
	return 0;
}

/* nexthop_get_nhc_lookup: the first good nexthop of the object or of its
 * group; none is a miss, which backtracks without trying later aliases. */
static long fib_nhobj_step(struct fib_walk *w)
{
	const struct fib_info___xm *fi = KPTR(struct fib_info___xm, w->fi);
	__u64 nh = (__u64)BPF_CORE_READ(fi, nh);
	const struct nh_group *grp;

	if (!BPF_CORE_READ(KPTR(struct nexthop___xm, nh), is_group)) {
		if (nhc_good(nh_info_nhc(nh)))
			return fib_done(w, w->fa_type);
		w->state = FW_BACK;
		return 0;
	}
	grp = BPF_CORE_READ(KPTR(struct nexthop___xm, nh), nh_grp);
	if (w->nhsel >= BPF_CORE_READ(grp, num_nh)) {
		w->state = FW_BACK;
		return 0;
	}
	if (nhc_good(nh_info_nhc(nh_group_entry((__u64)grp, w->nhsel))))
		return fib_done(w, w->fa_type);
	w->nhsel++;
	return 0;
}

static long fib_step(__u64 i, struct fib_walk *w)
{
	switch (w->state) {
	case FW_TABLE:
		return fib_table(w);
	case FW_DESCEND:
		return fib_descend(w);
	case FW_PREFIX:
		return fib_prefix(w);
	case FW_BACK:
		return fib_back(w);
	case FW_ALIAS:
		return fib_alias_step(w);
	case FW_NH:
		return fib_nh_step(w);
	case FW_NHOBJ:
		return fib_nhobj_step(w);
	}
	return 1;
}

/* fib_info_nhc(fi, 0)->nhc_dev: the device __inet_dev_addr_type compares
 * with the limiting one. */
static __always_inline __u64 first_nh_dev(__u64 fi)
{
	__u64 nh = (__u64)BPF_CORE_READ(KPTR(struct fib_info___xm, fi), nh);
	const struct nh_group *grp;
	__u64 nhc;

	if (!nh) {
		nhc = fi + bpf_core_field_offset(struct fib_info___xm, fib_nh) + bpf_core_field_offset(struct fib_nh, nh_common);
	} else {
		if (BPF_CORE_READ(KPTR(struct nexthop___xm, nh), is_group)) {
			grp = BPF_CORE_READ(KPTR(struct nexthop___xm, nh), nh_grp);
			if (BPF_CORE_READ(grp, is_multipath))
				nh = nh_group_entry((__u64)grp, 0);
		}
		nhc = nh_info_nhc(nh);
	}
	return (__u64)BPF_CORE_READ(KPTR(struct fib_nh_common, nhc), nhc_dev);
}

/* inet_dev_addr_type(net, dev, addr), addr in network order. The lookup
 * is the kernel's own fib_table_lookup on the namespace's local table
 * (the VRF's table for a device of a VRF): reading the trie the kernel
 * routes by, rather than a copy kept current from rtnetlink, gives the
 * kernel's answer at the very moment of the packet, including what no
 * notification reports (the local table sharing main's trie until the
 * first policy rule, aliases with a TOS, nexthops marked dead or link
 * down) and with no window after a change. Netfilter programs may not
 * call bpf_fib_lookup, which would answer another question anyway (a
 * full policy lookup). */
static __always_inline __u32 inet_dev_addr_type(__u64 net, __u64 dev, __u32 addr)
{
	struct fib_walk w = {};
	__u32 a = bpf_ntohl(addr);
	__u64 hash;

	/* ipv4_is_zeronet is 0.0.0.0 alone since Linux 5.3 */
	if (a == 0 || a == 0xffffffff)
		return RTN_BROADCAST;
	if ((a >> 28) == 0xe)
		return RTN_MULTICAST;
	w.tb_id = l3mdev_table(dev);
	if (!w.tb_id)
		w.tb_id = RT_TABLE_LOCAL;
	hash = (__u64)BPF_CORE_READ(KPTR(struct net___xm, net), ipv4.fib_table_hash);
	w.n = rd_ptr(hash + (w.tb_id & (FIB_TABLE_HASHSZ - 1)) * bpf_core_type_size(struct hlist_head___xm) +
		     bpf_core_field_offset(struct hlist_head___xm, first));
	w.key = a;
	w.state = FW_TABLE;
	bpf_loop(1 << 20, fib_step, &w, 0);
	if (w.state == FW_DONE && w.type == -2)
		return RTN_BROADCAST;	/* no such table: the kernel's ret stays RTN_BROADCAST */
	if (w.state != FW_DONE || w.type < 0)
		return RTN_UNICAST;
	if (dev && dev != first_nh_dev(w.fi))
		return RTN_UNICAST;
	return w.type;
}

/* match_type6 for the types that need no route lookup (the translator
 * leaves the others to the kernel): __ipv6_addr_type's multicast,
 * unicast and unspecified, which must all hold. */
static __always_inline int match_type6(const __u32 *a, __u16 mask)
{
	int mc = (bpf_ntohl(a[0]) >> 24) == 0xff;
	int any = (a[0] | a[1] | a[2] | a[3]) == 0;
	int mapped = (a[0] | a[1]) == 0 && bpf_ntohl(a[2]) == 0xffff;

	if ((mask & ADDRTYPE_MULTICAST) && !mc)
		return 0;
	if ((mask & ADDRTYPE_UNICAST) && (mc || any || mapped))
		return 0;
	return !((mask & ADDRTYPE_UNSPEC) && !any);
}

static __noinline int addrtype_ok(const struct pkt *p, __u32 addr, __u16 mask, __u64 dev)
{
	if (!p)
		return 0;
	return (mask & (1U << (inet_dev_addr_type(hook_net(p), dev, addr) & 15))) != 0;
}

/* addrtype_mt_v0 / addrtype_mt_v1 */
static __always_inline int addrtype_match(const struct xt_match *m, const struct pkt *p)
{
	const struct nf_hook_state___xm *st = KPTR(struct nf_hook_state___xm, p->state);
	__u16 src = m->arg[0], dst = m->arg[1];
	__u64 dev = 0;
	int ok;

	if (m->option == ADDRTYPE_LIMIT_IN)
		dev = (__u64)BPF_CORE_READ(st, in);
	else if (m->option == ADDRTYPE_LIMIT_OUT)
		dev = (__u64)BPF_CORE_READ(st, out);
	if (src) {
		ok = p->v6 ? match_type6(p->src, src) : addrtype_ok(p, p->src[0], src, dev);
		if (!(ok ^ (m->inv & 1)))
			return 0;
	}
	if (dst) {
		ok = p->v6 ? match_type6(p->dst, dst) : addrtype_ok(p, p->dst[0], dst, dev);
		if (!(ok ^ ((m->inv >> 1) & 1)))
			return 0;
	}
	return 1;
}

struct sock___xm;

struct sock_common___xm {
	volatile unsigned char skc_state;
	possible_net_t___xm skc_net;
	struct sock___xm *skc_listener;
} __attribute__((preserve_access_index));

struct kgid {
	__u32 val;
} __attribute__((preserve_access_index));

struct group_info___xm {
	int ngroups;
	struct kgid gid[0];
} __attribute__((preserve_access_index));

struct cred___xm {
	struct kgid fsuid;	/* kuid_t has the same layout */
	struct kgid fsgid;
	struct group_info___xm *group_info;
} __attribute__((preserve_access_index));

struct file___xm {
	const struct cred___xm *f_cred;
} __attribute__((preserve_access_index));

struct socket___xm {
	struct file___xm *file;
} __attribute__((preserve_access_index));

struct sock___xm {
	struct sock_common___xm __sk_common;
	struct socket___xm *sk_socket;
} __attribute__((preserve_access_index));

struct sk_buff___xm {
	struct net_device___xm *dev;
	struct sock___xm *sk;
	__u16 mac_header;
	unsigned char *head;
	unsigned char *data;
} __attribute__((preserve_access_index));

#define TCP_TIME_WAIT 6
#define TCP_NEW_SYN_RECV 12
#define OWNER_UID 0x01
#define OWNER_GID 0x02
#define OWNER_SOCKET 0x04
#define OWNER_SUPPL_GROUPS 0x08
#define UID_GID_MAP_MAX_BASE_EXTENTS 5
#define ARPHRD_ETHER 1
#define ETH_HLEN 14

struct id_search {
	__u64 extents;	/* struct uid_gid_extent * */
	__u32 n;
	__u32 id;
	__u32 out;
};

static long id_extent_step(__u64 i, struct id_search *s)
{
	const struct uid_gid_extent *e;
	__u32 first, last;

	if (i >= s->n)
		return 1;
	e = (const void *)(s->extents + i * bpf_core_type_size(struct uid_gid_extent));
	first = BPF_CORE_READ(e, first);
	last = first + BPF_CORE_READ(e, count) - 1;
	if (s->id >= first && s->id <= last) {
		s->out = s->id - first + BPF_CORE_READ(e, lower_first);
		return 1;
	}
	return 0;
}

/* map_id_range_down(map, id, 1), as make_kuid and make_kgid use it: the
 * extents do not overlap, so a linear search finds the extent the
 * kernel's binary search over the sorted forward array finds. */
static __noinline __u32 map_id_down(__u64 map, __u32 id)
{
	const struct uid_gid_map *m = KPTR(struct uid_gid_map, map);
	struct id_search s = {.id = id, .out = (__u32)-1};

	s.n = BPF_CORE_READ(m, nr_extents);
	if (s.n <= UID_GID_MAP_MAX_BASE_EXTENTS)
		s.extents = map + bpf_core_field_offset(struct uid_gid_map, extent);
	else
		s.extents = (__u64)BPF_CORE_READ(m, forward);
	bpf_loop(s.n, id_extent_step, &s, 0);
	return s.out;
}

/* Whether a supplementary group lies in [lo, hi]: the kernel's list is
 * sorted (groups_sort), so the first group not below lo decides. */
static __always_inline int group_in(const struct group_info___xm *gi, __u32 lo, __u32 hi)
{
	__u32 l = 0, h = BPF_CORE_READ(gi, ngroups), mid, g;
	__u64 gids = (__u64)gi + bpf_core_field_offset(struct group_info___xm, gid);

	for (int i = 0; i < 17 && l < h; i++) {	/* NGROUPS_MAX is 65536 */
		mid = l + (h - l) / 2;
		g = 0;
		bpf_probe_read_kernel(&g, sizeof(g), (const void *)(gids + (__u64)mid * sizeof(__u32)));
		if (g < lo)
			l = mid + 1;
		else
			h = mid;
	}
	if (l >= BPF_CORE_READ(gi, ngroups))
		return 0;
	g = 0;
	bpf_probe_read_kernel(&g, sizeof(g), (const void *)(gids + (__u64)l * sizeof(__u32)));
	return g <= hi;
}

/* skb_to_full_sk */
static __always_inline const struct sock___xm *full_sk(const struct pkt *p)
{
	const struct sk_buff___xm *skb = KPTR(struct sk_buff___xm, p->skb);
	const struct sock___xm *sk = BPF_CORE_READ(skb, sk);

	if (sk && BPF_CORE_READ(sk, __sk_common.skc_state) == TCP_NEW_SYN_RECV)
		sk = BPF_CORE_READ(sk, __sk_common.skc_listener);
	if (sk && BPF_CORE_READ(sk, __sk_common.skc_state) == TCP_TIME_WAIT)
		sk = NULL;
	return sk;
}

/* owner_mt. x holds uid min, max, gid min, max in addr[0], the match
 * bits in flags and the invert bits in invert. */
static __noinline int owner_match(const struct xt_ext *x, const struct pkt *p)
{
	const struct sock___xm *sk = full_sk(p);
	__u8 match = x->flags, inv = x->invert;
	__u64 net = hook_net(p), userns;
	const struct socket___xm *sock;
	const struct file___xm *filp;
	const struct cred___xm *cred;
	__u32 lo, hi, id;
	int in;

	sock = sk ? BPF_CORE_READ(sk, sk_socket) : NULL;
	if (!sock || net != (__u64)BPF_CORE_READ(sk, __sk_common.skc_net.net))
		return (match ^ inv) == 0;
	if (match & inv & OWNER_SOCKET)
		return 0;
	filp = BPF_CORE_READ(sock, file);
	if (!filp)
		return ((match ^ inv) & (OWNER_UID | OWNER_GID)) == 0;
	cred = BPF_CORE_READ(filp, f_cred);
	userns = (__u64)BPF_CORE_READ(KPTR(struct net___xm, net), user_ns);
	if (match & OWNER_UID) {
		lo = map_id_down(userns + bpf_core_field_offset(struct user_namespace___xm, uid_map), x->addr[0][0]);
		hi = map_id_down(userns + bpf_core_field_offset(struct user_namespace___xm, uid_map), x->addr[0][1]);
		id = BPF_CORE_READ(cred, fsuid.val);
		if ((id >= lo && id <= hi) ^ !(inv & OWNER_UID))
			return 0;
	}
	if (match & OWNER_GID) {
		lo = map_id_down(userns + bpf_core_field_offset(struct user_namespace___xm, gid_map), x->addr[0][2]);
		hi = map_id_down(userns + bpf_core_field_offset(struct user_namespace___xm, gid_map), x->addr[0][3]);
		id = BPF_CORE_READ(cred, fsgid.val);
		in = id >= lo && id <= hi;
		if (!in && (match & OWNER_SUPPL_GROUPS) && BPF_CORE_READ(cred, group_info))
			in = group_in(BPF_CORE_READ(cred, group_info), lo, hi);
		if (in ^ !(inv & OWNER_GID))
			return 0;
	}
	return 1;
}

/* mac_mt. arg holds the address; inv is the kernel's "ret ^= invert"
 * folded to 0 (plain), 1 (inverted) or 2 (an invert value with other
 * bits, which makes the result true whatever the address). */
static __noinline int mac_match(const struct xt_match *m, const struct pkt *p)
{
	const struct sk_buff___xm *skb = KPTR(struct sk_buff___xm, p->skb);
	const struct net_device___xm *dev = BPF_CORE_READ(skb, dev);
	const __u8 *want = (const __u8 *)m->arg;
	__u8 src[6];
	__u64 mac;
	int eq = 1;

	if (!dev || BPF_CORE_READ(dev, type) != ARPHRD_ETHER)
		return 0;
	mac = (__u64)BPF_CORE_READ(skb, head) + BPF_CORE_READ(skb, mac_header);
	if (mac + ETH_HLEN > (__u64)BPF_CORE_READ(skb, data))
		return 0;
	if (bpf_probe_read_kernel(src, sizeof(src), (const void *)(mac + 6)))
		return 0;
	if (m->inv > 1)
		return 1;
	for (int i = 0; i < 6; i++)
		eq &= src[i] == want[i];
	return eq ^ m->inv;
}

/* The matches of this file, as a global function verified once on its
 * own, like more_match. */
__noinline int host_match(const struct xt_match *m, const struct pkt *p, const struct xt_ext *x)
{
	if (!m || !p)
		return -1;
	switch (m->kind) {
	case MATCH_ADDRTYPE:
		return addrtype_match(m, p);
	case MATCH_MAC:
		return mac_match(m, p);
	case MATCH_OWNER:
		return x ? owner_match(x, p) : -1;
	}
	return -1;
}
