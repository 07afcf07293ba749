/*
 * contract.c: the promises of the server-level C API that hosts found broken (issue 14), each
 * performed against a running server over a plain loopback listener:
 *
 *   1. a repeated (stale) reply to a deferred RCPT cannot answer the next pipelined RCPT:
 *      every decision has its own id, a second reply gets SMTPS_RESULT_UNKNOWN_DECISION;
 *   2. a reply after the library's decision timeout (451 4.3.0) gets
 *      SMTPS_RESULT_UNKNOWN_DECISION, not SMTPS_RESULT_OK;
 *   3. a second server on a busy port fails with SMTPS_RESULT_BIND unless the host asked to
 *      share it (smtps_config_set_listener_share_port);
 *   4. every failing call sets smtps_last_error, NULL arguments included;
 *   5. clients that close or reset while replies are still being written cannot kill the
 *      host with SIGPIPE (this program keeps SIGPIPE's default action, which terminates).
 *   6. an on_connect answer outside SMTPS_ANSWER_* greets no one: the client gets 421 4.3.0
 *      (the only temporary answer in place of a greeting), not "250 OK" or a silent 554;
 *   8. smtps_server_metrics gives the counters in the Prometheus text format, sized on demand.
 *   7. EHLO offers only what the host serves: AUTH only with on_auth, DSN and SMTPUTF8 only
 *      when switched on; and the MAIL/RCPT parameters reach the callbacks
 *      (smtps_session_param).
 *   9. poll-loop mode: a reply given on the dispatching thread between dispatches makes the
 *      server's descriptor readable at once (the loop needs no extra dispatch); the loop ends
 *      with smtps_server_shutdown and dispatching until SMTPS_RESULT_SERVER_STOPPED, after
 *      which smtps_server_stop returns SMTPS_RESULT_OK at once and a second one
 *      SMTPS_RESULT_ALREADY_STOPPED.
 *
 *   contract
 *
 * Exits 0 when every check passes; prints each failure otherwise. Every wait is bounded.
 */
#define _POSIX_C_SOURCE 200809L

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "smtps.h"

static int failures;

static void check(const char *what, int cond) {
  if (!cond) {
    fprintf(stderr, "FAIL %s\n", what);
    failures++;
  } else {
    printf("ok   %s\n", what);
  }
}

static void check_result(const char *what, smtps_result got, smtps_result want) {
  if (got != want) {
    char detail[256] = "";
    size_t n = 0;
    smtps_last_error(detail, sizeof detail, &n);
    fprintf(stderr, "FAIL %s: got %u, want %u (%s)\n", what, (unsigned)got, (unsigned)want,
            detail);
    failures++;
  } else {
    printf("ok   %s\n", what);
  }
}

/* The decisions the callbacks deferred, handed to the main thread. */
struct host {
  pthread_mutex_t lock;
  pthread_cond_t cond;
  uint64_t deferred[16];
  size_t count;
  smtps_answer connect_answer;
  char size_param[32];
  char notify_param[64];
};

/* Copies an smtps_str into a C string buffer. */
static void copy_str(char *out, size_t len, smtps_str s) {
  size_t n = s.len < len - 1 ? s.len : len - 1;
  memcpy(out, s.data, n);
  out[n] = 0;
}

static smtps_answer on_mail(void *ud, const smtps_session *session, smtps_str from) {
  struct host *host = ud;
  smtps_str value;
  (void)from;
  if (smtps_session_param(session, "size", &value)) {
    copy_str(host->size_param, sizeof host->size_param, value);
  }
  return SMTPS_ANSWER_ACCEPT;
}

static smtps_answer on_auth(void *ud, const smtps_session *session, smtps_str user,
                            smtps_str password, smtps_str authzid) {
  (void)ud, (void)session, (void)user, (void)password, (void)authzid;
  return SMTPS_ANSWER_REJECT;
}

static smtps_answer on_connect(void *ud, const smtps_session *session) {
  struct host *host = ud;
  (void)session;
  return host->connect_answer;
}

static smtps_answer on_rcpt(void *ud, const smtps_session *session, smtps_str to) {
  struct host *host = ud;
  smtps_str value;
  if (smtps_session_param(session, "NOTIFY", &value)) {
    copy_str(host->notify_param, sizeof host->notify_param, value);
  }
  if (to.len >= 4 && memcmp(to.data, "now@", 4) == 0) {
    return SMTPS_ANSWER_ACCEPT;
  }
  pthread_mutex_lock(&host->lock);
  if (host->count < sizeof host->deferred / sizeof host->deferred[0]) {
    host->deferred[host->count++] = smtps_session_decision_id(session);
  }
  pthread_cond_broadcast(&host->cond);
  pthread_mutex_unlock(&host->lock);
  return SMTPS_ANSWER_DEFER;
}

static smtps_answer on_message_end(void *ud, const smtps_session *session, uint64_t size) {
  (void)ud;
  (void)session;
  (void)size;
  return SMTPS_ANSWER_ACCEPT;
}

/* The n-th deferred decision id (from 1), waiting up to 10 s; 0 if it never came. */
static uint64_t deferred(struct host *host, size_t n) {
  struct timespec until;
  uint64_t id = 0;
  clock_gettime(CLOCK_REALTIME, &until);
  until.tv_sec += 10;
  pthread_mutex_lock(&host->lock);
  while (host->count < n) {
    if (pthread_cond_timedwait(&host->cond, &host->lock, &until) == ETIMEDOUT) {
      break;
    }
  }
  if (host->count >= n) {
    id = host->deferred[n - 1];
  }
  pthread_mutex_unlock(&host->lock);
  return id;
}

static int dial(uint16_t port) {
  struct sockaddr_in addr;
  struct timeval timeout = {10, 0};
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) {
    return -1;
  }
  memset(&addr, 0, sizeof addr);
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
  if (connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

static void say(int fd, const char *text) {
  size_t off = 0, len = strlen(text);
  while (off < len) {
    ssize_t n = send(fd, text + off, len - off, MSG_NOSIGNAL);
    if (n <= 0) {
      return;
    }
    off += (size_t)n;
  }
}

/* Reads one reply line (up to CRLF) into buf; multi-line replies are read to their last
   line. Returns the code, or 0 on end of stream or timeout. */
static int reply(int fd, char *buf, size_t len) {
  for (;;) {
    size_t n = 0;
    while (n + 1 < len) {
      char c;
      if (recv(fd, &c, 1, 0) != 1) {
        buf[n] = 0;
        return 0;
      }
      buf[n++] = c;
      if (c == '\n') {
        break;
      }
    }
    buf[n] = 0;
    if (n < 4 || buf[3] != '-') {
      return atoi(buf);
    }
  }
}

static smtps_server *serve_with(struct host *host, const char *addr, int share, int with_auth,
                               smtps_result *result) {
  smtps_config *config = smtps_config_new();
  smtps_callbacks callbacks;
  smtps_server *server = NULL;
  memset(&callbacks, 0, sizeof callbacks);
  callbacks.on_connect = on_connect;
  callbacks.on_mail = on_mail;
  callbacks.on_rcpt = on_rcpt;
  callbacks.on_message_end = on_message_end;
  if (with_auth) {
    callbacks.on_auth = on_auth;
  }
  smtps_config_set_hostname(config, "mx.test");
  smtps_config_add_listener(config, addr, SMTPS_MODE_PLAIN);
  /* A plain listener offers AUTH only with this; the test is about the callback. */
  smtps_config_set_danger_allow_plaintext_auth(config, true);
  smtps_config_set_extension(config, SMTPS_EXTENSION_DSN, true);
  smtps_config_set_listener_share_port(config, 0, share);
  smtps_config_set_workers(config, 2);
  smtps_config_set_timeout(config, SMTPS_TIMEOUT_DECISION, 1000);
  *result = smtps_server_new(config, &callbacks, host, &server);
  smtps_config_free(config);
  return server;
}

static smtps_server *serve(struct host *host, const char *addr, int share, smtps_result *result) {
  return serve_with(host, addr, share, 0, result);
}

/* The EHLO reply's lines, concatenated into buf; returns the last line's code. */
static int ehlo(int fd, char *buf, size_t len) {
  size_t used = 0;
  say(fd, "EHLO client.test\r\n");
  for (;;) {
    size_t n = 0;
    char c;
    while (used + n + 1 < len && recv(fd, &c, 1, 0) == 1) {
      buf[used + n++] = c;
      if (c == '\n') {
        break;
      }
    }
    buf[used + n] = 0;
    if (n < 4 || buf[used + 3] != '-') {
      return atoi(buf + used);
    }
    used += n;
  }
}

static void ehlo_offers_only_what_the_host_serves(struct host *host, uint16_t port) {
  char lines[2048], line[512];
  smtps_result result;
  smtps_server *with_auth;
  uint16_t auth_port = 0;
  int fd = dial(port);
  reply(fd, line, sizeof line);
  check("EHLO 250", ehlo(fd, lines, sizeof lines) == 250);
  check("no AUTH without on_auth", strstr(lines, "AUTH") == NULL);
  check("DSN once switched on", strstr(lines, "DSN") != NULL);
  check("no SMTPUTF8 by default", strstr(lines, "SMTPUTF8") == NULL);
  say(fd, "MAIL FROM:<a@x.test> SIZE=2048\r\nRCPT TO:<now@y.test> NOTIFY=FAILURE,DELAY\r\n");
  check("MAIL with SIZE", reply(fd, line, sizeof line) == 250);
  check("RCPT with NOTIFY", reply(fd, line, sizeof line) == 250);
  check("on_mail saw SIZE=2048", strcmp(host->size_param, "2048") == 0);
  check("on_rcpt saw NOTIFY=FAILURE,DELAY", strcmp(host->notify_param, "FAILURE,DELAY") == 0);
  say(fd, "MAIL FROM:<b@x.test> SMTPUTF8\r\n");
  check("SMTPUTF8 not offered: its parameter is refused",
        reply(fd, line, sizeof line) / 100 == 5);
  close(fd);

  with_auth = serve_with(host, "127.0.0.1:0", 0, 1, &result);
  check_result("a server with on_auth", result, SMTPS_RESULT_OK);
  smtps_server_local_port(with_auth, 0, &auth_port);
  smtps_server_start(with_auth);
  fd = dial(auth_port);
  reply(fd, line, sizeof line);
  ehlo(fd, lines, sizeof lines);
  check("AUTH offered with on_auth", strstr(lines, "AUTH PLAIN") != NULL);
  close(fd);
  smtps_server_stop(with_auth, 1000);
  smtps_server_free(with_auth);
}

static void stale_reply_cannot_answer_the_next_rcpt(struct host *host, smtps_server *server,
                                                    uint16_t port) {
  char line[512];
  int fd = dial(port);
  uint64_t first, second;
  check("connect", fd >= 0);
  check("greeting 220", reply(fd, line, sizeof line) == 220);
  say(fd, "EHLO client.test\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<one@y.test>\r\n"
          "RCPT TO:<two@y.test>\r\n");
  check("EHLO 250", reply(fd, line, sizeof line) == 250);
  check("MAIL 250", reply(fd, line, sizeof line) == 250);
  first = deferred(host, 1);
  check("first RCPT deferred with a decision id >= 2^32", first >= (UINT64_C(1) << 32));
  check_result("reply to the first RCPT",
               smtps_server_reply(server, first, 250, "2.1.5", "first ok"), SMTPS_RESULT_OK);
  /* The host's retry logic fires twice: the stale reply must change nothing. */
  check_result("second reply to the same decision",
               smtps_server_reply(server, first, 550, "5.1.1", "stale"),
               SMTPS_RESULT_UNKNOWN_DECISION);
  second = deferred(host, 2);
  check("second RCPT has its own decision id", second != 0 && second != first);
  check_result("a session id is not a decision id",
               smtps_server_reply(server, 1, 550, NULL, NULL), SMTPS_RESULT_UNKNOWN_DECISION);
  check_result("reply to the second RCPT",
               smtps_server_reply(server, second, 250, "2.1.5", "second ok"), SMTPS_RESULT_OK);
  check("first RCPT: its own answer", reply(fd, line, sizeof line) == 250 &&
                                          strstr(line, "first ok") != NULL);
  check("second RCPT: its own answer, not the stale one",
        reply(fd, line, sizeof line) == 250 && strstr(line, "second ok") != NULL);
  say(fd, "RCPT TO:<now@y.test>\r\n");
  check("an RCPT the callback accepts inline", reply(fd, line, sizeof line) == 250);
  check_result("the inline decision cannot be answered afterwards",
               smtps_server_reply(server, second + 1, 550, NULL, NULL),
               SMTPS_RESULT_UNKNOWN_DECISION);
  say(fd, "QUIT\r\n");
  reply(fd, line, sizeof line);
  close(fd);
}

static void reply_after_the_decision_timeout_is_unknown(struct host *host, smtps_server *server,
                                                         uint16_t port) {
  char line[512];
  int fd = dial(port);
  uint64_t late;
  size_t before = host->count;
  check("connect", fd >= 0);
  reply(fd, line, sizeof line);
  say(fd, "EHLO client.test\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<late@y.test>\r\n");
  reply(fd, line, sizeof line);
  reply(fd, line, sizeof line);
  late = deferred(host, before + 1);
  check("RCPT deferred", late != 0);
  check("the library answers 451 4.3.0 after SMTPS_TIMEOUT_DECISION",
        reply(fd, line, sizeof line) == 451 && strstr(line, "4.3.0") != NULL);
  check_result("a reply after the timeout", smtps_server_reply(server, late, 250, NULL, NULL),
               SMTPS_RESULT_UNKNOWN_DECISION);
  say(fd, "QUIT\r\n");
  check("the session goes on: QUIT 221", reply(fd, line, sizeof line) == 221);
  close(fd);
}

static void busy_port_fails_unless_shared(struct host *host, uint16_t port) {
  char addr[64];
  smtps_result result;
  smtps_server *second;
  char detail[256] = "";
  size_t n = 0;
  snprintf(addr, sizeof addr, "127.0.0.1:%u", (unsigned)port);
  second = serve(host, addr, 0, &result);
  check_result("a second server on the busy port", result, SMTPS_RESULT_BIND);
  smtps_last_error(detail, sizeof detail, &n);
  check("the error names the address", strstr(detail, addr) != NULL);
  smtps_server_free(second);
  second = serve(host, addr, 1, &result);
  check_result("the same with share_port", result, SMTPS_RESULT_OK);
  smtps_server_free(second);
}

static void every_failure_sets_last_error(void) {
  smtps_config *config = smtps_config_new();
  char detail[256] = "";
  size_t n = 0;
  check_result("a bad address", smtps_config_add_listener(config, "nowhere", SMTPS_MODE_PLAIN),
               SMTPS_RESULT_INVALID_ADDRESS);
  smtps_last_error(detail, sizeof detail, &n);
  check("last_error names it", strstr(detail, "nowhere") != NULL);
  check_result("a NULL config", smtps_config_set_hostname(NULL, "x"),
               SMTPS_RESULT_NULL_PARAMETER);
  smtps_last_error(detail, sizeof detail, &n);
  check("last_error now tells of the NULL, not the stale address",
        strstr(detail, "nowhere") == NULL && n > 0);
  check_result("a bad address again", smtps_config_add_listener(config, "nowhere", SMTPS_MODE_PLAIN),
               SMTPS_RESULT_INVALID_ADDRESS);
  check_result("a NULL string", smtps_config_add_listener(config, NULL, SMTPS_MODE_PLAIN),
               SMTPS_RESULT_NULL_PARAMETER);
  smtps_last_error(detail, sizeof detail, &n);
  check("last_error tells of the NULL string, not the stale address",
        strstr(detail, "nowhere") == NULL && strstr(detail, "NULL") != NULL);
  check_result("a NULL server", smtps_server_reply(NULL, UINT64_C(1) << 32, 250, NULL, NULL),
               SMTPS_RESULT_NULL_PARAMETER);
  smtps_last_error(detail, sizeof detail, &n);
  check("last_error set for a NULL server", n > 0 && strstr(detail, "nowhere") == NULL);
  smtps_config_free(config);
}

/* Clients that leave while the server still writes: pipelined commands and a close with the
   replies unread (the kernel resets), and a half-close followed by a reset while a decision is
   deferred, whose answer the server then writes into the reset connection (EPIPE: SIGPIPE
   unless every write says MSG_NOSIGNAL). */
static void leaving_clients_cannot_raise_sigpipe(struct host *host, smtps_server *server,
                                                 uint16_t port) {
  static char flood[64 * 1024];
  struct linger abortive = {1, 0};
  char line[512];
  int round, fd;
  size_t off;
  for (off = 0; off + 6 <= sizeof flood - 1; off += 6) {
    memcpy(flood + off, "NOOP\r\n", 6);
  }
  flood[off] = 0;
  for (round = 0; round < 20; round++) {
    size_t before;
    uint64_t id;
    fd = dial(port);
    if (fd < 0) {
      continue;
    }
    if (round % 2 == 0) {
      say(fd, "EHLO client.test\r\n");
      say(fd, flood);
      close(fd); /* unread replies: the kernel answers with RST */
      continue;
    }
    before = host->count;
    reply(fd, line, sizeof line);
    say(fd, "EHLO client.test\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<gone@y.test>\r\n");
    /* Half-closed, as `openssl s_client` at the end of its input: the server is in
       CLOSE_WAIT, still owing the RCPT's answer; the reset then arrives in that state. */
    shutdown(fd, SHUT_WR);
    id = deferred(host, before + 1);
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &abortive, sizeof abortive);
    close(fd);
    nanosleep(&(struct timespec){0, 20 * 1000 * 1000}, NULL);
    /* Written to a reset connection: with plain send() this raises SIGPIPE. */
    smtps_server_reply(server, id, 250, NULL, NULL);
  }
  fd = dial(port);
  check("after 20 leaving clients the host is alive and serves", fd >= 0 &&
                                                                   reply(fd, line, sizeof line) ==
                                                                       220);
  if (fd >= 0) {
    close(fd);
  }
}

static void invalid_callback_answer_greets_no_one(struct host *host, uint16_t port) {
  char line[512];
  int fd;
  host->connect_answer = 7; /* not an SMTPS_ANSWER_* value */
  fd = dial(port);
  check("an invalid on_connect answer: 421 4.3.0, not a greeting",
        fd >= 0 && reply(fd, line, sizeof line) == 421 && strstr(line, "4.3.0") != NULL);
  host->connect_answer = SMTPS_ANSWER_ACCEPT;
  if (fd >= 0) {
    close(fd);
  }
}

/* Whether fd polls readable within ms milliseconds. */
static int readable(int fd, int ms) {
  struct pollfd p;
  p.fd = fd;
  p.events = POLLIN;
  p.revents = 0;
  return poll(&p, 1, ms) == 1 && (p.revents & POLLIN) != 0;
}

static size_t deferred_count(struct host *host) {
  size_t count;
  pthread_mutex_lock(&host->lock);
  count = host->count;
  pthread_mutex_unlock(&host->lock);
  return count;
}

static void polled_reply_wakes_the_loop(struct host *host) {
  char line[512];
  smtps_result result;
  smtps_server *server = serve(host, "127.0.0.1:0", 0, &result);
  uint16_t port = 0;
  size_t n = 0, before = deferred_count(host);
  uint64_t id;
  int sfd = -1, fd, i;
  check_result("polled: server_new", result, SMTPS_RESULT_OK);
  if (server == NULL) {
    return;
  }
  smtps_server_local_port(server, 0, &port);
  check_result("polled: start_polled", smtps_server_start_polled(server, &sfd), SMTPS_RESULT_OK);
  fd = dial(port);
  check("polled: connect", fd >= 0);
  for (i = 0; i < 200 && !readable(fd, 0); i++) {
    readable(sfd, 50);
    smtps_server_dispatch(server, &n);
  }
  check("polled: greeting 220", reply(fd, line, sizeof line) == 220);
  say(fd, "EHLO client.test\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<later@y.test>\r\n");
  for (i = 0; i < 200 && deferred_count(host) == before; i++) {
    readable(sfd, 50);
    smtps_server_dispatch(server, &n);
  }
  id = deferred(host, before + 1);
  check("polled: RCPT deferred", id != 0);
  for (i = 0; i < 100 && readable(sfd, 0); i++) {
    smtps_server_dispatch(server, &n);
  }
  check("polled: the descriptor is quiet before the reply", !readable(sfd, 0));
  check_result("polled: reply on the loop's thread between dispatches",
               smtps_server_reply(server, id, 250, "2.1.5", "later ok"), SMTPS_RESULT_OK);
  check("polled: the reply makes the descriptor readable at once", readable(sfd, 0));
  check_result("polled: dispatch", smtps_server_dispatch(server, &n), SMTPS_RESULT_OK);
  check("polled: EHLO 250", reply(fd, line, sizeof line) == 250);
  check("polled: MAIL 250", reply(fd, line, sizeof line) == 250);
  check("polled: the deferred RCPT answered",
        reply(fd, line, sizeof line) == 250 && strstr(line, "later ok") != NULL);
  /* The end of a poll loop: shutdown, then dispatch until SERVER_STOPPED. */
  check_result("polled: shutdown", smtps_server_shutdown(server, 1000), SMTPS_RESULT_OK);
  result = SMTPS_RESULT_OK;
  for (i = 0; i < 400 && result == SMTPS_RESULT_OK; i++) {
    readable(sfd, (int)smtps_server_next_timeout_ms(server));
    result = smtps_server_dispatch(server, &n);
  }
  check_result("polled: dispatch ends with SERVER_STOPPED", result, SMTPS_RESULT_SERVER_STOPPED);
  check("polled: the idle client got 421", reply(fd, line, sizeof line) == 421);
  check_result("polled: stop after SERVER_STOPPED returns at once", smtps_server_stop(server, 0),
               SMTPS_RESULT_OK);
  check_result("polled: a second stop", smtps_server_stop(server, 0), SMTPS_RESULT_ALREADY_STOPPED);
  smtps_server_free(server);
  if (fd >= 0) {
    close(fd);
  }
}

int main(void) {
  struct host host;
  smtps_server *server;
  smtps_result result;
  uint16_t port = 0;
  memset(&host, 0, sizeof host);
  pthread_mutex_init(&host.lock, NULL);
  pthread_cond_init(&host.cond, NULL);
  host.connect_answer = SMTPS_ANSWER_ACCEPT;

  server = serve(&host, "127.0.0.1:0", 0, &result);
  check_result("server_new", result, SMTPS_RESULT_OK);
  if (server == NULL) {
    return 1;
  }
  smtps_server_local_port(server, 0, &port);
  check_result("server_start", smtps_server_start(server), SMTPS_RESULT_OK);

  stale_reply_cannot_answer_the_next_rcpt(&host, server, port);
  reply_after_the_decision_timeout_is_unknown(&host, server, port);
  busy_port_fails_unless_shared(&host, port);
  every_failure_sets_last_error();
  leaving_clients_cannot_raise_sigpipe(&host, server, port);
  invalid_callback_answer_greets_no_one(&host, port);
  ehlo_offers_only_what_the_host_serves(&host, port);
  polled_reply_wakes_the_loop(&host);

  {
    size_t needed = 0;
    char *text;
    check_result("server_metrics(size only)", smtps_server_metrics(server, NULL, 0, &needed),
                 SMTPS_RESULT_BUFFER_TOO_SMALL);
    text = malloc(needed + 1);
    check_result("server_metrics", smtps_server_metrics(server, text, needed + 1, &needed),
                 SMTPS_RESULT_OK);
    check("metrics: sessions ended with QUIT", text != NULL &&
                                                  strstr(text, "outcome=\"quit\"} 2\n") != NULL);
    check("metrics: the histogram is typed",
          text != NULL && strstr(text, "# TYPE smtps_decision_seconds histogram") != NULL);
    if (getenv("CONTRACT_SHOW_METRICS") != NULL && text != NULL) {
      fputs(text, stderr);
    }
    free(text);
  }
  check_result("server_stop", smtps_server_stop(server, 1000), SMTPS_RESULT_OK);
  smtps_server_free(server);
  if (failures) {
    fprintf(stderr, "%d failure(s)\n", failures);
    return 1;
  }
  printf("all passed\n");
  return 0;
}
