/*
 * conn_server.c: the connection-level (sans-IO) API with the program's own poll() loop, one
 * connection at a time, as a fork-per-connection server's child would drive it.
 *
 *   conn_server implicit|starttls SPOOL CERT KEY
 *
 * Listens on 127.0.0.1 (ephemeral port), prints "PORT <port>" on stdout, and serves
 * connections one after the other until stdin reaches end of file. Each message is written
 * to SPOOL/<n>.eml (fsync, then rename) before 250 is answered. AUTH accepts any user whose
 * password is "secret". The library's timers close an idle connection with 421 4.4.2: the
 * poll() timeout is smtps_conn_next_timeout_ms(); CONN_COMMAND_TIMEOUT_MS in the
 * environment sets SMTPS_TIMEOUT_COMMAND.
 *
 * CONN_PROXY_TRUSTED=CIDR in the environment puts the program behind a load balancer: a
 * connection from CIDR (smtps_config_proxy_trusts) must begin with a PROXY protocol header
 * (smtps_conn_expect_proxy_header), and the client, the balancer and the header's authority
 * TLV are logged on stderr at connect; a connection whose header is bad or missing is logged
 * as closed without a banner.
 *
 * CONN_FD_HELPERS=1 in the environment lets the library do the socket I/O
 * (smtps_conn_read_fd / smtps_conn_write_fd) instead of the program's own read() and write().
 *
 * Left out: fork(), privilege separation, concurrency.
 */
#define _POSIX_C_SOURCE 200809L

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "smtps.h"

static const char *spool;
static unsigned long messages;
/* The socket's peer of the connection being served, "IP:port". */
static char socket_peer[INET6_ADDRSTRLEN + 8];

static void fail(const char *what, smtps_result result) {
  char detail[512];
  size_t n = 0;
  smtps_last_error(detail, sizeof detail, &n);
  fprintf(stderr, "conn_server: %s: result %u: %s\n", what, (unsigned)result, detail);
}

/* Sends everything the connection has to send. Returns -1 if the socket failed. */
static int flush_output(smtps_conn *conn, int sock) {
  unsigned char buf[16384];
  size_t n;
  for (;;) {
    size_t done = 0;
    if (smtps_conn_take_output(conn, buf, sizeof buf, &n) != SMTPS_RESULT_OK || n == 0) {
      return 0;
    }
    while (done < n) {
      ssize_t w = write(sock, buf + done, n - done);
      if (w < 0 && errno == EINTR) {
        continue;
      }
      if (w <= 0) {
        return -1;
      }
      done += (size_t)w;
    }
  }
}

struct message {
  int fd;
  char tmp[512];
};

/* Answers every event until the connection has none. */
static void handle_events(smtps_conn *conn, struct message *msg) {
  smtps_event ev;
  while (smtps_conn_next_event(conn, &ev) == SMTPS_RESULT_OK && ev.kind != SMTPS_EVENT_KIND_NONE) {
    switch (ev.kind) {
    case SMTPS_EVENT_KIND_CONNECT: {
      /* After a PROXY header the client is the one it names; the socket's peer is the
       * balancer. The views stay valid until smtps_conn_free. */
      smtps_str client = smtps_conn_proxy_client(conn);
      smtps_bytes authority;
      if (client.len > 0) {
        smtps_str destination = smtps_conn_proxy_destination(conn);
        bool found = smtps_conn_proxy_tlv(conn, SMTPS_PP2_TYPE_AUTHORITY, &authority);
        fprintf(stderr, "conn_server: connect from %.*s to %.*s via %s authority %.*s\n",
                (int)client.len, client.data, (int)destination.len, destination.data,
                socket_peer, found ? (int)authority.len : 1,
                found ? (const char *)authority.data : "-");
      } else {
        fprintf(stderr, "conn_server: connect from %s\n", socket_peer);
      }
      smtps_conn_decide(conn, ev.decision, 0, NULL, NULL);
      break;
    }
    case SMTPS_EVENT_KIND_AUTH:
      if (ev.secret.len == 6 && memcmp(ev.secret.data, "secret", 6) == 0) {
        smtps_conn_decide(conn, ev.decision, 0, NULL, NULL);
      } else {
        smtps_conn_decide(conn, ev.decision, 535, "5.7.8", "Bad credentials");
      }
      break;
    case SMTPS_EVENT_KIND_DATA_START:
      snprintf(msg->tmp, sizeof msg->tmp, "%s/.tmp.%lu", spool, messages);
      msg->fd = open(msg->tmp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
      if (msg->fd < 0) {
        smtps_conn_decide(conn, ev.decision, 451, "4.3.0", "Cannot open a spool file");
      } else {
        smtps_conn_decide(conn, ev.decision, 0, NULL, NULL);
      }
      break;
    case SMTPS_EVENT_KIND_BODY:
      if (msg->fd >= 0 && write(msg->fd, ev.data.data, ev.data.len) != (ssize_t)ev.data.len) {
        smtps_conn_refuse_message(conn, 452, "4.3.1", "Spool write failed");
      }
      break;
    case SMTPS_EVENT_KIND_MESSAGE_END: {
      char final[1100];
      int ok = msg->fd >= 0 && fsync(msg->fd) == 0;
      ok = msg->fd >= 0 && close(msg->fd) == 0 && ok;
      msg->fd = -1;
      snprintf(final, sizeof final, "%s/%lu.eml", spool, messages);
      if (ok && rename(msg->tmp, final) == 0) {
        messages++;
        smtps_conn_decide(conn, ev.decision, 250, "2.0.0", "Queued");
      } else {
        unlink(msg->tmp);
        smtps_conn_decide(conn, ev.decision, 451, "4.3.0", "Cannot store the message");
      }
      break;
    }
    case SMTPS_EVENT_KIND_MESSAGE_ABORTED:
      if (msg->fd >= 0) {
        close(msg->fd);
        unlink(msg->tmp);
        msg->fd = -1;
      }
      break;
    default:
      if (ev.awaits_decision) {
        smtps_conn_decide(conn, ev.decision, 0, NULL, NULL);
      }
      break;
    }
  }
}

/* Serves one accepted socket to the end. */
/* The same loop with the library doing the socket I/O: smtps_conn_read_fd when poll() says
 * readable, smtps_conn_write_fd while output waits. */
static void serve_with_fd_helpers(smtps_conn *conn, int sock, struct message *msg) {
  for (;;) {
    struct pollfd pfd;
    int ready;
    int64_t timeout;
    size_t n = 0;
    handle_events(conn, msg);
    while (smtps_conn_wants_write(conn)) {
      smtps_result result = smtps_conn_write_fd(conn, sock, &n);
      if (result != SMTPS_RESULT_OK) {
        fail("smtps_conn_write_fd", result);
        return;
      }
      if (n == 0) {
        break; /* the socket would block: wait for POLLOUT */
      }
    }
    if (smtps_conn_is_closed(conn) && !smtps_conn_wants_write(conn)) {
      return;
    }
    pfd.fd = sock;
    pfd.events = (smtps_conn_wants_read(conn) ? POLLIN : 0) |
                 (smtps_conn_wants_write(conn) ? POLLOUT : 0);
    timeout = smtps_conn_next_timeout_ms(conn);
    ready = poll(&pfd, 1, timeout > INT_MAX ? INT_MAX : (int)timeout);
    if (ready < 0 && errno == EINTR) {
      continue;
    }
    if (ready < 0) {
      return;
    }
    if (ready == 0) {
      smtps_conn_handle_timeout(conn);
      continue;
    }
    if (pfd.revents & (POLLIN | POLLHUP | POLLERR)) {
      smtps_result result = smtps_conn_read_fd(conn, sock, &n);
      if (result != SMTPS_RESULT_OK) {
        fail("smtps_conn_read_fd", result);
        return;
      }
    }
  }
}

static void serve(const smtps_config *config, smtps_mode mode, int sock) {
  smtps_conn *conn = NULL;
  unsigned char inbuf[16384];
  size_t have = 0;
  struct message msg;
  smtps_result result = smtps_conn_new(config, mode, &conn);
  msg.fd = -1;
  if (result != SMTPS_RESULT_OK) {
    fail("smtps_conn_new", result);
    return;
  }
  /* Only a trusted balancer may send a PROXY header, and then it must: decided before the
   * connection sees any input. */
  if (smtps_config_proxy_trusts(config, socket_peer) &&
      (result = smtps_conn_expect_proxy_header(conn)) != SMTPS_RESULT_OK) {
    fail("smtps_conn_expect_proxy_header", result);
    smtps_conn_free(conn);
    return;
  }
  if (getenv("CONN_FD_HELPERS") != NULL) {
    serve_with_fd_helpers(conn, sock, &msg);
  }
  /* The program's own I/O: read() into inbuf, smtps_conn_feed, smtps_conn_take_output. */
  while (getenv("CONN_FD_HELPERS") == NULL) {
    struct pollfd pfd;
    int ready;
    int64_t timeout;
    /* Feed what was read and not taken yet, answering events in between (back-pressure). */
    while (have > 0) {
      size_t taken = 0;
      result = smtps_conn_feed(conn, inbuf, have, &taken);
      if (result != SMTPS_RESULT_OK) {
        fail("feed", result);
        have = 0;
        break;
      }
      memmove(inbuf, inbuf + taken, have - taken);
      have -= taken;
      handle_events(conn, &msg);
      if (taken == 0) {
        break;
      }
    }
    handle_events(conn, &msg);
    if (flush_output(conn, sock) < 0) {
      break;
    }
    if (smtps_conn_is_closed(conn) && !smtps_conn_wants_write(conn)) {
      break;
    }
    pfd.fd = sock;
    pfd.events = smtps_conn_wants_read(conn) && have < sizeof inbuf ? POLLIN : 0;
    timeout = smtps_conn_next_timeout_ms(conn);
    ready = poll(&pfd, 1, timeout > INT_MAX ? INT_MAX : (int)timeout);
    if (ready < 0 && errno == EINTR) {
      continue;
    }
    if (ready < 0) {
      break;
    }
    if (ready == 0) {
      /* A timer is due: the library answers 421 4.4.2 (or drops a stalled client). */
      smtps_conn_handle_timeout(conn);
      continue;
    }
    if (pfd.revents & (POLLIN | POLLHUP | POLLERR)) {
      ssize_t n = read(sock, inbuf + have, sizeof inbuf - have);
      if (n < 0 && errno == EINTR) {
        continue;
      }
      if (n <= 0) {
        smtps_conn_feed_eof(conn);
      } else {
        have += (size_t)n;
      }
    }
  }
  if (msg.fd >= 0) {
    close(msg.fd);
    unlink(msg.tmp);
  }
  if (smtps_conn_close_reason(conn) == SMTPS_CLOSE_REASON_PROXY_HEADER) {
    fprintf(stderr, "conn_server: %s closed without a banner: bad or missing PROXY header\n",
            socket_peer);
  }
  smtps_conn_free(conn);
}

int main(int argc, char **argv) {
  smtps_config *config;
  smtps_mode mode;
  struct sockaddr_in addr;
  socklen_t len = sizeof addr;
  smtps_result result;
  int lsock;
  int one = 1;

  if (argc != 5) {
    fprintf(stderr, "usage: conn_server implicit|starttls SPOOL CERT KEY\n");
    return 2;
  }
  mode = strcmp(argv[1], "implicit") == 0 ? SMTPS_MODE_IMPLICIT_TLS : SMTPS_MODE_START_TLS;
  spool = argv[2];
  config = smtps_config_new();
  if (config == NULL || smtps_config_set_hostname(config, "conn.test") != SMTPS_RESULT_OK ||
      smtps_config_set_certificate_files(config, argv[3], argv[4]) != SMTPS_RESULT_OK) {
    return 1;
  }
  if (getenv("CONN_PROXY_TRUSTED") != NULL &&
      (result = smtps_config_add_proxy_trusted(config, getenv("CONN_PROXY_TRUSTED"))) !=
          SMTPS_RESULT_OK) {
    fail("smtps_config_add_proxy_trusted", result);
    return 1;
  }
  if (getenv("CONN_COMMAND_TIMEOUT_MS") != NULL &&
      smtps_config_set_timeout(config, SMTPS_TIMEOUT_COMMAND,
                               strtoull(getenv("CONN_COMMAND_TIMEOUT_MS"), NULL, 10)) !=
          SMTPS_RESULT_OK) {
    return 1;
  }
  /* Load once, before serving: a bad file is reported here, not per connection. */
  if ((result = smtps_config_load_certificates(config)) != SMTPS_RESULT_OK) {
    fail("smtps_config_load_certificates", result);
    smtps_config_free(config);
    return 1;
  }

  lsock = socket(AF_INET, SOCK_STREAM, 0);
  setsockopt(lsock, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  memset(&addr, 0, sizeof addr);
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(lsock, (struct sockaddr *)&addr, sizeof addr) != 0 || listen(lsock, 16) != 0 ||
      getsockname(lsock, (struct sockaddr *)&addr, &len) != 0) {
    perror("conn_server: listen");
    return 1;
  }
  printf("PORT %u\n", (unsigned)ntohs(addr.sin_port));
  fflush(stdout);

  for (;;) {
    struct pollfd fds[2];
    fds[0].fd = lsock;
    fds[0].events = POLLIN;
    fds[1].fd = STDIN_FILENO;
    fds[1].events = POLLIN;
    if (poll(fds, 2, -1) < 0) {
      if (errno == EINTR) {
        continue;
      }
      break;
    }
    if (fds[1].revents & (POLLIN | POLLHUP)) {
      char buf[64];
      if (read(STDIN_FILENO, buf, sizeof buf) <= 0) {
        break;
      }
    }
    if (fds[0].revents & POLLIN) {
      struct sockaddr_in peer;
      socklen_t peer_len = sizeof peer;
      int sock = accept(lsock, (struct sockaddr *)&peer, &peer_len);
      if (sock >= 0) {
        char ip[INET6_ADDRSTRLEN];
        if (inet_ntop(AF_INET, &peer.sin_addr, ip, sizeof ip) == NULL) {
          strcpy(ip, "?");
        }
        snprintf(socket_peer, sizeof socket_peer, "%s:%u", ip, (unsigned)ntohs(peer.sin_port));
        serve(config, mode, sock);
        close(sock);
      }
    }
  }
  close(lsock);
  smtps_config_free(config);
  fprintf(stderr, "conn_server: stopped after %lu messages\n", messages);
  return 0;
}
