/* The few kernel structures the classifier reads, resolved against the
 * running kernel's BTF by CO-RE relocations, so no vmlinux.h is needed. */
#pragma once

struct net_device {
	char name[16];
	int ifindex;
	unsigned int flags;
	unsigned short type;
	unsigned short hard_header_len;
} __attribute__((preserve_access_index));

struct net;

struct sock_common {
	volatile unsigned char skc_state;
	struct {
		struct net *net;
	} skc_net;
} __attribute__((preserve_access_index));

struct kuid_t_ {
	__u32 val;
};

struct cred {
	struct kuid_t_ fsuid;
	struct kuid_t_ fsgid;
} __attribute__((preserve_access_index));

struct file {
	const struct cred *f_cred;
} __attribute__((preserve_access_index));

struct socket {
	struct file *file;
} __attribute__((preserve_access_index));

struct sock {
	struct sock_common __sk_common;
	struct socket *sk_socket;
} __attribute__((preserve_access_index));

struct sk_buff {
	struct net_device *dev;
	struct sock *sk;
	unsigned long _skb_refdst;
	unsigned int len;
	__u8 pkt_type:3;
	__u8 ip_summed:2;
	__u8 csum_valid:1;
	__u32 mark;
	__be16 vlan_proto;
	__u16 vlan_tci;
	__u16 network_header;
	__u16 mac_header;
	unsigned char *head;
	unsigned long _nfct;
} __attribute__((preserve_access_index));

/* The IPv4 route an skb carries (skb->_skb_refdst without its low bit). */
struct rtable {
	unsigned int rt_flags;
	__u8 rt_is_input;
} __attribute__((preserve_access_index));

union nf_inet_addr {
	__u32 all[4];
} __attribute__((preserve_access_index));

struct nf_conntrack_man {
	union nf_inet_addr u3;
	union {
		__be16 all;
	} u;
} __attribute__((preserve_access_index));

struct nf_conntrack_tuple {
	struct nf_conntrack_man src;
	struct {
		union nf_inet_addr u3;
		union {
			__be16 all;
		} u;
		__u8 protonum;
	} dst;
} __attribute__((preserve_access_index));

struct nf_conntrack_tuple_hash {
	struct nf_conntrack_tuple tuple;
} __attribute__((preserve_access_index));

struct nf_conn {
	__u32 timeout;
	struct nf_conntrack_tuple_hash tuplehash[2];
	unsigned long status;
} __attribute__((preserve_access_index));

struct nf_hook_state {
	__u8 hook;
	__u8 pf;
	struct net_device *in;
	struct net_device *out;
	struct sock *sk;
	struct net *net;
} __attribute__((preserve_access_index));

struct bpf_nf_ctx {
	const struct nf_hook_state *state;
	struct sk_buff *skb;
} __attribute__((preserve_access_index));

extern int bpf_dynptr_from_skb(struct __sk_buff *skb, __u64 flags,
			       struct bpf_dynptr *ptr__uninit) __ksym;
extern void *bpf_dynptr_slice(const struct bpf_dynptr *ptr, __u32 offset,
			      void *buffer, __u32 buffer__szk) __ksym;
extern int bpf_dynptr_clone(const struct bpf_dynptr *ptr, struct bpf_dynptr *clone__uninit) __ksym;

/* Open-coded loops (bpf_for): they run in the caller's frame, which the
 * walk's stack budget needs. */
struct bpf_iter_num {
	__u64 __opaque[1];
} __attribute__((aligned(8)));

extern int bpf_iter_num_new(struct bpf_iter_num *it, int start, int end) __ksym;
extern int *bpf_iter_num_next(struct bpf_iter_num *it) __ksym;
extern void bpf_iter_num_destroy(struct bpf_iter_num *it) __ksym;
