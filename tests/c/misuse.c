/*
 * misuse.c: every misuse of the API is an error code, never undefined behaviour.
 *
 *   misuse [CERT KEY]
 *
 * Exits 0 when every check passes; prints each failure otherwise.
 */
#define _POSIX_C_SOURCE 200809L

#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "smtps.h"

static int failures;

static void check(const char *what, smtps_result got, smtps_result want) {
  if (got != want) {
    char detail[256];
    size_t n = 0;
    smtps_last_error(detail, sizeof detail, &n);
    fprintf(stderr, "FAIL %s: got %u, want %u (%s)\n", what, (unsigned)got, (unsigned)want,
            detail);
    failures++;
  } else {
    printf("ok   %s\n", what);
  }
}

static void check_true(const char *what, int cond) {
  if (!cond) {
    fprintf(stderr, "FAIL %s\n", what);
    failures++;
  } else {
    printf("ok   %s\n", what);
  }
}

static smtps_answer on_message_end(void *ud, const smtps_session *session, uint64_t size) {
  (void)ud;
  (void)session;
  (void)size;
  return SMTPS_ANSWER_ACCEPT;
}

/* Connection-level helpers for the documented contract below. */
static void feed_all(smtps_conn *conn, const char *text) {
  size_t n = 0;
  smtps_conn_feed(conn, (const uint8_t *)text, strlen(text), &n);
}

/* Takes every pending octet of output into out (NUL-terminated, cut to fit). */
static size_t drain_output(smtps_conn *conn, char *out, size_t len) {
  size_t used = 0, n = 0;
  char scratch[512];
  do {
    smtps_conn_take_output(conn, (uint8_t *)scratch, sizeof scratch, &n);
    if (used + n < len) {
      memcpy(out + used, scratch, n);
      used += n;
    }
  } while (n > 0);
  out[used] = 0;
  return used;
}

/* Polls events, accepting every decision, until NONE; returns a bit per kind seen. */
static unsigned accept_events(smtps_conn *conn) {
  unsigned seen = 0;
  smtps_event ev;
  for (;;) {
    smtps_conn_next_event(conn, &ev);
    if (ev.kind == SMTPS_EVENT_KIND_NONE) {
      return seen;
    }
    seen |= 1u << ev.kind;
    if (ev.awaits_decision) {
      smtps_conn_decide(conn, ev.decision, 0, NULL, NULL);
    }
  }
}

/* A plain connection greeted, with EHLO accepted and its output taken. */
static smtps_conn *greeted(smtps_config *config) {
  smtps_conn *conn = NULL;
  char out[2048];
  smtps_conn_new(config, SMTPS_MODE_PLAIN, &conn);
  accept_events(conn);
  feed_all(conn, "EHLO c.test\r\n");
  accept_events(conn);
  drain_output(conn, out, sizeof out);
  return conn;
}

/* The documented contract of smtps_conn_*, beyond error codes. */
static void conn_contract(void) {
  smtps_config *config = smtps_config_new();
  smtps_conn *conn;
  smtps_event ev, rcpt;
  smtps_str from, first, second;
  char out[2048];
  unsigned seen;

  /* Views: read-only calls (const smtps_conn *) never invalidate one; views of different
     getters live side by side until the next call taking a mutable smtps_conn *. */
  conn = greeted(config);
  feed_all(conn, "MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nRCPT TO:<c@y.test>\r\n");
  smtps_conn_next_event(conn, &ev); /* MAIL */
  smtps_conn_decide(conn, ev.decision, 0, NULL, NULL);
  smtps_conn_next_event(conn, &ev); /* the first RCPT */
  smtps_conn_decide(conn, ev.decision, 0, NULL, NULL);
  smtps_conn_next_event(conn, &rcpt);
  check_true("views: second RCPT event", rcpt.kind == SMTPS_EVENT_KIND_RCPT && rcpt.awaits_decision);
  from = smtps_conn_mail_from(conn);
  first = smtps_conn_recipient(conn, 0);
  second = smtps_conn_recipient(conn, 1); /* out of range: empty */
  (void)smtps_conn_recipient_count(conn);
  (void)smtps_conn_wants_read(conn);
  (void)smtps_conn_wants_write(conn);
  (void)smtps_conn_is_closed(conn);
  (void)smtps_conn_next_timeout_ms(conn);
  (void)smtps_conn_pending_output(conn);
  (void)smtps_conn_close_reason(conn);
  (void)smtps_conn_param(conn, "NOTIFY", &second);
  second = smtps_conn_recipient(conn, 1);
  check_true("views: mail_from and recipient(0) survive other getters",
             from.len == 8 && memcmp(from.data, "a@x.test", 8) == 0 && first.len == 8 &&
                 memcmp(first.data, "b@y.test", 8) == 0 && second.len == 0);
  check_true("views: the event's text survives read-only getters",
             rcpt.text.len == 8 && memcmp(rcpt.text.data, "c@y.test", 8) == 0);
  smtps_conn_decide(conn, rcpt.decision, 0, NULL, NULL);
  first = smtps_conn_recipient(conn, 0);
  second = smtps_conn_recipient(conn, 1);
  check_true("views: re-read after a decision",
             smtps_conn_recipient_count(conn) == 2 && first.len == 8 && second.len == 8 &&
                 memcmp(second.data, "c@y.test", 8) == 0);
  smtps_conn_free(conn);

  /* A message refused mid-body (smtps_conn_refuse_message): neither MESSAGE_END nor
     MESSAGE_ABORTED follows; the refusal answers the end of the body. */
  conn = greeted(config);
  feed_all(conn, "MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\n");
  accept_events(conn);
  feed_all(conn, "Subject: t\r\n\r\nfirst part\r\n");
  smtps_conn_next_event(conn, &ev);
  check_true("refuse: a BODY event", ev.kind == SMTPS_EVENT_KIND_BODY);
  check("refuse_message", smtps_conn_refuse_message(conn, 452, "4.3.1", "Spool full"), SMTPS_RESULT_OK);
  accept_events(conn);
  feed_all(conn, "second part\r\n.\r\n");
  seen = accept_events(conn);
  check_true("refuse: no MESSAGE_END, no MESSAGE_ABORTED",
             !(seen & (1u << SMTPS_EVENT_KIND_MESSAGE_END)) &&
                 !(seen & (1u << SMTPS_EVENT_KIND_MESSAGE_ABORTED)));
  drain_output(conn, out, sizeof out);
  check_true("refuse: the end is answered 452 4.3.1", strstr(out, "452 4.3.1") != NULL);
  smtps_conn_free(conn);
  /* The same when the end of the body arrived with the refused chunk. */
  conn = greeted(config);
  feed_all(conn, "MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\n");
  accept_events(conn);
  feed_all(conn, "Subject: t\r\n\r\nall\r\n.\r\n");
  smtps_conn_next_event(conn, &ev);
  smtps_conn_refuse_message(conn, 452, NULL, NULL);
  seen = accept_events(conn);
  check_true("refuse (end already read): no MESSAGE_END, no MESSAGE_ABORTED",
             ev.kind == SMTPS_EVENT_KIND_BODY && !(seen & (1u << SMTPS_EVENT_KIND_MESSAGE_END)) &&
                 !(seen & (1u << SMTPS_EVENT_KIND_MESSAGE_ABORTED)));
  drain_output(conn, out, sizeof out);
  check_true("refuse (end already read): answered 452", strstr(out, "452 ") != NULL);
  smtps_conn_free(conn);

  /* smtps_conn_close while MESSAGE_END awaits its decision: allowed; MESSAGE_ABORTED
     (CLOSED) follows, the decision is gone, the client gets only the 421. */
  conn = greeted(config);
  feed_all(conn, "MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\n");
  accept_events(conn);
  drain_output(conn, out, sizeof out);
  feed_all(conn, "Subject: t\r\n\r\nbody\r\n.\r\n");
  do {
    smtps_conn_next_event(conn, &ev);
  } while (ev.kind == SMTPS_EVENT_KIND_BODY);
  check_true("close: MESSAGE_END awaits a decision",
             ev.kind == SMTPS_EVENT_KIND_MESSAGE_END && ev.awaits_decision);
  check("close while a decision is awaited", smtps_conn_close(conn, 421, "4.3.2", "Shutting down"),
        SMTPS_RESULT_OK);
  smtps_conn_next_event(conn, &rcpt);
  check_true("close: MESSAGE_ABORTED (CLOSED) follows",
             rcpt.kind == SMTPS_EVENT_KIND_MESSAGE_ABORTED &&
                 rcpt.abort_reason == SMTPS_ABORT_REASON_CLOSED);
  check("close: the decision is unknown afterwards",
        smtps_conn_decide(conn, ev.decision, 250, NULL, NULL), SMTPS_RESULT_UNKNOWN_DECISION);
  drain_output(conn, out, sizeof out);
  check_true("close: the client gets 421, never 250",
             strstr(out, "421 4.3.2") != NULL && strstr(out, "250") == NULL);
  check_true("close: closed, reason REFUSED", smtps_conn_is_closed(conn) &&
                                                  smtps_conn_close_reason(conn) ==
                                                      SMTPS_CLOSE_REASON_REFUSED);
  /* smtps_conn_next_timeout_ms: -1 only once closed and every octet sent. */
  smtps_conn_handle_timeout(conn);
  check_true("timeout: -1 once closed and the output sent", smtps_conn_next_timeout_ms(conn) == -1);
  smtps_conn_free(conn);
  conn = greeted(config);
  feed_all(conn, "QUIT\r\n");
  accept_events(conn);
  check_true("timeout: a timer runs while the 221 waits",
             smtps_conn_is_closed(conn) && smtps_conn_wants_write(conn) &&
                 smtps_conn_next_timeout_ms(conn) >= 0);
  drain_output(conn, out, sizeof out);
  check_true("timeout: -1 after the 221 was taken",
             strstr(out, "221") != NULL && smtps_conn_next_timeout_ms(conn) == -1);
  smtps_conn_free(conn);

  /* AUTH: the connection level offers it whenever the session is secure (here: plaintext
     allowed), unless the host switches it off. */
  check("set_extension(unknown)", smtps_config_set_extension(config, 3, false),
        SMTPS_RESULT_INVALID_PARAMETER);
  smtps_config_set_danger_allow_plaintext_auth(config, true);
  check("set_extension(AUTH, off)",
        smtps_config_set_extension(config, SMTPS_EXTENSION_AUTH, false), SMTPS_RESULT_OK);
  conn = greeted(config);
  feed_all(conn, "EHLO c.test\r\nAUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n");
  accept_events(conn);
  drain_output(conn, out, sizeof out);
  check_true("AUTH switched off: not offered, and refused with 502",
             strstr(out, "AUTH PLAIN") == NULL && strstr(out, "502") != NULL);
  smtps_conn_free(conn);
  smtps_config_set_extension(config, SMTPS_EXTENSION_AUTH, true);
  smtps_config_set_danger_allow_plaintext_auth(config, false);
  conn = greeted(config);
  feed_all(conn, "EHLO c.test\r\n");
  accept_events(conn);
  drain_output(conn, out, sizeof out);
  check_true("AUTH: not offered in plaintext", strstr(out, "AUTH") == NULL);
  smtps_conn_free(conn);
  smtps_config_set_danger_allow_plaintext_auth(config, true);
  conn = greeted(config);
  feed_all(conn, "EHLO c.test\r\n");
  accept_events(conn);
  drain_output(conn, out, sizeof out);
  check_true("AUTH: offered once secure (or plaintext allowed)", strstr(out, "AUTH PLAIN") != NULL);
  feed_all(conn, "AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n"); /* \0alice\0secret */
  smtps_conn_next_event(conn, &ev);
  check_true("AUTH: an AUTH event awaits the host",
             ev.kind == SMTPS_EVENT_KIND_AUTH && ev.awaits_decision && ev.text.len == 5);
  check("AUTH: refused by the host", smtps_conn_decide(conn, ev.decision, 502, "5.5.1", "AUTH not offered"),
        SMTPS_RESULT_OK);
  drain_output(conn, out, sizeof out);
  check_true("AUTH: the client gets the host's 502", strstr(out, "502 5.5.1") != NULL);
  smtps_conn_free(conn);
  smtps_config_free(config);
}

/* TLS failures read with smtps_conn_read_fd: not an error code (unlike smtps_conn_feed); the
   connection closes itself (SMTPS_CLOSE_REASON_TLS) with the alert in its output. */
static void conn_tls_failure(const char *cert, const char *key) {
  static const char junk[] = "EHLO plaintext.test\r\n";
  smtps_config *config = smtps_config_new();
  smtps_conn *conn = NULL;
  int pair[2];
  size_t n = 0;
  char out[512];
  smtps_config_set_certificate_files(config, cert, key);
  smtps_conn_new(config, SMTPS_MODE_IMPLICIT_TLS, &conn);
  check("tls: feed(plaintext to implicit TLS)",
        smtps_conn_feed(conn, (const uint8_t *)junk, sizeof junk - 1, &n), SMTPS_RESULT_TLS_HANDSHAKE);
  smtps_conn_free(conn);
  conn = NULL;
  smtps_conn_new(config, SMTPS_MODE_IMPLICIT_TLS, &conn);
  if (socketpair(AF_UNIX, SOCK_STREAM, 0, pair) != 0) {
    check_true("socketpair", 0);
    return;
  }
  if (write(pair[1], junk, sizeof junk - 1) != (ssize_t)(sizeof junk - 1)) {
    check_true("write", 0);
  }
  check("tls: read_fd(plaintext to implicit TLS) is TLS_HANDSHAKE, as feed",
        smtps_conn_read_fd(conn, pair[0], &n), SMTPS_RESULT_TLS_HANDSHAKE);
  check_true("tls: read_fd read it", n == sizeof junk - 1);
  check_true("tls: closed, reason TLS", smtps_conn_is_closed(conn) &&
                                            smtps_conn_close_reason(conn) == SMTPS_CLOSE_REASON_TLS);
  check_true("tls: an alert to send", smtps_conn_wants_write(conn));
  check_true("tls: a timer (the linger) while it waits", smtps_conn_next_timeout_ms(conn) >= 0);
  check("tls: write_fd(the alert)", smtps_conn_write_fd(conn, pair[0], &n), SMTPS_RESULT_OK);
  check_true("tls: the alert is a TLS alert record",
             n >= 5 && read(pair[1], out, sizeof out) == (ssize_t)n && out[0] == 0x15);
  check_true("tls: nothing left, -1", !smtps_conn_wants_write(conn) &&
                                          smtps_conn_next_timeout_ms(conn) == -1);
  smtps_conn_free(conn);
  close(pair[0]);
  close(pair[1]);
  smtps_config_free(config);
}

int main(int argc, char **argv) {
  smtps_config *config = smtps_config_new();
  smtps_callbacks callbacks;
  smtps_server *server = NULL;
  smtps_conn *conn = NULL;
  char buf[256];
  size_t n = 0;
  int fd = -1;
  smtps_event ev;
  smtps_str s;

  memset(&callbacks, 0, sizeof callbacks);
  callbacks.on_message_end = on_message_end;

  /* NULL pointers. */
  check("config_add_listener(NULL config)",
        smtps_config_add_listener(NULL, "127.0.0.1:0", SMTPS_MODE_PLAIN),
        SMTPS_RESULT_NULL_PARAMETER);
  check("config_add_listener(NULL addr)", smtps_config_add_listener(config, NULL, SMTPS_MODE_PLAIN),
        SMTPS_RESULT_NULL_PARAMETER);
  check("config_set_hostname(NULL)", smtps_config_set_hostname(config, NULL),
        SMTPS_RESULT_NULL_PARAMETER);
  check("server_new(NULL config)", smtps_server_new(NULL, &callbacks, NULL, &server),
        SMTPS_RESULT_NULL_PARAMETER);
  check("server_new(NULL callbacks)", smtps_server_new(config, NULL, NULL, &server),
        SMTPS_RESULT_NULL_PARAMETER);
  check("server_new(NULL out)", smtps_server_new(config, &callbacks, NULL, NULL),
        SMTPS_RESULT_NULL_PARAMETER);
  check("server_start(NULL)", smtps_server_start(NULL), SMTPS_RESULT_NULL_PARAMETER);
  check("server_stop(NULL)", smtps_server_stop(NULL, 0), SMTPS_RESULT_NULL_PARAMETER);
  check("server_reply(NULL)", smtps_server_reply(NULL, 1, 250, NULL, NULL),
        SMTPS_RESULT_NULL_PARAMETER);
  check("conn_new(NULL out)", smtps_conn_new(config, SMTPS_MODE_PLAIN, NULL),
        SMTPS_RESULT_NULL_PARAMETER);
  check("conn_feed(NULL conn)", smtps_conn_feed(NULL, (const uint8_t *)"x", 1, &n),
        SMTPS_RESULT_NULL_PARAMETER);
  check("conn_next_event(NULL)", smtps_conn_next_event(NULL, &ev), SMTPS_RESULT_NULL_PARAMETER);
  check("result_message(NULL buf)", smtps_result_message(SMTPS_RESULT_OK, NULL, 10, &n),
        SMTPS_RESULT_NULL_PARAMETER);
  check("last_error(NULL out_n)", smtps_last_error(buf, sizeof buf, NULL),
        SMTPS_RESULT_NULL_PARAMETER);
  s = smtps_session_peer(NULL);
  check_true("session_peer(NULL) is empty", s.len == 0 && s.data != NULL);
  check_true("session_id(NULL) is 0", smtps_session_id(NULL) == 0);
  check_true("session_helo_extended(NULL) is false", !smtps_session_helo_extended(NULL));
  check_true("conn_is_closed(NULL) is true", smtps_conn_is_closed(NULL));
  check_true("conn_wants_read(NULL) is false", !smtps_conn_wants_read(NULL));
  smtps_config_free(NULL);
  smtps_server_free(NULL);
  smtps_conn_free(NULL);
  check_true("free(NULL) is a no-op", 1);

  /* Bad values. */
  check("add_listener(bad address)", smtps_config_add_listener(config, "localhost", SMTPS_MODE_PLAIN),
        SMTPS_RESULT_INVALID_ADDRESS);
  check("add_listener(bad mode)", smtps_config_add_listener(config, "127.0.0.1:0", 42),
        SMTPS_RESULT_INVALID_PARAMETER);
  check("set_timeout(0 ms)", smtps_config_set_timeout(config, SMTPS_TIMEOUT_COMMAND, 0),
        SMTPS_RESULT_INVALID_PARAMETER);
  check("set_limit(unknown)", smtps_config_set_limit(config, 99, 1), SMTPS_RESULT_INVALID_PARAMETER);
  check("server_new(no listeners)", smtps_server_new(config, &callbacks, NULL, &server),
        SMTPS_RESULT_NO_LISTENERS);
  check_true("server_out untouched on failure", server == NULL);
  check("result_message", smtps_result_message(SMTPS_RESULT_NO_LISTENERS, buf, sizeof buf, &n),
        SMTPS_RESULT_OK);
  check_true("result_message text", strcmp(buf, "no listener configured") == 0 && n == strlen(buf));
  check("result_message(tiny buffer)", smtps_result_message(SMTPS_RESULT_NO_LISTENERS, buf, 3, &n),
        SMTPS_RESULT_OK);
  check_true("result_message cut and terminated", n == 2 && buf[2] == '\0');

  /* A certificate file that does not exist: the error names it. */
  check("set_certificate_files", smtps_config_set_certificate_files(config, "/nonexistent/cert.pem",
                                                                      "/nonexistent/key.pem"),
        SMTPS_RESULT_OK);
  check("load_certificates(missing file)", smtps_config_load_certificates(config),
        SMTPS_RESULT_CERTIFICATE_FILE);
  smtps_last_error(buf, sizeof buf, &n);
  check_true("last_error names the file", strstr(buf, "/nonexistent/cert.pem") != NULL);
  check("conn_new(implicit, missing file)", smtps_conn_new(config, SMTPS_MODE_IMPLICIT_TLS, &conn),
        SMTPS_RESULT_CERTIFICATE_FILE);
  smtps_config_free(config);

  /* A TLS connection without a certificate. */
  config = smtps_config_new();
  check("conn_new(TLS without certificate)", smtps_conn_new(config, SMTPS_MODE_IMPLICIT_TLS, &conn),
        SMTPS_RESULT_TLS_NOT_CONFIGURED);
  check("add_listener(TLS)", smtps_config_add_listener(config, "127.0.0.1:0", SMTPS_MODE_IMPLICIT_TLS),
        SMTPS_RESULT_OK);
  check("server_new(TLS without certificate)", smtps_server_new(config, &callbacks, NULL, &server),
        SMTPS_RESULT_TLS_NOT_CONFIGURED);
  smtps_config_free(config);

  /* Connection level: decisions. */
  config = smtps_config_new();
  check("conn_new(plain)", smtps_conn_new(config, SMTPS_MODE_PLAIN, &conn), SMTPS_RESULT_OK);
  check("conn_feed(NULL data, len 1)", smtps_conn_feed(conn, NULL, 1, &n), SMTPS_RESULT_NULL_PARAMETER);
  check("conn_next_event", smtps_conn_next_event(conn, &ev), SMTPS_RESULT_OK);
  check_true("first event is CONNECT", ev.kind == SMTPS_EVENT_KIND_CONNECT && ev.awaits_decision);
  check("conn_decide(unknown decision)", smtps_conn_decide(conn, ev.decision + 100, 0, NULL, NULL),
        SMTPS_RESULT_UNKNOWN_DECISION);
  check("conn_decide(invalid code)", smtps_conn_decide(conn, ev.decision, 999, NULL, NULL),
        SMTPS_RESULT_INVALID_REPLY);
  check("conn_decide(status of another class)",
        smtps_conn_decide(conn, ev.decision, 250, "5.0.0", NULL), SMTPS_RESULT_INVALID_REPLY);
  /* RFC 5321 4.3.2: the greeting is 220; a 250 would greet clients with "250 OK". */
  check("conn_decide(250 to CONNECT)", smtps_conn_decide(conn, ev.decision, 250, NULL, NULL),
        SMTPS_RESULT_INVALID_REPLY);
  check("conn_decide(550 to CONNECT: only 554 or 421 refuse)",
        smtps_conn_decide(conn, ev.decision, 550, NULL, NULL), SMTPS_RESULT_INVALID_REPLY);
  check("conn_decide(accept)", smtps_conn_decide(conn, ev.decision, 0, NULL, NULL), SMTPS_RESULT_OK);
  check("conn_decide(twice)", smtps_conn_decide(conn, ev.decision, 0, NULL, NULL),
        SMTPS_RESULT_UNKNOWN_DECISION);
  check("conn_take_output", smtps_conn_take_output(conn, (uint8_t *)buf, sizeof buf, &n),
        SMTPS_RESULT_OK);
  check_true("greeting is 220", n > 4 && memcmp(buf, "220 ", 4) == 0);
  {
    static const char commands[] = "EHLO c.test\r\nMAIL FROM:<a@x.test> SIZE=10\r\n";
    check("conn_feed(EHLO, MAIL SIZE=10)",
          smtps_conn_feed(conn, (const uint8_t *)commands, sizeof commands - 1, &n),
          SMTPS_RESULT_OK);
    smtps_conn_next_event(conn, &ev);
    check_true("conn_param on HELO finds nothing", !smtps_conn_param(conn, "SIZE", &s));
    smtps_conn_decide(conn, ev.decision, 0, NULL, NULL);
    smtps_conn_next_event(conn, &ev);
    check_true("next event is MAIL", ev.kind == SMTPS_EVENT_KIND_MAIL);
    check_true("conn_param(SIZE) is 10",
               smtps_conn_param(conn, "size", &s) && s.len == 2 && memcmp(s.data, "10", 2) == 0);
    check_true("conn_param(NULL keyword) is false", !smtps_conn_param(conn, NULL, &s));
    check_true("conn_param(NULL conn) is false", !smtps_conn_param(NULL, "SIZE", &s));
    check_true("no sender before MAIL is accepted", smtps_conn_mail_from(conn).len == 0);
    smtps_conn_decide(conn, ev.decision, 0, NULL, NULL);
    s = smtps_conn_mail_from(conn);
    check_true("conn_mail_from once accepted", s.len == 8 && memcmp(s.data, "a@x.test", 8) == 0);
    smtps_conn_feed(conn, (const uint8_t *)"RCPT TO:<b@y.test>\r\nRSET\r\n", 26, &n);
    smtps_conn_next_event(conn, &ev);
    smtps_conn_decide(conn, ev.decision, 0, NULL, NULL);
    s = smtps_conn_recipient(conn, 0);
    check_true("conn_recipient(0)", smtps_conn_recipient_count(conn) == 1 && s.len == 8 &&
                                        memcmp(s.data, "b@y.test", 8) == 0);
    check_true("conn_recipient(out of range) is empty", smtps_conn_recipient(conn, 1).len == 0);
    smtps_conn_next_event(conn, &ev);
    check_true("RSET: no transaction", ev.kind == SMTPS_EVENT_KIND_RESET &&
                                           smtps_conn_mail_from(conn).len == 0 &&
                                           smtps_conn_recipient_count(conn) == 0);
    check_true("conn_recipient_count(NULL) is 0", smtps_conn_recipient_count(NULL) == 0);
  }
  smtps_conn_free(conn);

  /* Server level: state. */
  check("add_listener(plain)", smtps_config_add_listener(config, "127.0.0.1:0", SMTPS_MODE_PLAIN),
        SMTPS_RESULT_OK);
  check("server_new", smtps_server_new(config, &callbacks, NULL, &server), SMTPS_RESULT_OK);
  smtps_config_free(config);
  check("server_local_port(out of range)", smtps_server_local_port(server, 5, &(uint16_t){0}),
        SMTPS_RESULT_INVALID_PARAMETER);
  check("server_reply(a session id, not a decision id)",
        smtps_server_reply(server, 12345, 250, NULL, NULL), SMTPS_RESULT_UNKNOWN_DECISION);
  check("server_reply(unknown decision)",
        smtps_server_reply(server, UINT64_C(1) << 40, 250, NULL, NULL),
        SMTPS_RESULT_UNKNOWN_DECISION);
  check("server_dispatch(not polled)", smtps_server_dispatch(server, &n), SMTPS_RESULT_WRONG_STATE);
  check("server_reload_certificates(no TLS)", smtps_server_reload_certificates(server),
        SMTPS_RESULT_TLS_NOT_CONFIGURED);
  check("server_start", smtps_server_start(server), SMTPS_RESULT_OK);
  check("server_start(twice)", smtps_server_start(server), SMTPS_RESULT_WRONG_STATE);
  check("server_start_polled(after start)", smtps_server_start_polled(server, &fd),
        SMTPS_RESULT_WRONG_STATE);
  check("server_reply(unknown decision, running)",
        smtps_server_reply(server, UINT64_C(1) << 40, 250, NULL, NULL),
        SMTPS_RESULT_UNKNOWN_DECISION);
  check("server_stop", smtps_server_stop(server, 0), SMTPS_RESULT_OK);
  check("server_stop(twice)", smtps_server_stop(server, 0), SMTPS_RESULT_ALREADY_STOPPED);
  check("server_shutdown(after stop)", smtps_server_shutdown(server, 0),
        SMTPS_RESULT_ALREADY_STOPPED);
  check("server_start(after stop)", smtps_server_start(server), SMTPS_RESULT_SERVER_STOPPED);
  check("server_run(after stop)", smtps_server_run(server), SMTPS_RESULT_SERVER_STOPPED);
  check("server_reply(after stop)", smtps_server_reply(server, 1, 250, NULL, NULL),
        SMTPS_RESULT_SERVER_STOPPED);
  smtps_server_free(server);

  /* A polled server stopped before it ever ran callbacks. */
  config = smtps_config_new();
  smtps_config_add_listener(config, "127.0.0.1:0", SMTPS_MODE_PLAIN);
  check("server_new(polled)", smtps_server_new(config, &callbacks, NULL, &server), SMTPS_RESULT_OK);
  smtps_config_free(config);
  check("server_dispatch(before start)", smtps_server_dispatch(server, &n), SMTPS_RESULT_WRONG_STATE);
  check("server_start_polled(NULL fd_out)", smtps_server_start_polled(server, NULL),
        SMTPS_RESULT_NULL_PARAMETER);
  check("server_start_polled", smtps_server_start_polled(server, &fd), SMTPS_RESULT_OK);
  check_true("poll fd is valid", fd >= 0);
  check("server_dispatch", smtps_server_dispatch(server, &n), SMTPS_RESULT_OK);
  check("server_shutdown", smtps_server_shutdown(server, 0), SMTPS_RESULT_OK);
  check("server_shutdown(twice)", smtps_server_shutdown(server, 0), SMTPS_RESULT_ALREADY_STOPPED);
  check("server_stop(after shutdown)", smtps_server_stop(server, 0), SMTPS_RESULT_OK);
  check("server_dispatch(after stop)", smtps_server_dispatch(server, &n), SMTPS_RESULT_SERVER_STOPPED);
  smtps_server_free(server);

  /* A server never started: stop closes its listeners. */
  config = smtps_config_new();
  smtps_config_add_listener(config, "127.0.0.1:0", SMTPS_MODE_PLAIN);
  check("server_new(unstarted)", smtps_server_new(config, &callbacks, NULL, &server), SMTPS_RESULT_OK);
  smtps_config_free(config);
  check("server_stop(never started)", smtps_server_stop(server, 0), SMTPS_RESULT_OK);
  check("server_start(after stop, never started)", smtps_server_start(server),
        SMTPS_RESULT_SERVER_STOPPED);
  smtps_server_free(server);

  /* Freed without a stop: free stops it. */
  config = smtps_config_new();
  smtps_config_add_listener(config, "127.0.0.1:0", SMTPS_MODE_PLAIN);
  check("server_new(free while running)", smtps_server_new(config, &callbacks, NULL, &server),
        SMTPS_RESULT_OK);
  smtps_config_free(config);
  check("server_start(free while running)", smtps_server_start(server), SMTPS_RESULT_OK);
  smtps_server_free(server);

  /* PROXY protocol: configuration. */
  server = NULL;
  config = smtps_config_new();
  check("add_proxy_trusted(NULL config)", smtps_config_add_proxy_trusted(NULL, "10.0.0.0/8"),
        SMTPS_RESULT_NULL_PARAMETER);
  check("add_proxy_trusted(NULL cidr)", smtps_config_add_proxy_trusted(config, NULL),
        SMTPS_RESULT_NULL_PARAMETER);
  check("add_proxy_trusted(host bits set)", smtps_config_add_proxy_trusted(config, "10.0.0.1/8"),
        SMTPS_RESULT_INVALID_ADDRESS);
  smtps_last_error(buf, sizeof buf, &n);
  check_true("last_error names the bad CIDR", strstr(buf, "10.0.0.1/8") != NULL);
  check("add_proxy_trusted(a host name)", smtps_config_add_proxy_trusted(config, "lb.example.org"),
        SMTPS_RESULT_INVALID_ADDRESS);
  check("add_proxy_trusted(prefix too long)", smtps_config_add_proxy_trusted(config, "::/129"),
        SMTPS_RESULT_INVALID_ADDRESS);
  check("set_listener_proxy(NULL config)", smtps_config_set_listener_proxy(NULL, 0, SMTPS_PROXY_REQUIRED),
        SMTPS_RESULT_NULL_PARAMETER);
  check("set_listener_proxy(no listener yet)",
        smtps_config_set_listener_proxy(config, 0, SMTPS_PROXY_REQUIRED),
        SMTPS_RESULT_INVALID_PARAMETER);
  smtps_config_add_listener(config, "127.0.0.1:0", SMTPS_MODE_PLAIN);
  check("set_listener_proxy(index out of range)",
        smtps_config_set_listener_proxy(config, 1, SMTPS_PROXY_REQUIRED),
        SMTPS_RESULT_INVALID_PARAMETER);
  check("set_listener_proxy(bad mode)", smtps_config_set_listener_proxy(config, 0, 42),
        SMTPS_RESULT_INVALID_PARAMETER);
  check("set_listener_proxy(required)", smtps_config_set_listener_proxy(config, 0, SMTPS_PROXY_REQUIRED),
        SMTPS_RESULT_OK);
  check("server_new(PROXY listener, nothing trusted)",
        smtps_server_new(config, &callbacks, NULL, &server), SMTPS_RESULT_PROXY_NOT_CONFIGURED);
  smtps_last_error(buf, sizeof buf, &n);
  check_true("last_error names the listener and the fix",
             strstr(buf, "listener 0") != NULL &&
                 strstr(buf, "smtps_config_add_proxy_trusted") != NULL);
  check_true("server_out untouched on a PROXY failure", server == NULL);
  check_true("proxy_trusts(nothing trusted) is false", !smtps_config_proxy_trusts(config, "127.0.0.1"));
  check("add_proxy_trusted(block)", smtps_config_add_proxy_trusted(config, "127.0.0.0/8"),
        SMTPS_RESULT_OK);
  check("add_proxy_trusted(address)", smtps_config_add_proxy_trusted(config, "::1"), SMTPS_RESULT_OK);
  check_true("proxy_trusts(IP)", smtps_config_proxy_trusts(config, "127.0.0.1"));
  check_true("proxy_trusts(IP:port)", smtps_config_proxy_trusts(config, "127.0.0.1:40000"));
  check_true("proxy_trusts([v6]:port)", smtps_config_proxy_trusts(config, "[::1]:25"));
  check_true("proxy_trusts(v6)", smtps_config_proxy_trusts(config, "::1"));
  check_true("proxy_trusts(untrusted) is false", !smtps_config_proxy_trusts(config, "192.0.2.1"));
  check_true("proxy_trusts(not an IP) is false", !smtps_config_proxy_trusts(config, "localhost"));
  check_true("proxy_trusts(NULL ip) is false", !smtps_config_proxy_trusts(config, NULL));
  check_true("proxy_trusts(NULL config) is false", !smtps_config_proxy_trusts(NULL, "127.0.0.1"));
  check("set_timeout(PROXY header)", smtps_config_set_timeout(config, SMTPS_TIMEOUT_PROXY_HEADER, 3000),
        SMTPS_RESULT_OK);
  check("server_new(PROXY listener, trusted)", smtps_server_new(config, &callbacks, NULL, &server),
        SMTPS_RESULT_OK);
  smtps_server_free(server);
  server = NULL;
  smtps_config_free(config);

  /* PROXY protocol: connection level. */
  config = smtps_config_new();
  smtps_conn_new(config, SMTPS_MODE_PLAIN, &conn);
  check("conn_feed(before expect)", smtps_conn_feed(conn, (const uint8_t *)"NOOP\r\n", 6, &n),
        SMTPS_RESULT_OK);
  check("conn_expect_proxy_header(after input)", smtps_conn_expect_proxy_header(conn),
        SMTPS_RESULT_WRONG_STATE);
  smtps_last_error(buf, sizeof buf, &n);
  check_true("last_error says when to call it", strstr(buf, "smtps_conn_new") != NULL);
  smtps_conn_free(conn);
  smtps_conn_new(config, SMTPS_MODE_PLAIN, &conn);
  smtps_conn_next_event(conn, &ev);
  check("conn_expect_proxy_header(after an event)", smtps_conn_expect_proxy_header(conn),
        SMTPS_RESULT_WRONG_STATE);
  smtps_conn_free(conn);
  smtps_conn_new(config, SMTPS_MODE_PLAIN, &conn);
  check("conn_expect_proxy_header", smtps_conn_expect_proxy_header(conn), SMTPS_RESULT_OK);
  check("conn_expect_proxy_header(twice)", smtps_conn_expect_proxy_header(conn), SMTPS_RESULT_OK);
  s = smtps_conn_proxy_client(conn);
  check_true("conn_proxy_client before the header is empty", s.len == 0 && s.data != NULL);
  {
    static const char header[] = "PROXY TCP4 192.0.2.1 198.51.100.7 56324 25\r\n";
    smtps_bytes value = {NULL, 0};
    check("conn_feed(v1 header)",
          smtps_conn_feed(conn, (const uint8_t *)header, sizeof header - 1, &n), SMTPS_RESULT_OK);
    s = smtps_conn_proxy_client(conn);
    check_true("conn_proxy_client", s.len == 15 && memcmp(s.data, "192.0.2.1:56324", 15) == 0);
    s = smtps_conn_proxy_destination(conn);
    check_true("conn_proxy_destination", s.len == 15 && memcmp(s.data, "198.51.100.7:25", 15) == 0);
    check_true("conn_proxy_tlv(v1 header) is false",
               !smtps_conn_proxy_tlv(conn, SMTPS_PP2_TYPE_AUTHORITY, &value) && value.data == NULL);
    check_true("conn_proxy_ssl_tlv(v1 header) is false",
               !smtps_conn_proxy_ssl_tlv(conn, SMTPS_PP2_SUBTYPE_SSL_CN, &value));
    check_true("conn_proxy_tlv(NULL out) is false",
               !smtps_conn_proxy_tlv(conn, SMTPS_PP2_TYPE_AUTHORITY, NULL));
    smtps_conn_next_event(conn, &ev);
    check_true("CONNECT after the header", ev.kind == SMTPS_EVENT_KIND_CONNECT);
  }
  smtps_conn_free(conn);
  smtps_conn_new(config, SMTPS_MODE_PLAIN, &conn);
  smtps_conn_expect_proxy_header(conn);
  check("conn_feed(no header)", smtps_conn_feed(conn, (const uint8_t *)"EHLO x\r\n", 8, &n),
        SMTPS_RESULT_OK);
  check_true("no header: closed", smtps_conn_is_closed(conn));
  check_true("no header: reason PROXY_HEADER",
             smtps_conn_close_reason(conn) == SMTPS_CLOSE_REASON_PROXY_HEADER);
  smtps_conn_take_output(conn, (uint8_t *)buf, sizeof buf, &n);
  check_true("no header: no banner", n == 0);
  smtps_conn_free(conn);
  smtps_config_free(config);
  check("conn_expect_proxy_header(NULL)", smtps_conn_expect_proxy_header(NULL),
        SMTPS_RESULT_NULL_PARAMETER);
  s = smtps_conn_proxy_client(NULL);
  check_true("conn_proxy_client(NULL) is empty", s.len == 0 && s.data != NULL);
  s = smtps_conn_proxy_destination(NULL);
  check_true("conn_proxy_destination(NULL) is empty", s.len == 0 && s.data != NULL);
  check_true("conn_proxy_tlv(NULL) is false", !smtps_conn_proxy_tlv(NULL, SMTPS_PP2_TYPE_SSL, NULL));
  check_true("conn_proxy_ssl_tlv(NULL) is false",
             !smtps_conn_proxy_ssl_tlv(NULL, SMTPS_PP2_SUBTYPE_SSL_VERSION, NULL));
  s = smtps_session_proxied_by(NULL);
  check_true("session_proxied_by(NULL) is empty", s.len == 0 && s.data != NULL);
  check_true("session_proxy_tlv(NULL) is false",
             !smtps_session_proxy_tlv(NULL, SMTPS_PP2_TYPE_AUTHORITY, NULL));
  check_true("session_proxy_ssl_tlv(NULL) is false",
             !smtps_session_proxy_ssl_tlv(NULL, SMTPS_PP2_SUBTYPE_SSL_CN, NULL));

  conn_contract();

  if (argc == 3) {
    config = smtps_config_new();
    smtps_config_set_certificate_files(config, argv[1], argv[2]);
    check("load_certificates(good files)", smtps_config_load_certificates(config), SMTPS_RESULT_OK);
    check("reload_certificates", smtps_config_reload_certificates(config), SMTPS_RESULT_OK);
    smtps_config_free(config);
    conn_tls_failure(argv[1], argv[2]);
  }

  if (failures) {
    fprintf(stderr, "%d misuse check(s) failed\n", failures);
    return 1;
  }
  printf("all misuse checks passed\n");
  return 0;
}
