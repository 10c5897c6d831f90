/*
 * The floor for Postfix's table lookups in bench/mta.ts: a Postfix policy service and a socketmap
 * server that answer what relaylease answers for the benchmark's clients, at the least cost a
 * program can: one thread, poll(2), no decision beyond the shape of the key. Postfix with it
 * shows what Postfix's own side of check_policy_service and of a socketmap table costs, which no
 * implementation of the server can take away.
 *
 * Answers, as relaylease does with one leased address: a policy request (attributes up to an
 * empty line) gets `action=OK` if its client_address is LEASED, else `action=DUNNO`; a socketmap
 * request (`<len>:<map> <key>,`) gets `OK 4102444800` for the key LEASED and `NOTFOUND ` for any
 * other (Postfix asks with the client's host name first).
 *
 * Usage: floor-tables POLICY_PORT SOCKETMAP_PORT LEASED   (both on 127.0.0.1; prints "ready" once
 * both listen). Not hardened: a benchmark fixture for loopback peers, never a server.
 */
#define _GNU_SOURCE /* memmem */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_CONNS 1024
#define BUF_BYTES 65536

enum kind { POLICY, SOCKETMAP };

struct conn {
  enum kind kind;
  size_t used;
  char buf[BUF_BYTES];
};

static struct pollfd fds[MAX_CONNS + 2];
static struct conn *conns[MAX_CONNS + 2];
static int nfds;

static int listen_on(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  int one = 1;
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((unsigned short)port)};
  if (fd < 0) return -1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0 || listen(fd, 128) < 0) return -1;
  return fd;
}

static const char *leased;

/* Whether the request's `client_address=` line holds the leased address. */
static int policy_leased(const char *req, size_t len) {
  static const char attr[] = "client_address=";
  size_t n = strlen(leased);
  for (const char *p = req; p != NULL && p < req + len; p = memchr(p, '\n', (size_t)(req + len - p))) {
    if (*p == '\n') p++;
    if ((size_t)(req + len - p) > sizeof attr - 1 + n && memcmp(p, attr, sizeof attr - 1) == 0 &&
        memcmp(p + sizeof attr - 1, leased, n) == 0 && p[sizeof attr - 1 + n] == '\n')
      return 1;
  }
  return 0;
}

/* Answers every whole request in c->buf; returns -1 to close the connection. */
static int serve(int fd, struct conn *c) {
  size_t start = 0;
  char out[BUF_BYTES];
  size_t outlen = 0;
  for (;;) {
    char *p = c->buf + start;
    size_t left = c->used - start;
    if (c->kind == POLICY) {
      char *end = memmem(p, left, "\n\n", 2);
      if (end == NULL) break;
      {
        const char *reply = policy_leased(p, (size_t)(end - p) + 1) ? "action=OK\n\n" : "action=DUNNO\n\n";
        memcpy(out + outlen, reply, strlen(reply));
        outlen += strlen(reply);
      }
      start += (size_t)(end - p) + 2;
    } else {
      char *colon = memchr(p, ':', left);
      size_t len;
      if (colon == NULL) break;
      len = strtoul(p, NULL, 10);
      if ((size_t)(colon - p) + 1 + len + 1 > left) break;
      {
        char *req = colon + 1;
        char *sp = memchr(req, ' ', len);
        const char *reply = "9:NOTFOUND ,";
        size_t keylen = sp == NULL ? 0 : len - (size_t)(sp + 1 - req);
        if (sp != NULL && keylen == strlen(leased) && memcmp(sp + 1, leased, keylen) == 0)
          reply = "13:OK 4102444800,";
        memcpy(out + outlen, reply, strlen(reply));
        outlen += strlen(reply);
      }
      start += (size_t)(colon - p) + 1 + len + 1;
    }
    if (outlen > sizeof out - 64) break;
  }
  memmove(c->buf, c->buf + start, c->used - start);
  c->used -= start;
  if (outlen > 0 && write(fd, out, outlen) != (ssize_t)outlen) return -1;
  return c->used == sizeof c->buf ? -1 : 0;
}

int main(int argc, char **argv) {
  int one = 1;
  if (argc != 4) {
    fprintf(stderr, "usage: %s POLICY_PORT SOCKETMAP_PORT LEASED\n", argv[0]);
    return 2;
  }
  leased = argv[3];
  fds[0].fd = listen_on(atoi(argv[1]));
  fds[1].fd = listen_on(atoi(argv[2]));
  if (fds[0].fd < 0 || fds[1].fd < 0) {
    perror("listen");
    return 1;
  }
  fds[0].events = fds[1].events = POLLIN;
  nfds = 2;
  printf("ready\n");
  fflush(stdout);
  for (;;) {
    if (poll(fds, (nfds_t)nfds, -1) < 0) {
      if (errno == EINTR) continue;
      perror("poll");
      return 1;
    }
    for (int i = 0; i < 2; i++) {
      if (!(fds[i].revents & POLLIN)) continue;
      int fd = accept(fds[i].fd, NULL, NULL);
      if (fd < 0) continue;
      if (nfds == MAX_CONNS + 2) {
        close(fd);
        continue;
      }
      setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      conns[nfds] = calloc(1, sizeof(struct conn));
      conns[nfds]->kind = i == 0 ? POLICY : SOCKETMAP;
      fds[nfds].fd = fd;
      fds[nfds].events = POLLIN;
      fds[nfds].revents = 0;
      nfds++;
    }
    for (int i = 2; i < nfds; i++) {
      struct conn *c = conns[i];
      ssize_t n;
      if (!(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      n = read(fds[i].fd, c->buf + c->used, sizeof c->buf - c->used);
      if (n > 0) c->used += (size_t)n;
      if (n <= 0 || serve(fds[i].fd, c) < 0) {
        close(fds[i].fd);
        free(c);
        nfds--;
        fds[i] = fds[nfds];
        conns[i] = conns[nfds];
        i--;
      }
    }
  }
}
