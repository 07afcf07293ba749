/*
 * threaded.c: a libsmtps server-level host whose callbacks run on the library's worker threads.
 *
 * What it shows
 *   - smtps_server_start: the library listens, speaks TLS and SMTP on its own worker threads and
 *     calls the callbacks there (one session's callbacks one at a time, different sessions in
 *     parallel: the host's shared state is locked).
 *   - Two listeners on 127.0.0.1: implicit TLS (RFC 8314, the port 465 kind) and STARTTLS
 *     required before MAIL (RFC 3207, the port 587 kind). AUTH PLAIN/LOGIN through on_auth
 *     against a fixed user table; MAIL requires AUTH (smtps_config_set_require_auth).
 *   - RCPT to nobody@<any domain> is refused with an inline reply of the host's own
 *     (550 5.1.1), every other recipient accepted.
 *   - The message body is spooled to SPOOL/tmp/<name> in on_body (the envelope first, as
 *     X-Envelope-From / X-Envelope-To header lines). on_message_end DEFERS; a pool of two host
 *     threads commits (fsync the file, rename into SPOOL/new/, fsync the directory) and only
 *     then answers 250 with smtps_server_reply(server, decision id, ...). A reply that gets
 *     anything but SMTPS_RESULT_OK means the client was not told 250 (the decision timed out,
 *     the session was closed by a shutdown, the server stopped): the committed copy is then
 *     deleted, or the client's retry would deliver the message twice.
 *   - Graceful shutdown: SIGTERM and SIGINT are blocked in every thread and taken by sigwait()
 *     in main, which calls smtps_server_stop with a 5 s grace, drains the commit pool and frees
 *     the server. Exit status 0.
 *
 * Spool format: SPOOL/new/<name>.eml is
 *     X-Envelope-From: <sender>\r\n
 *     X-Envelope-To: <recipient>\r\n          (one line per accepted recipient)
 *     <the message exactly as received, dot-unstuffed>
 *
 * Build (see Makefile in this directory):
 *     make threaded                                   # against an installed libsmtps (pkg-config)
 *     make LIBDIR=/path/to/target/debug INCLUDEDIR=/path/to/include threaded
 * Run:
 *     mkdir -p /tmp/spool
 *     openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
 *         -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
 *         -keyout key.pem -out cert.pem
 *     ./threaded /tmp/spool cert.pem key.pem [IMPLICIT_PORT STARTTLS_PORT]   # 0 = ephemeral
 * It prints "PORT <implicit> <starttls>" on stdout once listening. Users: alice/wonderland,
 * bob/builder. Stop it with SIGTERM or Ctrl-C. examples/c/test.py drives it end to end.
 */
#define _POSIX_C_SOURCE 200809L
#define _DEFAULT_SOURCE /* O_DIRECTORY, renameat with glibc's feature macros */

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "smtps.h"

#define PROGRAM "threaded"
#define COMMIT_THREADS 2
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
  atomic_ulong counter;
};

static bool spool_open(struct spool *sp, const char *root) {
  char path[4096];
  int dir = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir < 0) {
    logf_("%s: %s", root, strerror(errno));
    return false;
  }
  sp->tmp_dir = sp->new_dir = -1;
  atomic_init(&sp->counter, 0);
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
  unsigned long seq = atomic_fetch_add(&sp->counter, 1);
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
/* The host: users, sessions, the commit pool.                                                */

static const struct {
  const char *user, *password;
} USERS[] = {{"alice", "wonderland"}, {"bob", "builder"}};

/* A message handed to the commit pool: owns its open spool file. */
struct job {
  struct job *next;
  uint64_t decision; /* smtps_session_decision_id() read in on_message_end */
  uint64_t session;  /* for the logs only */
  int fd;
  char name[96];
};

struct host {
  struct spool spool;
  smtps_server *server; /* set after smtps_server_new, before smtps_server_start */
  pthread_mutex_t lock;  /* guards the queue and `stopping` */
  pthread_cond_t wake;
  struct job *head, *tail;
  bool stopping;
  pthread_t threads[COMMIT_THREADS];
};

/* Per session, attached with smtps_session_set_userdata, freed in on_disconnect. */
struct session {
  int fd;          /* the message being received, -1 outside one */
  char name[96];   /* its name in SPOOL/tmp */
  bool failed;     /* a write failed: the message is refused at its end */
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
  /* SMTPS_RESULT_UNKNOWN_DECISION: the decision is no longer awaited (the library answered
     451 after SMTPS_TIMEOUT_DECISION, or closed the session at shutdown and called
     on_message_aborted); SMTPS_RESULT_SERVER_STOPPED: the server stopped meanwhile. Either
     way the client never got 250 and will send the message again: delete our copy. */
  log_result("reply 250", rc);
  logf_("session %" PRIu64 ": new/%s deleted, the client was not told 250", job->session,
        job->name);
  spool_uncommit(&h->spool, job->name);
}

static void *commit_thread(void *arg) {
  struct host *h = arg;
  for (;;) {
    pthread_mutex_lock(&h->lock);
    while (h->head == NULL && !h->stopping)
      pthread_cond_wait(&h->wake, &h->lock);
    struct job *job = h->head;
    if (job != NULL) {
      h->head = job->next;
      if (h->head == NULL)
        h->tail = NULL;
    }
    pthread_mutex_unlock(&h->lock);
    if (job == NULL) /* stopping and the queue is empty */
      return NULL;
    commit_one(h, job);
    free(job);
  }
}

static void enqueue(struct host *h, struct job *job) {
  job->next = NULL;
  pthread_mutex_lock(&h->lock);
  if (h->tail != NULL)
    h->tail->next = job;
  else
    h->head = job;
  h->tail = job;
  pthread_cond_signal(&h->wake);
  pthread_mutex_unlock(&h->lock);
}

/* ------------------------------------------------------------------------------------------ */
/* Callbacks (library worker threads).                                                        */

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
  job->decision = decision;
  job->session = smtps_session_id(s);
  job->fd = sess->fd;
  memcpy(job->name, sess->name, sizeof job->name);
  sess->fd = -1;
  sess->name[0] = '\0';
  logf_("session %" PRIu64 ": %" PRIu64 " octets, committing tmp/%s", job->session, size,
        job->name);
  enqueue(h, job); /* a commit thread may reply before we return: that is fine */
  return SMTPS_ANSWER_DEFER;
}

static void on_message_aborted(void *ud, const smtps_session *s, smtps_abort_reason reason) {
  struct host *h = ud;
  struct session *sess = smtps_session_userdata(s);
  logf_("session %" PRIu64 ": message aborted (reason %u)", smtps_session_id(s), (unsigned)reason);
  /* A message still being received is discarded here. One already handed to the commit pool
     is deleted there: its reply will not get SMTPS_RESULT_OK. */
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

  /* Block the signals before any thread exists: every thread (the library's workers, the
     commit pool) inherits the mask, and only sigwait() below takes them. */
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  if (pthread_sigmask(SIG_BLOCK, &signals, NULL) != 0) {
    logf_("pthread_sigmask failed");
    return 1;
  }

  static struct host host; /* static: zeroed, and outlives the server */
  host.spool.tmp_dir = host.spool.new_dir = -1;
  if (!spool_open(&host.spool, argv[1]))
    return 1;
  pthread_mutex_init(&host.lock, NULL);
  pthread_cond_init(&host.wake, NULL);

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
      (rc = smtps_config_set_limit(cfg, SMTPS_LIMIT_RECIPIENTS, MAX_RCPTS)) != SMTPS_RESULT_OK ||
      (rc = smtps_config_set_workers(cfg, 2)) != SMTPS_RESULT_OK) {
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
  smtps_config_free(cfg);                          /* the server copied what it needs */
  if (rc != SMTPS_RESULT_OK) {
    log_result("smtps_server_new", rc);
    spool_close(&host.spool);
    return 1;
  }
  host.server = server;

  int threads = 0;
  for (; threads < COMMIT_THREADS; threads++)
    if (pthread_create(&host.threads[threads], NULL, commit_thread, &host) != 0)
      break;
  if (threads < COMMIT_THREADS) {
    logf_("pthread_create failed");
    rc = SMTPS_RESULT_IO;
  } else if ((rc = smtps_server_start(server)) != SMTPS_RESULT_OK) {
    log_result("smtps_server_start", rc);
  } else {
    uint16_t bound[2] = {0, 0};
    smtps_server_local_port(server, 0, &bound[0]);
    smtps_server_local_port(server, 1, &bound[1]);
    printf("PORT %u %u\n", (unsigned)bound[0], (unsigned)bound[1]);
    fflush(stdout);

    int sig = 0;
    while (sigwait(&signals, &sig) != 0) /* only EINVAL, which cannot happen here */
      ;
    logf_("signal %d: stopping (grace %d ms)", sig, SHUTDOWN_GRACE_MS);
    /* Listeners close, idle sessions get 421, messages in flight may finish: the commit pool
       keeps answering meanwhile. Returns once every session has had on_disconnect. */
    smtps_result stop = smtps_server_stop(server, SHUTDOWN_GRACE_MS);
    if (stop != SMTPS_RESULT_OK)
      log_result("smtps_server_stop", stop);
  }

  /* Stop the commit pool: it drains the queue first (replies to a stopped server get
     SMTPS_RESULT_SERVER_STOPPED, so those copies are deleted). */
  pthread_mutex_lock(&host.lock);
  host.stopping = true;
  pthread_cond_broadcast(&host.wake);
  pthread_mutex_unlock(&host.lock);
  for (int i = 0; i < threads; i++)
    pthread_join(host.threads[i], NULL);

  smtps_server_free(server); /* no other thread uses it any more */
  spool_close(&host.spool);
  pthread_cond_destroy(&host.wake);
  pthread_mutex_destroy(&host.lock);
  logf_("stopped");
  return rc == SMTPS_RESULT_OK ? 0 : 1;
}
