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

  if (argc == 3) {
    config = smtps_config_new();
    smtps_config_set_certificate_files(config, argv[1], argv[2]);
    check("load_certificates(good files)", smtps_config_load_certificates(config), SMTPS_RESULT_OK);
    check("reload_certificates", smtps_config_reload_certificates(config), SMTPS_RESULT_OK);
    smtps_config_free(config);
  }

  if (failures) {
    fprintf(stderr, "%d misuse check(s) failed\n", failures);
    return 1;
  }
  printf("all misuse checks passed\n");
  return 0;
}
