/*
 * host.c: a small but real mail server on the smtps server-level API, used the way a
 * Postfix- or Exim-style host would use it.
 *
 *   host MODE SPOOL CERT KEY
 *
 * MODE is "threads" (callbacks on the library's workers) or "polled" (callbacks on this
 * program's main thread, from its own poll() loop). Listens on 127.0.0.1 with an
 * implicit-TLS port and a STARTTLS-required port (ephemeral), prints "PORTS <implicit>
 * <starttls>" on stdout, and serves until stdin reaches end of file; then it stops the
 * server (2 s grace) and exits 0.
 *
 * HOST_BODY_DELAY_US in the environment makes on_body sleep that long per chunk (a slow spool).
 *
 * HOST_PROXY_TRUSTED=CIDR in the environment adds a third listener, STARTTLS-required behind a
 * load balancer: connections from CIDR must begin with a PROXY protocol header (others are
 * closed without a banner), and "PORTS" lists its port third. on_connect logs every session's
 * client, the balancer it came through and the header's TLVs (authority, TLS version and
 * client certificate CN).
 *
 * Messages may be up to 100 MiB. AUTH (required before MAIL) checks a small user table. Each message body is streamed into
 * SPOOL/tmp/; at its end a commit thread fsyncs the file, renames it into SPOOL/new/ and
 * fsyncs the directory, and only then answers 250 through the deferred reply.
 *
 * Left out: real password hashing, delivery, logging to syslog, privilege separation.
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "smtps.h"

/* A user table; a real host would read a file of password hashes. */
static const struct {
  const char *user;
  const char *password;
} USERS[] = {{"alice", "wonderland"}, {"bob", "builder"}};

/* A message waiting for the commit thread. */
struct job {
  struct job *next;
  uint64_t decision_id;
  int fd;
  char tmp_path[512];
  char new_path[1100];
};

struct host {
  smtps_server *server;
  const char *spool;
  pthread_mutex_t lock;
  pthread_cond_t cond;
  struct job *jobs; /* LIFO is fine: each job is independent */
  int stopping;
  unsigned long counter;
};

/* Per-session state, attached with smtps_session_set_userdata. */
struct session {
  int fd; /* the spool file of the message in progress, or -1 */
  int failed;
  char tmp_path[512];
};

static void die(const char *what, smtps_result result) {
  char detail[512];
  size_t n = 0;
  smtps_last_error(detail, sizeof detail, &n);
  fprintf(stderr, "host: %s: result %u: %s\n", what, (unsigned)result, detail);
  exit(1);
}

static int str_eq(smtps_str s, const char *c) {
  return s.len == strlen(c) && memcmp(s.data, c, s.len) == 0;
}

static struct session *state_of(const smtps_session *session) {
  return (struct session *)smtps_session_userdata(session);
}

static void discard(struct session *s) {
  if (s->fd >= 0) {
    close(s->fd);
    unlink(s->tmp_path);
    s->fd = -1;
  }
}

/* Prints a TLV value, or "-" if the header has none (or there is no header). */
static void print_tlv(const char *name, bool found, smtps_bytes value) {
  if (found) {
    fprintf(stderr, " %s %.*s", name, (int)value.len, (const char *)value.data);
  } else {
    fprintf(stderr, " %s -", name);
  }
}

static smtps_answer on_connect(void *ud, const smtps_session *session) {
  struct session *s = calloc(1, sizeof *s);
  smtps_str peer = smtps_session_peer(session);
  smtps_str balancer = smtps_session_proxied_by(session);
  smtps_bytes value;
  bool found;
  (void)ud;
  /* Behind a balancer, peer is the client the PROXY header names. The line is written in
   * parts: flockfile keeps it whole when sessions connect at once on different workers. */
  flockfile(stderr);
  fprintf(stderr, "host: session %llu from %.*s proxied_by %.*s",
          (unsigned long long)smtps_session_id(session), (int)peer.len, peer.data,
          balancer.len ? (int)balancer.len : 1, balancer.len ? balancer.data : "-");
  found = smtps_session_proxy_tlv(session, SMTPS_PP2_TYPE_AUTHORITY, &value);
  print_tlv("authority", found, value);
  found = smtps_session_proxy_ssl_tlv(session, SMTPS_PP2_SUBTYPE_SSL_VERSION, &value);
  print_tlv("ssl_version", found, value);
  found = smtps_session_proxy_ssl_tlv(session, SMTPS_PP2_SUBTYPE_SSL_CN, &value);
  print_tlv("ssl_cn", found, value);
  fprintf(stderr, "\n");
  funlockfile(stderr);
  if (s == NULL) {
    return SMTPS_ANSWER_REJECT;
  }
  s->fd = -1;
  smtps_session_set_userdata(session, s);
  return SMTPS_ANSWER_ACCEPT;
}

/* Logs whether the client greeted with EHLO (ESMTP) or HELO; accepts either. */
static smtps_answer on_helo(void *ud, const smtps_session *session, smtps_str name) {
  (void)ud;
  fprintf(stderr, "host: session %llu greeted with %s %.*s\n",
          (unsigned long long)smtps_session_id(session),
          smtps_session_helo_extended(session) ? "EHLO" : "HELO", (int)name.len, name.data);
  return SMTPS_ANSWER_ACCEPT;
}

static smtps_answer on_auth(void *ud, const smtps_session *session, smtps_str user,
                            smtps_str password, smtps_str authzid) {
  size_t i;
  (void)ud;
  (void)session;
  if (authzid.len != 0 && (authzid.len != user.len || memcmp(authzid.data, user.data, user.len))) {
    return SMTPS_ANSWER_REJECT;
  }
  for (i = 0; i < sizeof USERS / sizeof USERS[0]; i++) {
    if (str_eq(user, USERS[i].user) && str_eq(password, USERS[i].password)) {
      return SMTPS_ANSWER_ACCEPT;
    }
  }
  return SMTPS_ANSWER_REJECT;
}

static smtps_answer on_rcpt(void *ud, const smtps_session *session, smtps_str to) {
  struct host *host = ud;
  if (to.len >= 7 && memcmp(to.data, "nobody@", 7) == 0) {
    /* A reply with text of our own, given during the callback. */
    smtps_server_reply(host->server, smtps_session_decision_id(session), 550, "5.1.1",
                       "No such user here");
    return SMTPS_ANSWER_DEFER;
  }
  return SMTPS_ANSWER_ACCEPT;
}

static smtps_answer on_data_start(void *ud, const smtps_session *session) {
  struct host *host = ud;
  struct session *s = state_of(session);
  unsigned long n;
  pthread_mutex_lock(&host->lock);
  n = ++host->counter;
  pthread_mutex_unlock(&host->lock);
  discard(s);
  s->failed = 0;
  snprintf(s->tmp_path, sizeof s->tmp_path, "%s/tmp/%llu.%lu", host->spool,
           (unsigned long long)smtps_session_id(session), n);
  s->fd = open(s->tmp_path, O_WRONLY | O_CREAT | O_EXCL, 0600);
  if (s->fd < 0) {
    smtps_server_reply(host->server, smtps_session_decision_id(session), 451, "4.3.0",
                       "Cannot open a spool file");
    return SMTPS_ANSWER_DEFER;
  }
  return SMTPS_ANSWER_ACCEPT;
}

/* How long on_body takes per chunk: HOST_BODY_DELAY_US in the environment (a slow disk). */
static struct timespec body_delay;

static smtps_answer on_body(void *ud, const smtps_session *session, smtps_bytes chunk) {
  struct session *s = state_of(session);
  size_t done = 0;
  (void)ud;
  if (body_delay.tv_nsec > 0) {
    nanosleep(&body_delay, NULL); /* a slow spool (HOST_BODY_DELAY_US) */
  }
  while (done < chunk.len) {
    ssize_t n = write(s->fd, chunk.data + done, chunk.len - done);
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n <= 0) {
      s->failed = 1;
      return SMTPS_ANSWER_REJECT; /* 451 4.3.0 at the end of the message */
    }
    done += (size_t)n;
  }
  return SMTPS_ANSWER_ACCEPT;
}

static smtps_answer on_message_end(void *ud, const smtps_session *session, uint64_t size) {
  struct host *host = ud;
  struct session *s = state_of(session);
  struct job *job;
  const char *base;
  (void)size;
  if (s->fd < 0 || s->failed) {
    return SMTPS_ANSWER_REJECT;
  }
  job = calloc(1, sizeof *job);
  if (job == NULL) {
    return SMTPS_ANSWER_REJECT;
  }
  job->decision_id = smtps_session_decision_id(session);
  job->fd = s->fd;
  memcpy(job->tmp_path, s->tmp_path, sizeof job->tmp_path);
  base = strrchr(s->tmp_path, '/');
  snprintf(job->new_path, sizeof job->new_path, "%s/new/%s.eml", host->spool,
           base ? base + 1 : s->tmp_path);
  s->fd = -1; /* the job owns the file now */
  pthread_mutex_lock(&host->lock);
  job->next = host->jobs;
  host->jobs = job;
  pthread_cond_signal(&host->cond);
  pthread_mutex_unlock(&host->lock);
  return SMTPS_ANSWER_DEFER; /* 250 only once the commit thread has made it durable */
}

static void on_message_aborted(void *ud, const smtps_session *session,
                               smtps_abort_reason reason) {
  (void)ud;
  (void)reason;
  discard(state_of(session));
}

static void on_disconnect(void *ud, const smtps_session *session, smtps_close_reason reason) {
  struct session *s = state_of(session);
  (void)ud;
  (void)reason;
  if (s != NULL) {
    discard(s);
    free(s);
    smtps_session_set_userdata(session, NULL);
  }
}

static int fsync_dir(const char *dir) {
  int fd = open(dir, O_RDONLY);
  int rc;
  if (fd < 0) {
    return -1;
  }
  rc = fsync(fd);
  close(fd);
  return rc;
}

/* fsync, rename, fsync the directory; then the deferred 250 from this thread. */
static void commit(struct host *host, struct job *job) {
  char dir[600];
  char text[128];
  smtps_result result;
  int ok = fsync(job->fd) == 0;
  ok = close(job->fd) == 0 && ok;
  ok = ok && rename(job->tmp_path, job->new_path) == 0;
  snprintf(dir, sizeof dir, "%s/new", host->spool);
  ok = ok && fsync_dir(dir) == 0;
  if (ok) {
    snprintf(text, sizeof text, "Queued as %s", strrchr(job->new_path, '/') + 1);
    result = smtps_server_reply(host->server, job->decision_id, 250, "2.0.0", text);
  } else {
    unlink(job->tmp_path);
    result = smtps_server_reply(host->server, job->decision_id, 451, "4.3.0",
                                "Cannot store the message");
  }
  if (ok && (result == SMTPS_RESULT_UNKNOWN_DECISION || result == SMTPS_RESULT_SERVER_STOPPED)) {
    /* The library answered 451 for us (decision timeout, shutdown): the client never got our
       250 and will send the message again, so the stored copy must go. */
    unlink(job->new_path);
  } else if (result != SMTPS_RESULT_OK) {
    fprintf(stderr, "host: reply failed: %u\n", (unsigned)result);
  }
}

static void *commit_thread(void *arg) {
  struct host *host = arg;
  for (;;) {
    struct job *job;
    pthread_mutex_lock(&host->lock);
    while (host->jobs == NULL && !host->stopping) {
      pthread_cond_wait(&host->cond, &host->lock);
    }
    job = host->jobs;
    if (job != NULL) {
      host->jobs = job->next;
    }
    pthread_mutex_unlock(&host->lock);
    if (job == NULL) {
      return NULL;
    }
    commit(host, job);
    free(job);
  }
}

/* Whether stdin has reached end of file (the signal to stop). */
static int stdin_closed(void) {
  char buf[256];
  ssize_t n = read(STDIN_FILENO, buf, sizeof buf);
  return n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN);
}

/* "PORTS <implicit> <starttls>[ <proxy>]" on stdout: the test driver reads it. */
static void print_ports(uint16_t implicit_port, uint16_t starttls_port, uint16_t proxy_port) {
  printf("PORTS %u %u", (unsigned)implicit_port, (unsigned)starttls_port);
  if (proxy_port != 0) {
    printf(" %u", (unsigned)proxy_port);
  }
  printf("\n");
  fflush(stdout);
}

int main(int argc, char **argv) {
  struct host host;
  smtps_callbacks callbacks;
  smtps_config *config;
  smtps_result result;
  pthread_t committer;
  uint16_t implicit_port = 0, starttls_port = 0, proxy_port = 0;
  const char *proxy_trusted = getenv("HOST_PROXY_TRUSTED");
  char path[600];
  int polled;

  if (argc != 5) {
    fprintf(stderr, "usage: host threads|polled SPOOL CERT KEY\n");
    return 2;
  }
  polled = strcmp(argv[1], "polled") == 0;
  if (getenv("HOST_BODY_DELAY_US") != NULL) {
    body_delay.tv_nsec = (long)(strtoul(getenv("HOST_BODY_DELAY_US"), NULL, 10) % 1000000) * 1000;
  }
  memset(&host, 0, sizeof host);
  host.spool = argv[2];
  pthread_mutex_init(&host.lock, NULL);
  pthread_cond_init(&host.cond, NULL);
  snprintf(path, sizeof path, "%s/tmp", host.spool);
  mkdir(path, 0700);
  snprintf(path, sizeof path, "%s/new", host.spool);
  mkdir(path, 0700);

  config = smtps_config_new();
  if (config == NULL) {
    die("smtps_config_new", SMTPS_RESULT_PANIC);
  }
  if ((result = smtps_config_set_hostname(config, "mx.test")) != SMTPS_RESULT_OK ||
      (result = smtps_config_add_listener(config, "127.0.0.1:0", SMTPS_MODE_IMPLICIT_TLS)) !=
          SMTPS_RESULT_OK ||
      (result = smtps_config_add_listener(config, "127.0.0.1:0",
                                          SMTPS_MODE_START_TLS_REQUIRED)) != SMTPS_RESULT_OK ||
      (result = smtps_config_set_certificate_files(config, argv[3], argv[4])) !=
          SMTPS_RESULT_OK ||
      (result = smtps_config_set_require_auth(config, true)) != SMTPS_RESULT_OK ||
      (result = smtps_config_set_workers(config, 2)) != SMTPS_RESULT_OK ||
      (result = smtps_config_set_limit(config, SMTPS_LIMIT_MESSAGE_SIZE, 100 << 20)) !=
          SMTPS_RESULT_OK) {
    die("configuration", result);
  }
  if (proxy_trusted != NULL &&
      ((result = smtps_config_add_listener(config, "127.0.0.1:0",
                                           SMTPS_MODE_START_TLS_REQUIRED)) != SMTPS_RESULT_OK ||
       (result = smtps_config_set_listener_proxy(config, 2, SMTPS_PROXY_REQUIRED)) !=
           SMTPS_RESULT_OK ||
       (result = smtps_config_add_proxy_trusted(config, proxy_trusted)) != SMTPS_RESULT_OK)) {
    die("PROXY protocol configuration", result);
  }

  memset(&callbacks, 0, sizeof callbacks);
  callbacks.on_connect = on_connect;
  callbacks.on_helo = on_helo;
  callbacks.on_auth = on_auth;
  callbacks.on_rcpt = on_rcpt;
  callbacks.on_data_start = on_data_start;
  callbacks.on_body = on_body;
  callbacks.on_message_end = on_message_end;
  callbacks.on_message_aborted = on_message_aborted;
  callbacks.on_disconnect = on_disconnect;

  result = smtps_server_new(config, &callbacks, &host, &host.server);
  smtps_config_free(config);
  if (result != SMTPS_RESULT_OK) {
    die("smtps_server_new", result);
  }
  smtps_server_local_port(host.server, 0, &implicit_port);
  smtps_server_local_port(host.server, 1, &starttls_port);
  if (proxy_trusted != NULL) {
    smtps_server_local_port(host.server, 2, &proxy_port);
  }
  if (pthread_create(&committer, NULL, commit_thread, &host) != 0) {
    die("pthread_create", SMTPS_RESULT_IO);
  }

  if (!polled) {
    if ((result = smtps_server_start(host.server)) != SMTPS_RESULT_OK) {
      die("smtps_server_start", result);
    }
    print_ports(implicit_port, starttls_port, proxy_port);
    while (!stdin_closed()) {
    }
  } else {
    int fd = -1;
    if ((result = smtps_server_start_polled(host.server, &fd)) != SMTPS_RESULT_OK) {
      die("smtps_server_start_polled", result);
    }
    print_ports(implicit_port, starttls_port, proxy_port);
    for (;;) {
      struct pollfd fds[2];
      size_t dispatched = 0;
      fds[0].fd = fd;
      fds[0].events = POLLIN;
      fds[1].fd = STDIN_FILENO;
      fds[1].events = POLLIN;
      /* The library's next timer bounds the wait; dispatching early is harmless. */
      int64_t timeout = smtps_server_next_timeout_ms(host.server);
      int ready = poll(fds, 2, timeout < 0 || timeout > 1000 ? 1000 : (int)timeout);
      if (ready < 0 && errno != EINTR) {
        break;
      }
      if (ready == 0 || (ready > 0 && (fds[0].revents & POLLIN))) {
        result = smtps_server_dispatch(host.server, &dispatched);
        if (result != SMTPS_RESULT_OK) {
          die("smtps_server_dispatch", result);
        }
      }
      if ((fds[1].revents & (POLLIN | POLLHUP)) && stdin_closed()) {
        break;
      }
    }
  }

  /* Sessions still open get 2 s to finish; the remaining callbacks run before this returns
   * (in the polled mode, on this thread). */
  result = smtps_server_stop(host.server, 2000);
  if (result != SMTPS_RESULT_OK) {
    die("smtps_server_stop", result);
  }
  pthread_mutex_lock(&host.lock);
  host.stopping = 1;
  pthread_cond_signal(&host.cond);
  pthread_mutex_unlock(&host.lock);
  pthread_join(committer, NULL);
  smtps_server_free(host.server);
  pthread_mutex_destroy(&host.lock);
  pthread_cond_destroy(&host.cond);
  fprintf(stderr, "host: stopped\n");
  return 0;
}
