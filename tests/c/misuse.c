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
  check("conn_decide(accept)", smtps_conn_decide(conn, ev.decision, 0, NULL, NULL), SMTPS_RESULT_OK);
  check("conn_decide(twice)", smtps_conn_decide(conn, ev.decision, 0, NULL, NULL),
        SMTPS_RESULT_UNKNOWN_DECISION);
  check("conn_take_output", smtps_conn_take_output(conn, (uint8_t *)buf, sizeof buf, &n),
        SMTPS_RESULT_OK);
  check_true("greeting is 220", n > 4 && memcmp(buf, "220 ", 4) == 0);
  smtps_conn_free(conn);

  /* Server level: state. */
  check("add_listener(plain)", smtps_config_add_listener(config, "127.0.0.1:0", SMTPS_MODE_PLAIN),
        SMTPS_RESULT_OK);
  check("server_new", smtps_server_new(config, &callbacks, NULL, &server), SMTPS_RESULT_OK);
  smtps_config_free(config);
  check("server_local_port(out of range)", smtps_server_local_port(server, 5, &(uint16_t){0}),
        SMTPS_RESULT_INVALID_PARAMETER);
  check("server_reply(unknown session)", smtps_server_reply(server, 12345, 250, NULL, NULL),
        SMTPS_RESULT_UNKNOWN_SESSION);
  check("server_dispatch(not polled)", smtps_server_dispatch(server, &n), SMTPS_RESULT_WRONG_STATE);
  check("server_reload_certificates(no TLS)", smtps_server_reload_certificates(server),
        SMTPS_RESULT_TLS_NOT_CONFIGURED);
  check("server_start", smtps_server_start(server), SMTPS_RESULT_OK);
  check("server_start(twice)", smtps_server_start(server), SMTPS_RESULT_WRONG_STATE);
  check("server_start_polled(after start)", smtps_server_start_polled(server, &fd),
        SMTPS_RESULT_WRONG_STATE);
  check("server_reply(unknown session, running)", smtps_server_reply(server, 1, 250, NULL, NULL),
        SMTPS_RESULT_UNKNOWN_SESSION);
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
