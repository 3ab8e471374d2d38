/* Wire format between the preload shim and xtbpfd; mirrored by umh/wire.
 * AF_UNIX SOCK_SEQPACKET, native byte order, one connection per call:
 * a 32-byte header (the request carries the caller's socket via
 * SCM_RIGHTS), then payload_len bytes in messages of at most
 * XTBPF_MAX_CHUNK bytes. */
#ifndef XTBPF_WIRE_H
#define XTBPF_WIRE_H

#include <stdint.h>

#define XTBPF_MAGIC 0x58544250u /* "XTBP" */
#define XTBPF_VERSION 1
#define XTBPF_MAX_CHUNK 65536
/* The kernel reads only the header of a get request. */
#define XTBPF_GET_REQ_MAX 256

enum xtbpf_op { XTBPF_OP_GETSOCKOPT = 1, XTBPF_OP_SETSOCKOPT = 2, XTBPF_OP_STATUS = 3 };
enum xtbpf_status { XTBPF_STATUS_RESULT = 0, XTBPF_STATUS_PASS = 1 };

/* Payload of a reply is the old counters, to be written at
 * ipt_replace.counters (at most num_counters entries). */
#define XTBPF_FLAG_COUNTERS 1u
#define XTBPF_REPLACE_NUM_COUNTERS_OFF 84
#define XTBPF_REPLACE_COUNTERS_OFF 88
#define XTBPF_COUNTER_SIZE 16

struct xtbpf_req {
	uint32_t magic;
	uint16_t version;
	uint16_t op;
	int32_t level;
	int32_t optname;
	uint32_t optlen;
	uint32_t payload_len;
	uint64_t reserved;
};

struct xtbpf_rep {
	uint32_t magic;
	uint16_t version;
	uint16_t status;
	int32_t ret;
	int32_t err;
	uint32_t optlen;
	uint32_t payload_len;
	uint32_t flags;
	uint32_t reserved;
};

_Static_assert(sizeof(struct xtbpf_req) == 32, "xtbpf_req is 32 bytes");
_Static_assert(sizeof(struct xtbpf_rep) == 32, "xtbpf_rep is 32 bytes");

#endif
