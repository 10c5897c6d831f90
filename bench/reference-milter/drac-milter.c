/*
 * drac-milter: the reference for bench/mta.ts. A relay gate on Sendmail's libmilter that makes
 * relaylease's milter decision the plainest way C can: a client address in a fixed set of leased
 * addresses is accepted at CONNECT (the MTA then asks nothing more for the SMTP session); for
 * anyone else each RCPT whose {rcpt_mailer} is a remote mailer (or missing) gets 550 5.7.1, a
 * local one continues. No NATS, no leases that expire, no trusted networks, no SMTP AUTH: this
 * measures what libmilter itself costs for the same round trips, nothing more.
 *
 * Negotiation (shared/reference/mta-protocols.md sections 1.4, 7): actions 0 (it changes
 * nothing), and every step the MTA offers to skip that the decision does not need: NOHELO NOMAIL
 * NOBODY NOHDRS NOEOH NOUNKNOWN NODATA (0x376 from Postfix 3.7), as relaylease asks with
 * RELAYLEASE_ACCEPT_AT=connect. No SMFIP_NR_* bit applies: the steps left (CONNECT, RCPT) need
 * their reply (ACCEPT, REJECT), the skipped ones are not sent at all, and BODYEOB always gets one.
 *
 * Accepts: milter connections from whoever reaches the socket given with -p (the bench uses
 * inet:PORT@127.0.0.1). Reads: the file given with -f, one IPv4 or IPv6 address per line, `#`
 * comments and blank lines ignored, read once at start.
 * Limits: at most MAX_LEASED addresses and MAX_LINE bytes a line, else it refuses to start;
 * libmilter's own budget (65535-byte frames, a thread per connection, 7210 s timeouts) otherwise.
 *
 * Usage: drac-milter -p inet:PORT@127.0.0.1 -f leased.txt
 * Prints "listening" once the socket is open; stops on SIGTERM, SIGINT or SIGHUP (smfi_main).
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <libmilter/mfapi.h>

/* The most addresses read from the file; one more refuses to start. */
#define MAX_LEASED 1000000
/* The line buffer: more than MAX_LINE - 2 characters before a newline refuses to start. */
#define MAX_LINE 256

/* The steps skipped when offered: everything but CONNECT, RCPT and (unskippable) BODYEOB. */
#define SKIPPED_STEPS                                                                   \
	(SMFIP_NOHELO | SMFIP_NOMAIL | SMFIP_NOBODY | SMFIP_NOHDRS | SMFIP_NOEOH |       \
	    SMFIP_NOUNKNOWN | SMFIP_NODATA)

/* {rcpt_mailer} values that mean delivery to another host, as relaylease's default. */
static const char *const REMOTE_MAILERS[] = { "smtp", "esmtp", "smtp8", "dsmtp", "relay" };

/* An address as 16 bytes: IPv6 as is, IPv4 as ::ffff:a.b.c.d, so one sorted array holds both. */
struct key {
	unsigned char b[16];
};

/* Sorted once at start, read-only afterwards: libmilter's threads share it without a lock. */
static struct key *leased;
static size_t leased_count;

static void key_of_v4(const struct in_addr *a, struct key *k)
{
	memset(k->b, 0, 10);
	k->b[10] = 0xff;
	k->b[11] = 0xff;
	memcpy(k->b + 12, &a->s_addr, 4);
}

static int key_cmp(const void *a, const void *b)
{
	return memcmp(a, b, sizeof(struct key));
}

static int key_parse(const char *text, struct key *k)
{
	struct in_addr v4;

	if (inet_pton(AF_INET, text, &v4) == 1) {
		key_of_v4(&v4, k);
		return 0;
	}
	return inet_pton(AF_INET6, text, k->b) == 1 ? 0 : -1;
}

/* Strips a `#` comment and surrounding blanks in place; returns the address text. */
static char *trim(char *line)
{
	char *end;

	line[strcspn(line, "#\r\n")] = '\0';
	line += strspn(line, " \t");
	end = line + strlen(line);
	while (end > line && (end[-1] == ' ' || end[-1] == '\t'))
		*--end = '\0';
	return line;
}

/* Reads the leased set; on any error says which line and returns -1. */
static int load_leased(const char *path)
{
	char line[MAX_LINE];
	size_t capacity = 0;
	unsigned long lineno = 0;
	FILE *f = fopen(path, "r");

	if (f == NULL) {
		perror(path);
		return -1;
	}
	while (fgets(line, sizeof line, f) != NULL) {
		char *text;

		lineno++;
		/* No newline: the last line of the file, or one that did not fit. */
		if (strchr(line, '\n') == NULL && fgetc(f) != EOF) {
			fprintf(stderr, "%s:%lu: line longer than %d bytes\n", path, lineno, MAX_LINE - 2);
			goto fail;
		}
		text = trim(line);
		if (*text == '\0')
			continue;
		if (leased_count == MAX_LEASED) {
			fprintf(stderr, "%s:%lu: more than %d addresses\n", path, lineno, MAX_LEASED);
			goto fail;
		}
		if (leased_count == capacity) {
			size_t grown = capacity == 0 ? 64 : capacity * 2;
			struct key *p = realloc(leased, grown * sizeof *p);

			if (p == NULL) {
				perror("realloc");
				goto fail;
			}
			leased = p;
			capacity = grown;
		}
		if (key_parse(text, &leased[leased_count]) != 0) {
			fprintf(stderr, "%s:%lu: not an IPv4 or IPv6 address: %s\n", path, lineno, text);
			goto fail;
		}
		leased_count++;
	}
	if (ferror(f)) {
		perror(path);
		goto fail;
	}
	fclose(f);
	if (leased_count > 0)
		qsort(leased, leased_count, sizeof *leased, key_cmp);
	return 0;
fail:
	fclose(f);
	return -1;
}

/* Only IPv4 and IPv6 clients can hold a lease: family U (no address) and L (unix) never do. */
static int is_leased(const struct sockaddr *sa)
{
	struct key k;

	if (sa == NULL || leased_count == 0)
		return 0;
	if (sa->sa_family == AF_INET)
		key_of_v4(&((const struct sockaddr_in *)(const void *)sa)->sin_addr, &k);
	else if (sa->sa_family == AF_INET6)
		memcpy(k.b, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr, 16);
	else
		return 0;
	return bsearch(&k, leased, leased_count, sizeof *leased, key_cmp) != NULL;
}

/* A missing mailer counts as remote: fail closed. */
static int is_remote_mailer(const char *mailer)
{
	size_t i;

	if (mailer == NULL || *mailer == '\0')
		return 1;
	for (i = 0; i < sizeof REMOTE_MAILERS / sizeof REMOTE_MAILERS[0]; i++)
		if (strcasecmp(mailer, REMOTE_MAILERS[i]) == 0)
			return 1;
	return 0;
}

static sfsistat drac_negotiate(SMFICTX *ctx, unsigned long actions, unsigned long steps,
    unsigned long unused0, unsigned long unused1, unsigned long *actions_out,
    unsigned long *steps_out, unsigned long *unused0_out, unsigned long *unused1_out)
{
	(void)ctx;
	(void)actions;
	(void)unused0;
	(void)unused1;
	*actions_out = SMFIF_NONE;
	/* Only offered bits: Sendmail and Postfix drop a milter asking for more. */
	*steps_out = SKIPPED_STEPS & steps;
	*unused0_out = 0;
	*unused1_out = 0;
	return SMFIS_CONTINUE;
}

static sfsistat drac_connect(SMFICTX *ctx, char *hostname, _SOCK_ADDR *addr)
{
	(void)ctx;
	(void)hostname;
	/* ACCEPT at CONNECT: Postfix closes this milter connection and relays for the session. */
	return is_leased(addr) ? SMFIS_ACCEPT : SMFIS_CONTINUE;
}

static sfsistat drac_envrcpt(SMFICTX *ctx, char **argv)
{
	(void)argv;
	if (!is_remote_mailer(smfi_getsymval(ctx, "{rcpt_mailer}")))
		return SMFIS_CONTINUE;
	/* Without the reply text the client would see the MTA's generic "Command rejected". */
	if (smfi_setreply(ctx, "550", "5.7.1", "Relaying denied") != MI_SUCCESS)
		return SMFIS_TEMPFAIL;
	return SMFIS_REJECT;
}

static struct smfiDesc drac_filter = {
	.xxfi_name = "drac-milter",
	.xxfi_version = SMFI_VERSION,
	.xxfi_flags = SMFIF_NONE,
	.xxfi_connect = drac_connect,
	.xxfi_envrcpt = drac_envrcpt,
	.xxfi_negotiate = drac_negotiate,
};

static void usage(const char *self)
{
	fprintf(stderr, "usage: %s -p inet:PORT@HOST|unix:PATH -f LEASED_FILE\n", self);
	exit(2);
}

int main(int argc, char **argv)
{
	char *conn = NULL;
	const char *file = NULL;
	int c;

	while ((c = getopt(argc, argv, "p:f:")) != -1) {
		switch (c) {
		case 'p':
			conn = optarg;
			break;
		case 'f':
			file = optarg;
			break;
		default:
			usage(argv[0]);
		}
	}
	if (conn == NULL || file == NULL || optind != argc)
		usage(argv[0]);
	if (load_leased(file) != 0)
		return 1;
	if (smfi_setconn(conn) != MI_SUCCESS || smfi_register(drac_filter) != MI_SUCCESS) {
		fprintf(stderr, "%s: cannot set up the milter on %s\n", argv[0], conn);
		return 1;
	}
	if (smfi_opensocket(1) != MI_SUCCESS) {
		fprintf(stderr, "%s: cannot listen on %s\n", argv[0], conn);
		return 1;
	}
	printf("listening on %s, %zu leased address(es)\n", conn, leased_count);
	fflush(stdout);
	return smfi_main() == MI_SUCCESS ? 0 : 1;
}
