/* Calls one intercepted socket option the way libiptc does and prints
 * everything the shim could have written, guard bytes included.
 *   probe get OPTNAME BUFSIZE   buffer filled with i&0xff, optlen=BUFSIZE
 *   probe replace NUM OPTLEN    fake ipt_replace asking for NUM counters
 * Output: "ret=R errno=E optlen=L" then "buf=HEX". */
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define GUARD 16

static void hex(const char *name, const unsigned char *p, size_t n)
{
	printf("%s=", name);
	for (size_t i = 0; i < n; i++)
		printf("%02x", p[i]);
	printf("\n");
}

static int get(int fd, int optname, size_t size)
{
	unsigned char *buf = malloc(size + GUARD);
	socklen_t len = size;
	int ret;

	for (size_t i = 0; i < size; i++)
		buf[i] = i & 0xff;
	memset(buf + size, 0xaa, GUARD);
	ret = getsockopt(fd, SOL_IP, optname, buf, &len);
	printf("ret=%d errno=%d optlen=%u\n", ret, ret < 0 ? errno : 0, len);
	hex("buf", buf, size + GUARD);
	return 0;
}

static int replace(int fd, uint32_t num, size_t optlen)
{
	unsigned char opt[128] = "xtbpf-probe";
	size_t area = (size_t)num * 16 + 2 * GUARD;
	unsigned char *counters = malloc(area);
	unsigned char *ptr = counters + GUARD;
	int ret;

	memset(counters, 0xaa, area);
	memcpy(opt + 84, &num, sizeof(num));
	memcpy(opt + 88, &ptr, sizeof(ptr));
	ret = setsockopt(fd, SOL_IP, 64, opt, optlen);
	printf("ret=%d errno=%d optlen=%zu\n", ret, ret < 0 ? errno : 0, optlen);
	hex("buf", counters, area);
	return 0;
}

int main(int argc, char **argv)
{
	int fd = socket(AF_INET, SOCK_DGRAM, 0);

	if (argc != 4 || fd < 0)
		return 2;
	if (!strcmp(argv[1], "get"))
		return get(fd, atoi(argv[2]), strtoul(argv[3], 0, 0));
	if (!strcmp(argv[1], "replace"))
		return replace(fd, strtoul(argv[2], 0, 0), strtoul(argv[3], 0, 0));
	return 2;
}
