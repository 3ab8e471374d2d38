//go:build ignore

/* libxtbpf.so: preloaded into iptables-legacy and friends, it sends their
 * IPT_SO_* / IP6T_SO_* socket options to xtbpfd instead of the kernel.
 * Caller memory is only ever touched through send/recv, so a bad pointer
 * becomes EFAULT (as in the kernel) rather than a crash.
 * The build constraint above keeps the Go tool out of this file, which
 * shares its directory with package kmod. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "wire.h"

#define DEFAULT_SOCKET "/run/xtbpf/xtbpf.sock"
#define SO_FIRST 64 /* IPT_SO_SET_REPLACE, IPT_SO_GET_INFO */
#define SO_LAST_SET 65 /* IPT_SO_SET_ADD_COUNTERS */
#define SO_LAST_GET 67 /* IPT_SO_GET_REVISION_TARGET */
/* ip6tables' revision queries: at SOL_IPV6, 66 and 67 are IPV6_RECVTCLASS
 * and IPV6_TCLASS, which belong to the kernel. */
#define SO6_REV_MATCH 68
#define SO6_REV_TARGET 69

typedef int (*getsockopt_fn)(int, int, int, void *, socklen_t *);
typedef int (*setsockopt_fn)(int, int, int, const void *, socklen_t);

static int intercepted(int level, int optname, int last)
{
	if (level == SOL_IP)
		return optname >= SO_FIRST && optname <= last;
	if (level != SOL_IPV6)
		return 0;
	if (optname >= SO_FIRST && optname <= SO_LAST_SET)
		return 1;
	return last == SO_LAST_GET && (optname == SO6_REV_MATCH || optname == SO6_REV_TARGET);
}

static const char *socket_path(void)
{
	const char *p = getenv("XTBPF_SOCKET");

	return p && *p ? p : DEFAULT_SOCKET;
}

static void *next(const char *name)
{
	void *f = dlsym(RTLD_NEXT, name);

	if (!f)
		fprintf(stderr, "xtbpf: dlsym %s: %s\n", name, dlerror());
	return f;
}

static int real_get(int fd, int level, int optname, void *optval, socklen_t *optlen)
{
	static getsockopt_fn f;

	if (!f && !(f = (getsockopt_fn)next("getsockopt")))
		return errno = ENOSYS, -1;
	return f(fd, level, optname, optval, optlen);
}

static int real_set(int fd, int level, int optname, const void *optval, socklen_t optlen)
{
	static setsockopt_fn f;

	if (!f && !(f = (setsockopt_fn)next("setsockopt")))
		return errno = ENOSYS, -1;
	return f(fd, level, optname, optval, optlen);
}

/* Prints the first problem only: iptables retries a failed call and then
 * prints its own error, and one line naming the cause is enough. */
static void say(const char *what, const char *why)
{
	static int said;

	if (!__atomic_exchange_n(&said, 1, __ATOMIC_RELAXED))
		fprintf(stderr, "xtbpf: %s xtbpfd at %s: %s\n", what, socket_path(), why);
}

/* Fails the call with EIO after saying why; returns -1. */
static int bad(const char *why)
{
	say("bad reply from", why);
	errno = EIO;
	return -1;
}

/* Falling through to the kernel would split the firewall in two, so an
 * unreachable daemon fails the call; iptables then prints its own error. */
static int unreachable(int err)
{
	say("cannot reach", strerror(err));
	errno = ECONNREFUSED;
	return -1;
}

static int dial(void)
{
	const char *path = socket_path();
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd;

	if (strlen(path) >= sizeof(sa.sun_path))
		return unreachable(ENAMETOOLONG);
	strcpy(sa.sun_path, path);
	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return unreachable(errno);
	while (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		if (errno == EISCONN)
			break;
		if (errno == EACCES) {
			/* The socket is root's alone (0600). A caller it keeps
			 * out gets the kernel's errno for a caller without
			 * CAP_NET_ADMIN, as silently. (A non-root caller that
			 * holds CAP_NET_ADMIN is kept out too, where the kernel
			 * would let it in.) */
			close(fd);
			errno = EPERM;
			return -1;
		}
		if (errno != EINTR) {
			int err = errno;

			close(fd);
			return unreachable(err);
		}
	}
	return fd;
}

/* A failed send means the caller's fd or buffer is bad (answer as the
 * kernel would) or the daemon went away (EIO). */
static int send_failed(void)
{
	if (errno == EBADF || errno == EFAULT)
		return -1;
	say("cannot send to", strerror(errno));
	errno = EIO;
	return -1;
}

static int send_request(int conn, int sockfd, const struct xtbpf_req *req, const char *payload)
{
	char ctl[CMSG_SPACE(sizeof(int))] = { 0 };
	struct iovec iov = { .iov_base = (void *)req, .iov_len = sizeof(*req) };
	struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl, .msg_controllen = sizeof(ctl) };
	struct cmsghdr *c = CMSG_FIRSTHDR(&m);
	uint32_t off = 0;
	ssize_t n;

	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(c), &sockfd, sizeof(int));
	while ((n = sendmsg(conn, &m, MSG_NOSIGNAL)) < 0 && errno == EINTR)
		;
	if (n < 0)
		return send_failed();
	while (off < req->payload_len) {
		uint32_t len = req->payload_len - off;

		if (len > XTBPF_MAX_CHUNK)
			len = XTBPF_MAX_CHUNK;
		while ((n = send(conn, payload + off, len, MSG_NOSIGNAL)) < 0 && errno == EINTR)
			;
		if (n < 0)
			return send_failed();
		off += len;
	}
	return 0;
}

/* MSG_TRUNC makes recv report a message's full length, so an oversize
 * message is detected while only len bytes are written. */
static ssize_t recv_msg(int conn, void *buf, size_t len)
{
	ssize_t n;

	while ((n = recv(conn, buf, len, MSG_TRUNC)) < 0 && errno == EINTR)
		;
	return n;
}

static int recv_payload(int conn, char *dst, uint32_t len)
{
	uint32_t off = 0;

	while (off < len) {
		size_t want = len - off;
		ssize_t n;

		if (want > XTBPF_MAX_CHUNK)
			want = XTBPF_MAX_CHUNK;
		n = recv_msg(conn, dst + off, want);
		if (n < 0 && errno == EFAULT)
			return -1;
		if (n < 0)
			return bad(strerror(errno));
		if (n == 0)
			return bad("payload cut short");
		if ((size_t)n > want)
			return bad("payload larger than announced");
		off += n;
	}
	return 0;
}

static int recv_header(int conn, struct xtbpf_rep *rep)
{
	ssize_t n = recv_msg(conn, rep, sizeof(*rep));

	if (n < 0)
		return bad(strerror(errno));
	if (n == 0)
		return bad("connection closed");
	if (n != sizeof(*rep))
		return bad("header has the wrong size");
	if (rep->magic != XTBPF_MAGIC || rep->version != XTBPF_VERSION)
		return bad("wrong magic or version");
	if (rep->status == XTBPF_STATUS_PASS)
		return rep->payload_len || rep->flags ? bad("pass with a payload") : 0;
	if (rep->status != XTBPF_STATUS_RESULT)
		return bad("unknown status");
	if (rep->err < 0 || rep->err > 4095)
		return bad("errno out of range");
	if (rep->err && (rep->payload_len || rep->flags))
		return bad("error with a payload");
	if (rep->flags & ~XTBPF_FLAG_COUNTERS)
		return bad("unknown flags");
	return 0;
}

/* Closes the connection, keeping errno for the caller. */
static int finish(int conn, int ret)
{
	int err = errno;

	close(conn);
	errno = err;
	return ret;
}

/* Sends the request and reads the reply header; returns the connection
 * for the payload, or -1 with errno set. */
static int exchange(int sockfd, struct xtbpf_req *req, const void *payload, struct xtbpf_rep *rep)
{
	int conn = dial();

	if (conn < 0)
		return -1;
	req->magic = XTBPF_MAGIC;
	req->version = XTBPF_VERSION;
	if (send_request(conn, sockfd, req, payload) < 0 || recv_header(conn, rep) < 0)
		return finish(conn, -1);
	return conn;
}

static int result(const struct xtbpf_rep *rep)
{
	if (rep->err) {
		errno = rep->err;
		return -1;
	}
	return rep->ret;
}

static int get(int fd, int level, int optname, void *optval, socklen_t *optlen)
{
	struct xtbpf_req req = { .op = XTBPF_OP_GETSOCKOPT, .level = level, .optname = optname };
	struct xtbpf_rep rep;
	int conn;

	if (!optlen) {
		errno = EFAULT;
		return -1;
	}
	req.optlen = *optlen;
	req.payload_len = req.optlen < XTBPF_GET_REQ_MAX ? req.optlen : XTBPF_GET_REQ_MAX;
	conn = exchange(fd, &req, optval, &rep);
	if (conn < 0)
		return -1;
	if (rep.status == XTBPF_STATUS_PASS) {
		close(conn);
		return real_get(fd, level, optname, optval, optlen);
	}
	if (rep.flags)
		return finish(conn, bad("flags on a get"));
	if (rep.payload_len > req.optlen || rep.optlen > req.optlen)
		return finish(conn, bad("payload larger than the caller's buffer"));
	if (recv_payload(conn, optval, rep.payload_len) < 0)
		return finish(conn, -1);
	if (!rep.err)
		*optlen = rep.optlen;
	return finish(conn, result(&rep));
}

/* The old counters go where the kernel puts them: the user pointer in
 * ipt_replace/ip6t_replace, bounded by its num_counters. */
static int write_counters(int conn, const char *optval, socklen_t optlen, uint32_t len)
{
	uint32_t num;
	char *dst;

	if (optlen < XTBPF_REPLACE_COUNTERS_OFF + sizeof(dst))
		return bad("counters for an optval too short to hold a pointer");
	memcpy(&num, optval + XTBPF_REPLACE_NUM_COUNTERS_OFF, sizeof(num));
	memcpy(&dst, optval + XTBPF_REPLACE_COUNTERS_OFF, sizeof(dst));
	if (len > (uint64_t)num * XTBPF_COUNTER_SIZE)
		return bad("more counters than num_counters");
	return recv_payload(conn, dst, len);
}

static int set(int fd, int level, int optname, const void *optval, socklen_t optlen)
{
	struct xtbpf_req req = { .op = XTBPF_OP_SETSOCKOPT, .level = level, .optname = optname,
				 .optlen = optlen, .payload_len = optlen };
	struct xtbpf_rep rep;
	int conn = exchange(fd, &req, optval, &rep);

	if (conn < 0)
		return -1;
	if (rep.status == XTBPF_STATUS_PASS) {
		close(conn);
		return real_set(fd, level, optname, optval, optlen);
	}
	if (rep.flags & XTBPF_FLAG_COUNTERS) {
		/* send() already read all of optval, so it is safe to load from. */
		if (write_counters(conn, optval, optlen, rep.payload_len) < 0)
			return finish(conn, -1);
	} else if (rep.payload_len) {
		return finish(conn, bad("payload on a set"));
	}
	return finish(conn, result(&rep));
}

int getsockopt(int fd, int level, int optname, void *optval, socklen_t *optlen)
{
	if (intercepted(level, optname, SO_LAST_GET))
		return get(fd, level, optname, optval, optlen);
	return real_get(fd, level, optname, optval, optlen);
}

int setsockopt(int fd, int level, int optname, const void *optval, socklen_t optlen)
{
	if (intercepted(level, optname, SO_LAST_SET))
		return set(fd, level, optname, optval, optlen);
	return real_set(fd, level, optname, optval, optlen);
}
