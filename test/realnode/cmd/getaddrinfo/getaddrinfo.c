/*
 * getaddrinfo: test/realnode's libc client. Built statically with musl-gcc (Debian's musl-tools),
 * it resolves each name with musl's own stub resolver, which reads /etc/resolv.conf (search list,
 * ndots, several nameservers asked in parallel) in its own way, unlike Go's and glibc's. Prints
 * "ok NAME -> ADDRESSES" or "FAIL NAME: ERROR" per name and exits 1 if any failed.
 */
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

int main(int argc, char **argv)
{
	int failed = 0;
	char line[256];
	FILE *conf = fopen("/etc/resolv.conf", "r");
	if (conf) {
		printf("/etc/resolv.conf:\n");
		while (fgets(line, sizeof line, conf))
			fputs(line, stdout);
		fclose(conf);
	}
	for (int i = 1; i < argc; i++) {
		struct addrinfo hints, *res, *ai;
		memset(&hints, 0, sizeof hints);
		hints.ai_family = AF_UNSPEC;
		hints.ai_socktype = SOCK_STREAM;
		int err = getaddrinfo(argv[i], NULL, &hints, &res);
		if (err) {
			printf("FAIL %s: %s\n", argv[i], gai_strerror(err));
			failed++;
			continue;
		}
		printf("ok %s ->", argv[i]);
		for (ai = res; ai; ai = ai->ai_next) {
			char addr[INET6_ADDRSTRLEN];
			const void *a = ai->ai_family == AF_INET
				? (const void *)&((struct sockaddr_in *)ai->ai_addr)->sin_addr
				: (const void *)&((struct sockaddr_in6 *)ai->ai_addr)->sin6_addr;
			printf(" %s", inet_ntop(ai->ai_family, a, addr, sizeof addr));
		}
		printf("\n");
		freeaddrinfo(res);
	}
	return failed ? 1 : 0;
}
