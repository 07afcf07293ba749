/*
 * fork_per_connection.c: an Exim-style libsmtps host at the connection level (smtps_conn_*):
 * the host owns the sockets and forks one child per connection.
 *
 * What it shows
 *   - The parent loads the certificates once (smtps_config_load_certificates), listens on
 *     127.0.0.1 with one implicit-TLS socket and one STARTTLS-required socket, and forks a child
 *     per accepted connection. It reaps children with waitpid(WNOHANG) on SIGCHLD and, on
 *     SIGTERM or SIGINT, closes its listeners, passes SIGTERM on to the children, waits for all
 *     of them and exits 0. Signals arrive through a signalfd in the poll set.
 *   - The child drives one smtps_conn over the socket: smtps_conn_read_fd and
 *     smtps_conn_write_fd do the I/O, smtps_conn_next_timeout_ms is the poll() timeout and
 *     smtps_conn_handle_timeout fires the library's timers; smtps_conn_next_event gives the
 *     events, answered with smtps_conn_decide. STARTTLS happens inside the connection.
 *   - Policy: AUTH PLAIN/LOGIN against a fixed user table, MAIL only after AUTH
 *     (smtps_config_set_require_auth), every recipient accepted except nobody@<any domain>
 *     (550 5.1.1). The message is written to SPOOL/tmp while it arrives and committed (fsync,
 *     rename into SPOOL/new/, fsync the directory) before its end is answered 250.
 *   - A child told to stop (SIGTERM) finishes the transaction in progress for up to 5 s, then
 *     closes with 421 4.3.2 (a message in progress is aborted and its spool file deleted).
 *     Every loop is bounded by the connection's own timers.
 *
 * Spool format: SPOOL/new/<name>.eml is
 *     X-Envelope-From: <sender>\r\n
 *     X-Envelope-To: <recipient>\r\n          (one line per accepted recipient)
 *     <the message exactly as received, dot-unstuffed>
 *
 * Build (see Makefile in this directory):
 *     make fork_per_connection                        # against an installed libsmtps (pkg-config)
 *     make LIBDIR=/path/to/target/debug INCLUDEDIR=/path/to/include fork_per_connection
 * Run:
 *     mkdir -p /tmp/spool
 *     openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
 *         -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
 *         -keyout key.pem -out cert.pem
 *     ./fork_per_connection /tmp/spool cert.pem key.pem [IMPLICIT_PORT STARTTLS_PORT]
 * (0 = ephemeral). It prints "PORT <implicit> <starttls>" on stdout once listening. Users:
 * alice/wonderland, bob/builder. Stop it with SIGTERM or Ctrl-C. examples/c/test.py drives it
 * end to end. Linux (signalfd, accept4).
 */
#define _GNU_SOURCE /* accept4, signalfd */

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "smtps.h"

#define PROGRAM "fork_per_connection"
#define MAX_CHILDREN 256
#define CHILD_STOP_GRACE_MS 5000

/* ------------------------------------------------------------------------------------------ */
/* Small helpers                                                                              */

static void logf_(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  flockfile(stderr);
  fprintf(stderr, PROGRAM "[%ld]: ", (long)getpid());
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

/* Creates SPOOL/tmp/<unique>.eml (unique: the child's pid is in the name); returns the
   descriptor or -1. */
static int spool_create(struct spool *sp, char *name, size_t name_len) {
  struct timespec now;
  clock_gettime(CLOCK_REALTIME, &now);
  unsigned long seq = sp->counter++;
  snprintf(name, name_len, "%lld.%ld.%lu.eml", (long long)now.tv_sec, (long)getpid(), seq);
  int fd = openat(sp->tmp_dir, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0)
    logf_("tmp/%s: %s", name, strerror(errno));
  return fd;
}

/* Writes "<field>: <value>\r\n" for an envelope line. */
static bool write_envelope_line(int fd, const char *field, smtps_str value) {
  char line[1200];
  int n = snprintf(line, sizeof line, "%s: <%.*s>\r\n", field, (int)value.len, value.data);
  return n > 0 && (size_t)n < sizeof line && write_all(fd, line, (size_t)n);
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
/* The child: one connection.                                                                 */

static const struct {
  const char *user, *password;
} USERS[] = {{"alice", "wonderland"}, {"bob", "builder"}};

struct child {
  smtps_conn *conn;
  struct spool *spool;
  int fd;             /* the message being received, -1 outside one */
  char name[96];      /* its name in SPOOL/tmp */
  bool failed;        /* a body write failed (the message was refused) */
  bool in_transaction; /* from an accepted MAIL to the message's end or a reset */
};

static int64_t now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* Answers a decision; a failure here is a host bug (the reply does not fit the command). */
static void decide(struct child *c, const smtps_event *ev, uint16_t code, const char *enhanced,
                   const char *text) {
  smtps_result rc = smtps_conn_decide(c->conn, ev->decision, code, enhanced, text);
  if (rc != SMTPS_RESULT_OK) {
    log_result("smtps_conn_decide", rc);
    /* The decision still waits: answer it with a plain temporary failure instead. */
    smtps_conn_decide(c->conn, ev->decision, 451, "4.3.0", NULL);
  }
}

static void drop_message(struct child *c) {
  spool_discard_tmp(c->spool, c->fd, c->name);
  c->fd = -1;
  c->name[0] = '\0';
}

/* DATA: creates the spool file with the envelope the connection holds. Each view is used
   before the next call on the connection (views live until the next call). */
static bool start_message(struct child *c) {
  drop_message(c); /* defensive: nothing should be open */
  c->failed = false;
  c->fd = spool_create(c->spool, c->name, sizeof c->name);
  if (c->fd < 0) {
    c->name[0] = '\0';
    return false;
  }
  bool ok = write_envelope_line(c->fd, "X-Envelope-From", smtps_conn_mail_from(c->conn));
  size_t count = smtps_conn_recipient_count(c->conn);
  for (size_t i = 0; ok && i < count; i++)
    ok = write_envelope_line(c->fd, "X-Envelope-To", smtps_conn_recipient(c->conn, i));
  if (!ok) {
    logf_("tmp/%s: %s", c->name, strerror(errno));
    drop_message(c);
  }
  return ok;
}

static void handle_event(struct child *c, const smtps_event *ev) {
  switch (ev->kind) {
  case SMTPS_EVENT_KIND_AUTH: {
    bool ok = ev->authzid.len == 0 ||
              (ev->authzid.len == ev->text.len && memcmp(ev->authzid.data, ev->text.data, ev->text.len) == 0);
    bool found = false;
    for (size_t i = 0; i < sizeof USERS / sizeof USERS[0]; i++)
      found |= str_equals(ev->text, USERS[i].user) & str_equals(ev->secret, USERS[i].password);
    ok = ok && found;
    logf_("AUTH %.*s %s", (int)ev->text.len, ev->text.data, ok ? "accepted" : "refused");
    if (ok)
      decide(c, ev, 0, NULL, NULL); /* 235 2.7.0 */
    else
      decide(c, ev, 535, "5.7.8", "Authentication credentials invalid");
    return;
  }
  case SMTPS_EVENT_KIND_MAIL:
    c->in_transaction = true;
    decide(c, ev, 0, NULL, NULL);
    return;
  case SMTPS_EVENT_KIND_RCPT:
    if (is_nobody(ev->text))
      decide(c, ev, 550, "5.1.1", "No such user here");
    else
      decide(c, ev, 0, NULL, NULL);
    return;
  case SMTPS_EVENT_KIND_DATA_START:
    if (start_message(c))
      decide(c, ev, 0, NULL, NULL); /* 354 */
    else
      decide(c, ev, 451, "4.3.0", "Spool failure, try again later");
    return;
  case SMTPS_EVENT_KIND_BODY:
    if (c->fd >= 0 && !c->failed && !write_all(c->fd, ev->data.data, ev->data.len)) {
      logf_("tmp/%s: %s", c->name, strerror(errno));
      c->failed = true;
      /* The rest of the body is read and dropped; the end is answered with this. */
      smtps_conn_refuse_message(c->conn, 451, "4.3.0", "Spool failure, try again later");
      drop_message(c);
    }
    return;
  case SMTPS_EVENT_KIND_MESSAGE_END: {
    c->in_transaction = false;
    if (c->fd < 0 || c->failed) {
      drop_message(c);
      decide(c, ev, 451, "4.3.0", "Spool failure, try again later");
      return;
    }
    char name[sizeof c->name];
    memcpy(name, c->name, sizeof name);
    int fd = c->fd;
    c->fd = -1;
    c->name[0] = '\0';
    if (!spool_commit(c->spool, fd, name)) { /* fsync, rename, fsync the directory */
      decide(c, ev, 451, "4.3.0", "Spool failure, try again later");
      return;
    }
    char text[160];
    snprintf(text, sizeof text, "Queued as %s", name);
    smtps_result rc = smtps_conn_decide(c->conn, ev->decision, 250, "2.0.0", text);
    if (rc != SMTPS_RESULT_OK) {
      /* Not answered 250 (cannot happen for a well-formed reply to the awaited decision):
         the client will retry, so the copy must go. */
      log_result("smtps_conn_decide 250", rc);
      spool_uncommit(c->spool, name);
      smtps_conn_decide(c->conn, ev->decision, 451, "4.3.0", NULL);
      return;
    }
    logf_("%" PRIu64 " octets queued as new/%s", ev->size, name);
    return;
  }
  case SMTPS_EVENT_KIND_MESSAGE_ABORTED:
    logf_("message aborted (reason %u)", (unsigned)ev->abort_reason);
    c->in_transaction = false;
    drop_message(c);
    return;
  case SMTPS_EVENT_KIND_RESET:
    c->in_transaction = false;
    drop_message(c);
    return;
  case SMTPS_EVENT_KIND_START_TLS:
    logf_("STARTTLS done (%" PRIu64 " pipelined octets discarded)", ev->size);
    return;
  default:
    /* CONNECT, HELO: accepted. Notices (QUIT, TOO_MANY_ERRORS, BARE_LINE_ENDING) need no
       answer; a kind a newer library adds that awaits a decision gets the default. */
    if (ev->awaits_decision)
      decide(c, ev, 0, NULL, NULL);
    return;
  }
}

/* Serves one connection on `sock` until it is over; returns the exit status of the child. */
static int serve_connection(const smtps_config *cfg, smtps_mode mode, int sock, int sig_fd,
                            struct spool *spool) {
  struct child c = {.conn = NULL, .spool = spool, .fd = -1};
  smtps_result rc = smtps_conn_new(cfg, mode, &c.conn);
  if (rc != SMTPS_RESULT_OK) {
    log_result("smtps_conn_new", rc);
    return 1;
  }
  int fl = fcntl(sock, F_GETFL);
  if (fl < 0 || fcntl(sock, F_SETFL, fl | O_NONBLOCK) != 0) {
    logf_("fcntl: %s", strerror(errno));
    smtps_conn_free(c.conn);
    return 1;
  }

  bool stop_requested = false, closing = false;
  int64_t stop_deadline = 0;
  int status = 0;
  for (;;) {
    /* 1. Every event the input so far produced. */
    smtps_event ev;
    while ((rc = smtps_conn_next_event(c.conn, &ev)) == SMTPS_RESULT_OK &&
           ev.kind != SMTPS_EVENT_KIND_NONE)
      handle_event(&c, &ev);
    if (rc != SMTPS_RESULT_OK) {
      log_result("smtps_conn_next_event", rc);
      status = 1;
      break;
    }

    /* 2. Send what waits, as far as the socket takes it. */
    while (smtps_conn_wants_write(c.conn)) {
      size_t written = 0;
      if (smtps_conn_write_fd(c.conn, sock, &written) != SMTPS_RESULT_OK || written == 0)
        break; /* would block (poll for POLLOUT below), or an error closed the connection */
    }

    /* 3. Over once closed and its output is sent (or dropped by the close-linger timer). */
    if (smtps_conn_is_closed(c.conn) && !smtps_conn_wants_write(c.conn))
      break;

    /* 4. Told to stop: close between transactions, or when the grace ends. */
    if (stop_requested && !closing && (!c.in_transaction || now_ms() >= stop_deadline)) {
      smtps_conn_close(c.conn, 421, "4.3.2", "Service shutting down");
      closing = true;
      continue; /* events (MESSAGE_ABORTED) and the 421 go out first */
    }

    /* 5. Wait for the socket, a signal, or the next timer. */
    int64_t timeout = smtps_conn_next_timeout_ms(c.conn);
    if (timeout < 0)
      break; /* no timer runs: the connection is over */
    if (stop_requested && !closing) {
      int64_t left = stop_deadline - now_ms();
      if (left < timeout)
        timeout = left < 0 ? 0 : left;
    }
    short events = (short)((smtps_conn_wants_read(c.conn) ? POLLIN : 0) |
                           (smtps_conn_wants_write(c.conn) ? POLLOUT : 0));
    struct pollfd fds[2] = {{.fd = events ? sock : -1, .events = events},
                            {.fd = stop_requested ? -1 : sig_fd, .events = POLLIN}};
    int n = poll(fds, 2, timeout > INT_MAX ? INT_MAX : (int)timeout);
    if (n < 0 && errno != EINTR) {
      logf_("poll: %s", strerror(errno));
      status = 1;
      break;
    }
    if (n > 0 && (fds[1].revents & POLLIN)) {
      struct signalfd_siginfo si;
      if (read(sig_fd, &si, sizeof si) == (ssize_t)sizeof si) {
        stop_requested = true;
        stop_deadline = now_ms() + CHILD_STOP_GRACE_MS;
      }
    }
    if (n > 0 && (fds[0].revents & (POLLIN | POLLHUP | POLLERR)) && smtps_conn_wants_read(c.conn)) {
      size_t got = 0;
      rc = smtps_conn_read_fd(c.conn, sock, &got); /* end of stream is noted inside */
      if (rc == SMTPS_RESULT_TLS_HANDSHAKE || rc == SMTPS_RESULT_TLS_SESSION) {
        log_result("TLS", rc);
        size_t written; /* the alert, best effort; then the connection is over */
        smtps_conn_write_fd(c.conn, sock, &written);
        break;
      }
      if (rc != SMTPS_RESULT_OK)
        log_result("smtps_conn_read_fd", rc); /* the connection closed itself */
    }
    if (n == 0)
      smtps_conn_handle_timeout(c.conn); /* calling it early is harmless */
  }

  if (smtps_conn_is_closed(c.conn))
    logf_("connection closed (reason %u)", (unsigned)smtps_conn_close_reason(c.conn));
  drop_message(&c); /* a message never answered 250 */
  smtps_conn_free(c.conn);
  return status;
}

/* ------------------------------------------------------------------------------------------ */
/* The parent: listeners, fork, reaping, shutdown.                                            */

static pid_t children[MAX_CHILDREN];
static size_t child_count;

static void forget_child(pid_t pid, int status) {
  for (size_t i = 0; i < child_count; i++) {
    if (children[i] == pid) {
      children[i] = children[--child_count];
      break;
    }
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
    logf_("child %ld ended with status 0x%x", (long)pid, (unsigned)status);
}

static void reap_children(void) {
  int status;
  pid_t pid;
  while ((pid = waitpid(-1, &status, WNOHANG)) > 0) /* bounded by the children that ended */
    forget_child(pid, status);
}

static int listen_on(unsigned port, uint16_t *bound) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return -1;
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in sa;
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_port = htons((uint16_t)port);
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof sa;
  if (bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(fd, 128) != 0 ||
      getsockname(fd, (struct sockaddr *)&sa, &len) != 0) {
    int saved = errno;
    close(fd);
    errno = saved;
    return -1;
  }
  *bound = ntohs(sa.sin_port);
  return fd;
}

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

  /* Signals are taken from a signalfd only: blocked here, inherited blocked by children. */
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGCHLD);
  if (sigprocmask(SIG_BLOCK, &signals, NULL) != 0) {
    logf_("sigprocmask: %s", strerror(errno));
    return 1;
  }
  int sig_fd = signalfd(-1, &signals, SFD_NONBLOCK | SFD_CLOEXEC);
  if (sig_fd < 0) {
    logf_("signalfd: %s", strerror(errno));
    return 1;
  }

  static struct spool spool;
  spool.tmp_dir = spool.new_dir = -1;
  if (!spool_open(&spool, argv[1]))
    return 1;

  smtps_config *cfg = smtps_config_new();
  if (cfg == NULL) {
    logf_("smtps_config_new failed");
    return 1;
  }
  smtps_result rc;
  if ((rc = smtps_config_set_hostname(cfg, "localhost")) != SMTPS_RESULT_OK ||
      (rc = smtps_config_set_certificate_files(cfg, argv[2], argv[3])) != SMTPS_RESULT_OK ||
      (rc = smtps_config_set_require_auth(cfg, true)) != SMTPS_RESULT_OK) {
    log_result("configuration", rc);
    smtps_config_free(cfg);
    return 1;
  }
  /* Once, here: a bad file shows now, and the children share what was loaded. */
  if ((rc = smtps_config_load_certificates(cfg)) != SMTPS_RESULT_OK) {
    log_result("smtps_config_load_certificates", rc);
    smtps_config_free(cfg);
    return 1;
  }

  static const smtps_mode modes[2] = {SMTPS_MODE_IMPLICIT_TLS, SMTPS_MODE_START_TLS_REQUIRED};
  int listeners[2];
  uint16_t bound[2];
  for (int i = 0; i < 2; i++) {
    listeners[i] = listen_on(ports[i], &bound[i]);
    if (listeners[i] < 0) {
      logf_("127.0.0.1:%u: %s", ports[i], strerror(errno));
      return 1;
    }
  }
  printf("PORT %u %u\n", (unsigned)bound[0], (unsigned)bound[1]);
  fflush(stdout);

  /* Accept and fork until SIGTERM or SIGINT. */
  bool stopping = false;
  while (!stopping) {
    struct pollfd fds[3] = {{.fd = listeners[0], .events = POLLIN},
                            {.fd = listeners[1], .events = POLLIN},
                            {.fd = sig_fd, .events = POLLIN}};
    if (poll(fds, 3, -1) < 0) {
      if (errno == EINTR)
        continue;
      logf_("poll: %s", strerror(errno));
      break;
    }
    if (fds[2].revents & POLLIN) {
      struct signalfd_siginfo si;
      while (read(sig_fd, &si, sizeof si) == (ssize_t)sizeof si) {
        if (si.ssi_signo == SIGCHLD) {
          reap_children();
        } else {
          logf_("signal %u: stopping", (unsigned)si.ssi_signo);
          stopping = true;
        }
      }
    }
    for (int i = 0; i < 2 && !stopping; i++) {
      if (!(fds[i].revents & POLLIN))
        continue;
      /* Take what is pending now (at most the backlog's worth per round). */
      for (int round = 0; round < 128; round++) {
        int sock = accept4(listeners[i], NULL, NULL, SOCK_CLOEXEC);
        if (sock < 0) {
          if (errno != EAGAIN && errno != EWOULDBLOCK && errno != ECONNABORTED && errno != EINTR)
            logf_("accept: %s", strerror(errno));
          break;
        }
        if (child_count == MAX_CHILDREN) {
          logf_("too many children: connection closed");
          close(sock);
          continue;
        }
        fflush(stdout);
        fflush(stderr);
        pid_t pid = fork();
        if (pid == 0) {
          /* The child: keeps the socket, the config and the spool; drops the rest. */
          close(listeners[0]);
          close(listeners[1]);
          close(sig_fd);
          sigset_t stop;
          sigemptyset(&stop);
          sigaddset(&stop, SIGTERM);
          sigaddset(&stop, SIGINT);
          int child_sig = signalfd(-1, &stop, SFD_NONBLOCK | SFD_CLOEXEC);
          int status = child_sig < 0 ? 1 : serve_connection(cfg, modes[i], sock, child_sig, &spool);
          close(sock);
          if (child_sig >= 0)
            close(child_sig);
          smtps_config_free(cfg);
          spool_close(&spool);
          exit(status);
        }
        if (pid < 0)
          logf_("fork: %s", strerror(errno));
        else
          children[child_count++] = pid;
        close(sock);
      }
    }
  }

  /* Shutdown: no new connections; the children finish (or close with 421) and are waited for.
     Bounded by the children's own lifetime: their stop grace and the library's timers. */
  close(listeners[0]);
  close(listeners[1]);
  reap_children();
  for (size_t i = 0; i < child_count; i++)
    kill(children[i], SIGTERM);
  while (child_count > 0) {
    int status;
    pid_t pid = waitpid(-1, &status, 0);
    if (pid < 0) {
      if (errno == EINTR)
        continue;
      logf_("waitpid: %s", strerror(errno));
      break; /* ECHILD: none left */
    }
    forget_child(pid, status);
  }
  close(sig_fd);
  smtps_config_free(cfg);
  spool_close(&spool);
  logf_("stopped");
  return 0;
}
