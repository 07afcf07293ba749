/*
 * event_loop.c: a libsmtps server-level host that serves from its own single-threaded poll()
 * loop: no thread is started, by the host or by the library.
 *
 * What it shows
 *   - smtps_server_start_polled: the server gives one descriptor for the host's poll set; the
 *     host calls smtps_server_dispatch when it polls readable or when
 *     smtps_server_next_timeout_ms has passed, and every callback runs inline, on this thread,
 *     inside that dispatch.
 *   - The same listeners, users and spool as threaded.c: implicit TLS and STARTTLS-required
 *     listeners on 127.0.0.1, AUTH PLAIN/LOGIN against a fixed table (MAIL requires AUTH),
 *     RCPT to nobody@<any domain> refused with 550 5.1.1, bodies written to SPOOL/tmp in on_body.
 *   - on_message_end DEFERS and queues the message; after each dispatch the loop commits the
 *     queued messages (fsync, rename into SPOOL/new/, fsync the directory) and answers each
 *     with smtps_server_reply(server, decision id, 250, ...). A reply refused with anything but
 *     SMTPS_RESULT_OK means the client was not told 250: the committed copy is deleted.
 *   - SIGTERM and SIGINT through a self-pipe in the same poll set: the loop calls
 *     smtps_server_shutdown (not smtps_server_stop, which would wait for sessions whose
 *     commits only this loop can answer) and goes on dispatching and committing until
 *     smtps_server_dispatch returns SMTPS_RESULT_SERVER_STOPPED, then frees the server and
 *     exits 0. The loop is bounded by the server's lifetime: the shutdown's grace ends it.
 *
 * Spool format: SPOOL/new/<name>.eml is
 *     X-Envelope-From: <sender>\r\n
 *     X-Envelope-To: <recipient>\r\n          (one line per accepted recipient)
 *     <the message exactly as received, dot-unstuffed>
 *
 * Build (see Makefile in this directory):
 *     make event_loop                                 # against an installed libsmtps (pkg-config)
 *     make LIBDIR=/path/to/target/debug INCLUDEDIR=/path/to/include event_loop
 * Run:
 *     mkdir -p /tmp/spool
 *     openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
 *         -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
 *         -keyout key.pem -out cert.pem
 *     ./event_loop /tmp/spool cert.pem key.pem [IMPLICIT_PORT STARTTLS_PORT]  # 0 = ephemeral
 * It prints "PORT <implicit> <starttls>" on stdout once listening. Users: alice/wonderland,
 * bob/builder. Stop it with SIGTERM or Ctrl-C. examples/c/test.py drives it end to end.
 */
#define _POSIX_C_SOURCE 200809L
#define _DEFAULT_SOURCE /* O_DIRECTORY, renameat with glibc's feature macros */

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "smtps.h"

#define PROGRAM "event_loop"
#define SHUTDOWN_GRACE_MS 5000
#define MAX_RCPTS 100 /* SMTPS_LIMIT_RECIPIENTS, set in main */

/* ------------------------------------------------------------------------------------------ */
/* Small helpers                                                                              */

static void logf_(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  flockfile(stderr);
  fputs(PROGRAM ": ", stderr);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  funlockfile(stderr);
  va_end(ap);
}

/* Prints the failed call, its result and the calling thread's detailed error. */
static void log_result(const char *what, smtps_result rc) {
  char msg[256], detail[512];
  size_t n;
  smtps_result_message(rc, msg, sizeof msg, &n);
  smtps_last_error(detail, sizeof detail, &n);
  logf_("%s: %s (%u): %s", what, msg, (unsigned)rc, detail);
}

/* Compares a view with a C string in time independent of where they differ. */
static bool str_equals(smtps_str a, const char *b) {
  size_t blen = strlen(b);
  unsigned char diff = (unsigned char)(a.len != blen);
  for (size_t i = 0; i < a.len && i < blen; i++)
    diff |= (unsigned char)(a.data[i] ^ b[i]);
  return diff == 0;
}

/* Whether an address's local part is "nobody" (case-insensitive), whatever the domain. */
static bool is_nobody(smtps_str addr) {
  static const char local[] = "nobody@";
  size_t n = sizeof local - 1;
  if (addr.len < n)
    return false;
  for (size_t i = 0; i < n; i++) {
    char c = addr.data[i];
    if (c >= 'A' && c <= 'Z')
      c = (char)(c - 'A' + 'a');
    if (c != local[i])
      return false;
  }
  return true;
}

static bool write_all(int fd, const void *buf, size_t len) {
  const char *p = buf;
  while (len > 0) {
    ssize_t w = write(fd, p, len);
    if (w < 0) {
      if (errno == EINTR)
        continue;
      return false;
    }
    p += w;
    len -= (size_t)w;
  }
  return true;
}

/* ------------------------------------------------------------------------------------------ */
/* The spool: SPOOL/tmp for messages being received, SPOOL/new for committed ones.            */

struct spool {
  int tmp_dir; /* O_DIRECTORY descriptors, kept open for openat/renameat/fsync */
  int new_dir;
  unsigned long counter;
};

static bool spool_open(struct spool *sp, const char *root) {
  char path[4096];
  int dir = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir < 0) {
    logf_("%s: %s", root, strerror(errno));
    return false;
  }
  sp->tmp_dir = sp->new_dir = -1;
  sp->counter = 0;
  const char *subs[2] = {"tmp", "new"};
  int *fds[2] = {&sp->tmp_dir, &sp->new_dir};
  for (int i = 0; i < 2; i++) {
    if (mkdirat(dir, subs[i], 0700) != 0 && errno != EEXIST) {
      logf_("%s/%s: %s", root, subs[i], strerror(errno));
      close(dir);
      return false;
    }
    snprintf(path, sizeof path, "%s/%s", root, subs[i]);
    *fds[i] = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (*fds[i] < 0) {
      logf_("%s: %s", path, strerror(errno));
      close(dir);
      return false;
    }
  }
  fsync(dir); /* the new subdirectories themselves are durable */
  close(dir);
  return true;
}

static void spool_close(struct spool *sp) {
  if (sp->tmp_dir >= 0)
    close(sp->tmp_dir);
  if (sp->new_dir >= 0)
    close(sp->new_dir);
}

/* Creates SPOOL/tmp/<unique>.eml with the envelope lines first; returns the descriptor or -1.
   `to` holds `count` recipients. */
static int spool_create(struct spool *sp, smtps_str from, const smtps_str *to, size_t count,
                        char *name, size_t name_len) {
  struct timespec now;
  clock_gettime(CLOCK_REALTIME, &now);
  unsigned long seq = sp->counter++;
  snprintf(name, name_len, "%lld.%ld.%lu.eml", (long long)now.tv_sec, (long)getpid(), seq);
  int fd = openat(sp->tmp_dir, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) {
    logf_("tmp/%s: %s", name, strerror(errno));
    return -1;
  }
  char line[1200];
  int n = snprintf(line, sizeof line, "X-Envelope-From: <%.*s>\r\n", (int)from.len, from.data);
  bool ok = n > 0 && (size_t)n < sizeof line && write_all(fd, line, (size_t)n);
  for (size_t i = 0; ok && i < count; i++) {
    n = snprintf(line, sizeof line, "X-Envelope-To: <%.*s>\r\n", (int)to[i].len, to[i].data);
    ok = n > 0 && (size_t)n < sizeof line && write_all(fd, line, (size_t)n);
  }
  if (!ok) {
    logf_("tmp/%s: %s", name, strerror(errno));
    close(fd);
    unlinkat(sp->tmp_dir, name, 0);
    return -1;
  }
  return fd;
}

/* Discards a message still in SPOOL/tmp. */
static void spool_discard_tmp(struct spool *sp, int fd, const char *name) {
  if (fd >= 0)
    close(fd);
  if (name[0] != '\0')
    unlinkat(sp->tmp_dir, name, 0);
}

/* Makes the message durable: fsync, rename into new/, fsync new/. Closes fd. */
static bool spool_commit(struct spool *sp, int fd, const char *name) {
  if (fsync(fd) != 0) {
    logf_("fsync tmp/%s: %s", name, strerror(errno));
    spool_discard_tmp(sp, fd, name);
    return false;
  }
  close(fd);
  if (renameat(sp->tmp_dir, name, sp->new_dir, name) != 0) {
    logf_("rename tmp/%s: %s", name, strerror(errno));
    unlinkat(sp->tmp_dir, name, 0);
    return false;
  }
  if (fsync(sp->new_dir) != 0) {
    logf_("fsync new/: %s", strerror(errno));
    unlinkat(sp->new_dir, name, 0);
    return false;
  }
  return true;
}

/* Deletes a committed message the client was never told about (see commit_one). */
static void spool_uncommit(struct spool *sp, const char *name) {
  if (unlinkat(sp->new_dir, name, 0) != 0)
    logf_("unlink new/%s: %s", name, strerror(errno));
  fsync(sp->new_dir);
}

/* ------------------------------------------------------------------------------------------ */
/* The host: users, sessions, the commit queue. Everything runs on one thread: no locks.      */

static const struct {
  const char *user, *password;
} USERS[] = {{"alice", "wonderland"}, {"bob", "builder"}};

/* A message waiting for its commit: owns its open spool file. */
struct job {
  struct job *next;
  uint64_t decision; /* smtps_session_decision_id() read in on_message_end */
  uint64_t session;  /* for the logs only */
  int fd;
  char name[96];
};

struct host {
  struct spool spool;
  smtps_server *server; /* set after smtps_server_new, before smtps_server_start_polled */
  struct job *head, *tail;
};

/* Per session, attached with smtps_session_set_userdata, freed in on_disconnect. */
struct session {
  int fd;        /* the message being received, -1 outside one */
  char name[96]; /* its name in SPOOL/tmp */
  bool failed;   /* a write failed: the message is refused at its end */
};

static void commit_one(struct host *h, struct job *job) {
  smtps_result rc;
  if (!spool_commit(&h->spool, job->fd, job->name)) {
    rc = smtps_server_reply(h->server, job->decision, 451, "4.3.0", "Spool failure, try again later");
    if (rc != SMTPS_RESULT_OK)
      log_result("reply 451", rc);
    return;
  }
  char text[160];
  snprintf(text, sizeof text, "Queued as %s", job->name);
  rc = smtps_server_reply(h->server, job->decision, 250, "2.0.0", text);
  if (rc == SMTPS_RESULT_OK) {
    logf_("session %" PRIu64 ": queued new/%s", job->session, job->name);
    return;
  }
  /* SMTPS_RESULT_UNKNOWN_DECISION: no longer awaited (answered 451 after
     SMTPS_TIMEOUT_DECISION, or the session was closed by the shutdown's grace and got
     on_message_aborted); SMTPS_RESULT_SERVER_STOPPED: the server finished. The client never
     got 250 and will send the message again: delete our copy. */
  log_result("reply 250", rc);
  logf_("session %" PRIu64 ": new/%s deleted, the client was not told 250", job->session,
        job->name);
  spool_uncommit(&h->spool, job->name);
}

/* Commits every queued message; returns how many were answered. */
static size_t commit_queued(struct host *h) {
  size_t n = 0;
  while (h->head != NULL) {
    struct job *job = h->head;
    h->head = job->next;
    if (h->head == NULL)
      h->tail = NULL;
    commit_one(h, job);
    free(job);
    n++;
  }
  return n;
}

/* Drops queued messages nobody can be told about any more (the server has finished). */
static void discard_queued(struct host *h) {
  while (h->head != NULL) {
    struct job *job = h->head;
    h->head = job->next;
    spool_discard_tmp(&h->spool, job->fd, job->name);
    free(job);
  }
  h->tail = NULL;
}

/* ------------------------------------------------------------------------------------------ */
/* Callbacks (inline, inside smtps_server_dispatch on the main thread).                       */

static smtps_answer on_connect(void *ud, const smtps_session *s) {
  (void)ud;
  struct session *sess = calloc(1, sizeof *sess);
  if (sess == NULL)
    return SMTPS_ANSWER_REJECT; /* 554: on_disconnect still comes, with NULL userdata */
  sess->fd = -1;
  smtps_session_set_userdata(s, sess);
  smtps_str peer = smtps_session_peer(s);
  logf_("session %" PRIu64 ": connect from %.*s on listener %zu", smtps_session_id(s),
        (int)peer.len, peer.data, smtps_session_listener(s));
  return SMTPS_ANSWER_ACCEPT;
}

static smtps_answer on_auth(void *ud, const smtps_session *s, smtps_str user, smtps_str password,
                            smtps_str authzid) {
  (void)ud;
  /* Acting for someone else (a non-empty authzid other than the user) is not offered. */
  if (authzid.len != 0 && !(authzid.len == user.len && memcmp(authzid.data, user.data, user.len) == 0))
    return SMTPS_ANSWER_REJECT;
  bool ok = false;
  for (size_t i = 0; i < sizeof USERS / sizeof USERS[0]; i++)
    ok |= str_equals(user, USERS[i].user) & str_equals(password, USERS[i].password);
  logf_("session %" PRIu64 ": AUTH %.*s %s", smtps_session_id(s), (int)user.len, user.data,
        ok ? "accepted" : "refused");
  return ok ? SMTPS_ANSWER_ACCEPT : SMTPS_ANSWER_REJECT; /* 235 2.7.0 / 535 5.7.8 */
}

static smtps_answer on_rcpt(void *ud, const smtps_session *s, smtps_str to) {
  struct host *h = ud;
  if (!is_nobody(to))
    return SMTPS_ANSWER_ACCEPT;
  /* A reply of our own during the callback wins over the return value. */
  smtps_result rc = smtps_server_reply(h->server, smtps_session_decision_id(s), 550, "5.1.1",
                                       "No such user here");
  if (rc != SMTPS_RESULT_OK)
    log_result("reply 550", rc);
  return SMTPS_ANSWER_REJECT; /* the default 550 5.7.1 if the reply above failed */
}

static smtps_answer on_data_start(void *ud, const smtps_session *s) {
  struct host *h = ud;
  struct session *sess = smtps_session_userdata(s);
  if (sess == NULL)
    return SMTPS_ANSWER_REJECT;
  spool_discard_tmp(&h->spool, sess->fd, sess->name); /* defensive: nothing should be open */
  sess->failed = false;
  /* The envelope as the library holds it for the transaction in progress. */
  smtps_str to[MAX_RCPTS];
  size_t count = smtps_session_recipient_count(s);
  if (count > MAX_RCPTS)
    count = MAX_RCPTS; /* cannot happen: smtps_config_set_limit(RECIPIENTS) below */
  for (size_t i = 0; i < count; i++)
    to[i] = smtps_session_recipient(s, i);
  sess->fd = spool_create(&h->spool, smtps_session_mail_from(s), to, count, sess->name,
                          sizeof sess->name);
  if (sess->fd < 0) {
    sess->name[0] = '\0';
    smtps_server_reply(h->server, smtps_session_decision_id(s), 451, "4.3.0",
                       "Spool failure, try again later");
    return SMTPS_ANSWER_REJECT;
  }
  return SMTPS_ANSWER_ACCEPT; /* 354 */
}

static smtps_answer on_body(void *ud, const smtps_session *s, smtps_bytes chunk) {
  (void)ud;
  struct session *sess = smtps_session_userdata(s);
  if (sess == NULL || sess->fd < 0 || sess->failed)
    return SMTPS_ANSWER_REJECT;
  if (!write_all(sess->fd, chunk.data, chunk.len)) {
    logf_("tmp/%s: %s", sess->name, strerror(errno));
    sess->failed = true;
    return SMTPS_ANSWER_REJECT; /* the rest is read and dropped, the end answered 451 */
  }
  return SMTPS_ANSWER_ACCEPT;
}

static smtps_answer on_message_end(void *ud, const smtps_session *s, uint64_t size) {
  struct host *h = ud;
  struct session *sess = smtps_session_userdata(s);
  uint64_t decision = smtps_session_decision_id(s);
  if (sess == NULL || sess->fd < 0 || sess->failed) {
    if (sess != NULL) {
      spool_discard_tmp(&h->spool, sess->fd, sess->name);
      sess->fd = -1;
      sess->name[0] = '\0';
    }
    smtps_server_reply(h->server, decision, 451, "4.3.0", "Spool failure, try again later");
    return SMTPS_ANSWER_REJECT;
  }
  struct job *job = malloc(sizeof *job);
  if (job == NULL) {
    spool_discard_tmp(&h->spool, sess->fd, sess->name);
    sess->fd = -1;
    sess->name[0] = '\0';
    smtps_server_reply(h->server, decision, 451, "4.3.0", "Out of memory, try again later");
    return SMTPS_ANSWER_REJECT;
  }
  /* The file now belongs to the job; the session forgets it. */
  job->next = NULL;
  job->decision = decision;
  job->session = smtps_session_id(s);
  job->fd = sess->fd;
  memcpy(job->name, sess->name, sizeof job->name);
  sess->fd = -1;
  sess->name[0] = '\0';
  logf_("session %" PRIu64 ": %" PRIu64 " octets, commit queued for tmp/%s", job->session, size,
        job->name);
  if (h->tail != NULL)
    h->tail->next = job;
  else
    h->head = job;
  h->tail = job;
  return SMTPS_ANSWER_DEFER; /* the loop commits and replies after this dispatch */
}

static void on_message_aborted(void *ud, const smtps_session *s, smtps_abort_reason reason) {
  struct host *h = ud;
  struct session *sess = smtps_session_userdata(s);
  logf_("session %" PRIu64 ": message aborted (reason %u)", smtps_session_id(s), (unsigned)reason);
  /* A message still being received is discarded here. One already queued for its commit is
     deleted by commit_one: its reply will not get SMTPS_RESULT_OK. */
  if (sess != NULL) {
    spool_discard_tmp(&h->spool, sess->fd, sess->name);
    sess->fd = -1;
    sess->name[0] = '\0';
  }
}

static void on_disconnect(void *ud, const smtps_session *s, smtps_close_reason reason) {
  struct host *h = ud;
  struct session *sess = smtps_session_userdata(s);
  logf_("session %" PRIu64 ": disconnected (reason %u)", smtps_session_id(s), (unsigned)reason);
  if (sess != NULL) {
    spool_discard_tmp(&h->spool, sess->fd, sess->name);
    free(sess);
    smtps_session_set_userdata(s, NULL);
  }
}

/* ------------------------------------------------------------------------------------------ */
/* Signals: the handler writes the signal number to a non-blocking pipe the loop polls.       */

static int signal_pipe[2] = {-1, -1};

static void on_signal(int sig) {
  int saved = errno;
  unsigned char b = (unsigned char)sig;
  ssize_t ignored = write(signal_pipe[1], &b, 1); /* full pipe: a signal is pending anyway */
  (void)ignored;
  errno = saved;
}

static bool signals_setup(void) {
  if (pipe(signal_pipe) != 0)
    return false;
  for (int i = 0; i < 2; i++) {
    int fl = fcntl(signal_pipe[i], F_GETFL);
    if (fl < 0 || fcntl(signal_pipe[i], F_SETFL, fl | O_NONBLOCK) != 0 ||
        fcntl(signal_pipe[i], F_SETFD, FD_CLOEXEC) != 0)
      return false;
  }
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  return sigaction(SIGTERM, &sa, NULL) == 0 && sigaction(SIGINT, &sa, NULL) == 0;
}

/* Empties the pipe; returns the last signal read, 0 if none. */
static int signals_drain(void) {
  unsigned char buf[64];
  int sig = 0;
  ssize_t n;
  while ((n = read(signal_pipe[0], buf, sizeof buf)) > 0)
    sig = buf[n - 1];
  return sig;
}

/* ------------------------------------------------------------------------------------------ */

static bool parse_port(const char *text, unsigned *port) {
  char *end;
  errno = 0;
  unsigned long v = strtoul(text, &end, 10);
  if (errno != 0 || end == text || *end != '\0' || v > 65535)
    return false;
  *port = (unsigned)v;
  return true;
}

int main(int argc, char **argv) {
  unsigned ports[2] = {0, 0};
  if ((argc != 4 && argc != 6) || (argc == 6 && (!parse_port(argv[4], &ports[0]) ||
                                                 !parse_port(argv[5], &ports[1])))) {
    fprintf(stderr, "usage: %s SPOOL CERT.pem KEY.pem [IMPLICIT_PORT STARTTLS_PORT]\n", argv[0]);
    return 2;
  }
  if (!signals_setup()) {
    logf_("signal setup: %s", strerror(errno));
    return 1;
  }

  static struct host host; /* static: zeroed, and outlives the server */
  host.spool.tmp_dir = host.spool.new_dir = -1;
  if (!spool_open(&host.spool, argv[1]))
    return 1;

  smtps_config *cfg = smtps_config_new();
  if (cfg == NULL) {
    logf_("smtps_config_new failed");
    return 1;
  }
  char implicit[32], starttls[32];
  snprintf(implicit, sizeof implicit, "127.0.0.1:%u", ports[0]);
  snprintf(starttls, sizeof starttls, "127.0.0.1:%u", ports[1]);
  smtps_result rc;
  if ((rc = smtps_config_set_hostname(cfg, "localhost")) != SMTPS_RESULT_OK ||
      (rc = smtps_config_add_listener(cfg, implicit, SMTPS_MODE_IMPLICIT_TLS)) != SMTPS_RESULT_OK ||
      (rc = smtps_config_add_listener(cfg, starttls, SMTPS_MODE_START_TLS_REQUIRED)) != SMTPS_RESULT_OK ||
      (rc = smtps_config_set_certificate_files(cfg, argv[2], argv[3])) != SMTPS_RESULT_OK ||
      (rc = smtps_config_set_require_auth(cfg, true)) != SMTPS_RESULT_OK ||
      (rc = smtps_config_set_limit(cfg, SMTPS_LIMIT_RECIPIENTS, MAX_RCPTS)) != SMTPS_RESULT_OK) {
    log_result("configuration", rc);
    smtps_config_free(cfg);
    return 1;
  }

  smtps_callbacks cb = {0};
  cb.on_connect = on_connect;
  cb.on_auth = on_auth; /* with on_auth, EHLO offers AUTH PLAIN LOGIN (after TLS) */
  cb.on_rcpt = on_rcpt;
  cb.on_data_start = on_data_start;
  cb.on_body = on_body;
  cb.on_message_end = on_message_end;
  cb.on_message_aborted = on_message_aborted;
  cb.on_disconnect = on_disconnect;

  smtps_server *server = NULL;
  rc = smtps_server_new(cfg, &cb, &host, &server); /* reads the certificates, binds */
  smtps_config_free(cfg);
  if (rc != SMTPS_RESULT_OK) {
    log_result("smtps_server_new", rc);
    spool_close(&host.spool);
    return 1;
  }
  host.server = server;

  int server_fd = -1;
  if ((rc = smtps_server_start_polled(server, &server_fd)) != SMTPS_RESULT_OK) {
    log_result("smtps_server_start_polled", rc);
    smtps_server_free(server);
    spool_close(&host.spool);
    return 1;
  }
  uint16_t bound[2] = {0, 0};
  smtps_server_local_port(server, 0, &bound[0]);
  smtps_server_local_port(server, 1, &bound[1]);
  printf("PORT %u %u\n", (unsigned)bound[0], (unsigned)bound[1]);
  fflush(stdout);

  /* The loop. It ends when dispatch says the server has finished, which only happens after a
     shutdown: the shutdown's grace bounds it. */
  bool shutting_down = false, replied = false;
  int status = 0;
  for (;;) {
    /* A reply given on this thread between dispatches: dispatch again at once rather than
       relying on the descriptor to wake us. Otherwise the library's next timer. */
    int64_t next = replied ? 0 : smtps_server_next_timeout_ms(server);
    int timeout = next < 0 ? 1000 : (int)(next > 1000 ? 1000 : next);
    struct pollfd fds[2] = {{.fd = server_fd, .events = POLLIN},
                            {.fd = signal_pipe[0], .events = POLLIN}};
    if (poll(fds, 2, timeout) < 0 && errno != EINTR) {
      logf_("poll: %s", strerror(errno));
      status = 1;
      break;
    }
    int sig = signals_drain();
    if (sig != 0 && !shutting_down) {
      logf_("signal %d: shutting down (grace %d ms)", sig, SHUTDOWN_GRACE_MS);
      /* Listeners close, idle sessions get 421, messages in flight may finish until the
         grace ends: this loop keeps dispatching and committing meanwhile. */
      smtps_result s = smtps_server_shutdown(server, SHUTDOWN_GRACE_MS);
      if (s != SMTPS_RESULT_OK)
        log_result("smtps_server_shutdown", s);
      shutting_down = true;
    }
    size_t served = 0;
    rc = smtps_server_dispatch(server, &served);
    /* Commit what on_message_end queued during this dispatch, and answer it. */
    replied = commit_queued(&host) > 0;
    if (rc == SMTPS_RESULT_SERVER_STOPPED)
      break; /* every session closed, on_disconnect called for each */
    if (rc != SMTPS_RESULT_OK) {
      log_result("smtps_server_dispatch", rc);
      status = 1;
      break;
    }
  }

  if (status != 0) {
    /* The loop failed: stop now (the remaining callbacks run here, inline). */
    smtps_result s = smtps_server_stop(server, 0);
    if (s != SMTPS_RESULT_OK && s != SMTPS_RESULT_ALREADY_STOPPED)
      log_result("smtps_server_stop", s);
  }
  discard_queued(&host); /* normally nothing: no session is left to answer */
  smtps_server_free(server);
  spool_close(&host.spool);
  close(signal_pipe[0]);
  close(signal_pipe[1]);
  logf_("stopped");
  return status;
}
