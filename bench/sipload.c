/*
 * sipload: a closed-loop UDP SIP REGISTER load generator for loopback benchmarks.
 *
 *   sipload --target 127.0.0.1:5060 --users 10000 --window 128 --mode refresh --duration 10
 *
 * One thread, epoll, a few non-blocking UDP sockets bound on 127.0.0.1 (users share
 * them: Via and Contact carry the port, Via asks for rport).  Only 127.0.0.0/8 targets
 * are accepted.  Every phase is bounded by a request count and a duration, so it
 * always stops by itself.
 *
 * --target may be given up to MAX_TARGETS times (registrar nodes sharing a store):
 * socket i sends to target i modulo their number, and a user always uses the same
 * socket, so each node gets its own users and an equal share of them (--sockets must
 * be a multiple of the targets).  The figures are those of all the targets together.
 *
 * Modes:
 *   initial   each user registers once, a new Call-ID (the run's tag), CSeq 1.
 *   refresh   every user registers once first (the warm-up, reported apart and not
 *             measured), then users are re-registered in turn: the same Call-ID, CSeq
 *             one higher each time, a new Via branch.
 *
 * With --password, a 401 is answered with Digest credentials (RFC 7616 / RFC 2617,
 * qop=auth) for the challenge of the preferred algorithm (--algorithm, MD5 unless
 * told, else whichever is offered).  The nonce is kept per user and reused with nc
 * one higher, so a refresh costs one round trip; a 401 (stale=true or not) is signed
 * again with its new nonce, at most twice per request.  (No opaque is echoed: sipreg
 * sends none.)
 *
 * A request is retransmitted unchanged after --timeout-ms (T1), doubling each time up
 * to --t2-ms (T2), at most --tries sends; then it counts as a timeout.  Each timer runs
 * up to --jitter percent longer, at random: without it, requests lost in one burst are
 * sent again in the same order at the same moment, and those at the tail of a burst
 * that overflows the server's receive buffer are lost every time, as independent
 * phones' would not be.  (A timer may then fire up to that much later still, behind a
 * longer one in its FIFO.)  Responses are matched to users by the number in their
 * Call-ID (an array index) and to the request by CSeq.
 *
 * Requests are assembled from pieces built once per socket with a few memcpy calls,
 * sent in batches with sendmmsg and read with recvmmsg, so that the generator's own
 * CPU stays small beside the server's; it reports that CPU (getrusage) per phase.
 * It runs as a SCHED_BATCH task (it asks for that at start, no privilege needed): its
 * wake-ups, one per burst of answers, then wait for the server's time slice to end
 * instead of preempting it, and the CPU the server is measured by is not spent
 * switching back and forth with its own load generator.
 *
 * Output: one JSON line on stdout (with --pause, a {"warmup_done":true} line before
 * it): requests, datagrams sent, answered, failures (non-2xx finals, timeouts, those
 * unfinished when time ran out), retransmissions, counts by status, elapsed seconds,
 * the rate, latency p50/p90/p99/max in ms (first send to final answer, 2xx only) and
 * its own CPU, for the measured phase and, in refresh mode, the warm-up.  Exit status
 * 0, 2 for a bad argument, 1 for a system error.
 *
 *   cc -O2 -Wall -Wextra -o sipload sipload.c -lcrypto     (bench/run.py does this)
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_SOCKETS 64
#define MAX_TARGETS 8
#define BATCH 64          /* datagrams per recvmmsg / sendmmsg call */
#define MSG_MAX 4096      /* one request */
#define RECV_MAX 8192     /* one response */
#define NONCE_MAX 96      /* bytes kept for a user's nonce (sipreg's are 43) */
#define MAX_AUTH_ROUNDS 2 /* 401s answered within one request */
#define LEVELS 8          /* retransmission levels, one timer FIFO each */

enum state { IDLE = 0, BUSY = 1 };
enum alg { ALG_NONE = 0, ALG_MD5 = 1, ALG_SHA256 = 2 };

struct user {
    uint64_t first_ns;  /* first send of the request in progress */
    uint32_t cseq;      /* of the transaction in progress (or the last) */
    uint32_t gen;       /* bumped at every send and answer: older timers are stale */
    uint32_t branch;    /* Via branch serial of the transaction in progress */
    uint32_t nc;        /* nonce count last used */
    uint8_t state;
    uint8_t tries;      /* sends of the transaction in progress */
    uint8_t auth_rounds;
    uint8_t alg;        /* algorithm of the nonce kept, ALG_NONE: no nonce yet */
};

struct timer {
    uint32_t idx;
    uint32_t gen;
    uint64_t deadline_ns;
};

/* A FIFO of timers with one timeout: deadlines are pushed in order. */
struct fifo {
    struct timer *items;
    size_t cap, head, len;
};

struct stats {
    uint64_t requests;    /* REGISTERs started (a request may take several sends) */
    uint64_t sent;        /* datagrams sent */
    uint64_t retransmissions;
    uint64_t responses;   /* datagrams received that matched a request in progress */
    uint64_t strays;      /* datagrams that matched nothing (late, duplicate, garbled) */
    uint64_t answered;    /* requests that got a final answer */
    uint64_t ok;          /* ... a 2xx */
    uint64_t non2xx;
    uint64_t timeouts;
    uint64_t unfinished;  /* still in progress when the phase's time ran out */
    uint64_t challenges;  /* 401s answered with credentials */
    uint64_t stale;       /* ... of them with stale=true */
    uint64_t send_errors;
    uint64_t status[700];
    uint32_t *lat_us;     /* latency of each 2xx, microseconds */
    size_t lat_len, lat_cap;
    uint64_t start_ns, last_ns;
    double cpu_user_s, cpu_sys_s;
};

struct sock {
    int fd;
    int port;
    /* The fixed pieces of a request from this socket (see build()). */
    char *head;    /* "REGISTER ... branch=z9hG4bK-TAG-" */
    size_t head_len;
    char *tail;    /* "@127.0.0.1:PORT>\r\nExpires: ...\r\nUser-Agent: ...\r\n" */
    size_t tail_len;
    /* Outgoing batch. */
    struct mmsghdr out[BATCH];
    struct iovec out_iov[BATCH];
    char *out_buf;
    int out_len;
};

static struct {
    struct sockaddr_in targets[MAX_TARGETS];
    unsigned long ntargets;
    const char *mode;
    const char *domain;
    const char *prefix;
    const char *password;
    const char *tag;
    const char *user_agent;
    unsigned long users, first, window, sockets;
    unsigned long requests;
    unsigned long expires;
    double duration, warmup_duration, rate, jitter;
    unsigned long timeout_ms, t2_ms, tries, show_failures;
    int pause;
    int alg_pref;
    int refresh;
} opt;

static struct user *users;
static char *nonces;  /* users * NONCE_MAX, with --password only */
static char realm[256];
static size_t realm_len;
static struct sock socks[MAX_SOCKETS];
static struct fifo timers[LEVELS];
static int epfd;
static unsigned long outstanding;
static uint32_t branch_serial;
static volatile sig_atomic_t interrupted;
static EVP_MD_CTX *md_ctx;
static char ha2_hex[2][65]; /* H(REGISTER:uri) per algorithm */
/* Pieces shared by all sockets. */
static char mid1[512], mid2[512], mid3[512], mid4[512], mid5[512], mid6[512];
static size_t mid1_len, mid2_len, mid3_len, mid4_len, mid5_len, mid6_len;
static char request_uri[300];

static void die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("sipload: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

static void usage_error(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("sipload: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputs(" (see --help)\n", stderr);
    va_end(ap);
    exit(2);
}

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* This process's CPU seconds so far: user in *user, system in *sys. */
static void cpu_now(double *user, double *sys) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    *user = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6;
    *sys = (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static void *xcalloc(size_t n, size_t size) {
    void *p = calloc(n, size);
    if (p == NULL && n && size) die("out of memory (%zu x %zu bytes)", n, size);
    return p;
}

/* Decimal digits of v into buf (no terminator); their count. */
static size_t fmt_u(char *buf, uint64_t v) {
    char tmp[24];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (size_t i = 0; i < n; i++) buf[i] = tmp[n - 1 - i];
    return n;
}

static char *put(char *p, const char *s, size_t n) {
    memcpy(p, s, n);
    return p + n;
}

static void hex(const unsigned char *in, size_t n, char *out) {
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 15];
    }
    out[2 * n] = '\0';
}

/* Hex digest of the concatenated pieces (NULL-terminated list) with algorithm alg. */
static void digest_hex(int alg, char *out, ...) {
    const EVP_MD *md = alg == ALG_SHA256 ? EVP_sha256() : EVP_md5();
    unsigned char raw[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    va_list ap;
    if (EVP_DigestInit_ex(md_ctx, md, NULL) != 1) die("EVP_DigestInit_ex failed");
    va_start(ap, out);
    for (const char *s = va_arg(ap, const char *); s != NULL; s = va_arg(ap, const char *)) {
        size_t n = va_arg(ap, size_t);
        EVP_DigestUpdate(md_ctx, s, n);
    }
    va_end(ap);
    if (EVP_DigestFinal_ex(md_ctx, raw, &len) != 1) die("EVP_DigestFinal_ex failed");
    hex(raw, len, out);
}

/* ---- timers ---- */

/* A number in [0, 1) (xorshift64*: the timer jitter needs no more). */
static double next_random(void) {
    static uint64_t x = 0x9e3779b97f4a7c15u;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    return (double)((x * 0x2545f4914f6cdd1du) >> 11) / 9007199254740992.0;
}

static void fifo_push(struct fifo *f, uint32_t idx, uint32_t gen, uint64_t deadline) {
    if (f->len == f->cap) {
        size_t cap = f->cap ? f->cap * 2 : 1024;
        struct timer *items = xcalloc(cap, sizeof *items);
        for (size_t i = 0; i < f->len; i++) items[i] = f->items[(f->head + i) % f->cap];
        free(f->items);
        f->items = items;
        f->cap = cap;
        f->head = 0;
    }
    f->items[(f->head + f->len) % f->cap] = (struct timer){idx, gen, deadline};
    f->len++;
}

/* RFC 3261 Timer E: T1 doubling at each send, at most T2. */
static uint64_t timeout_ns(unsigned level) {
    uint64_t ms = (uint64_t)opt.timeout_ms << level;
    return (ms < opt.t2_ms ? ms : opt.t2_ms) * 1000000u;
}

/* ---- requests ---- */

static struct sock *sock_of(uint32_t idx) { return &socks[idx % opt.sockets]; }

/*
 * The request of user idx as it stands (its cseq, branch, nonce and nc): the same
 * bytes each time, so a retransmission is built again rather than kept.
 */
static size_t build(uint32_t idx, char *buf) {
    struct sock *s = sock_of(idx);
    struct user *u = &users[idx];
    char num[24], cseq[24], branch[24];
    size_t num_len = fmt_u(num, opt.first + idx);
    size_t cseq_len = fmt_u(cseq, u->cseq);
    size_t branch_len = fmt_u(branch, u->branch);
    char *p = buf;
    p = put(p, s->head, s->head_len);
    p = put(p, branch, branch_len);
    p = put(p, mid1, mid1_len); /* \r\nMax-Forwards..From: <sip:PREFIX */
    p = put(p, num, num_len);
    p = put(p, mid2, mid2_len); /* @DOMAIN>;tag=f */
    p = put(p, num, num_len);
    p = put(p, mid3, mid3_len); /* \r\nTo: <sip:PREFIX */
    p = put(p, num, num_len);
    p = put(p, mid4, mid4_len); /* @DOMAIN>\r\nCall-ID: */
    p = put(p, num, num_len);
    p = put(p, mid5, mid5_len); /* -TAG@127.0.0.1\r\nCSeq: */
    p = put(p, cseq, cseq_len);
    p = put(p, mid6, mid6_len); /* REGISTER\r\nContact: <sip:PREFIX */
    p = put(p, num, num_len);
    p = put(p, s->tail, s->tail_len);
    if (u->alg != ALG_NONE) {
        const char *nonce = nonces + (size_t)idx * NONCE_MAX;
        size_t nonce_len = strlen(nonce);
        size_t prefix_len = strlen(opt.prefix);
        char user[300], ha1[65], resp[65], nc[9], cnonce[24];
        size_t cnonce_len;
        int a = u->alg;
        size_t user_len = prefix_len + num_len;
        memcpy(user, opt.prefix, prefix_len);
        memcpy(user + prefix_len, num, num_len);
        snprintf(nc, sizeof nc, "%08x", u->nc);
        cnonce[0] = 'c';
        cnonce_len = 1 + fmt_u(cnonce + 1, opt.first + idx);
        digest_hex(a, ha1, user, user_len, ":", (size_t)1, realm, realm_len, ":", (size_t)1,
                   opt.password, strlen(opt.password), (char *)NULL);
        digest_hex(a, resp, ha1, strlen(ha1), ":", (size_t)1, nonce, nonce_len, ":", (size_t)1,
                   nc, (size_t)8, ":", (size_t)1, cnonce, cnonce_len, ":auth:", (size_t)6,
                   ha2_hex[a - 1], strlen(ha2_hex[a - 1]), (char *)NULL);
        p += sprintf(p,
                     "Authorization: Digest username=\"%.*s\", realm=\"%s\", nonce=\"%s\", "
                     "uri=\"%s\", response=\"%s\", algorithm=%s, cnonce=\"%.*s\", qop=auth, "
                     "nc=%s\r\n",
                     (int)user_len, user, realm, nonce, request_uri, resp,
                     a == ALG_SHA256 ? "SHA-256" : "MD5", (int)cnonce_len, cnonce, nc);
    }
    p = put(p, "Content-Length: 0\r\n\r\n", 21);
    return (size_t)(p - buf);
}

static void flush(struct sock *s, struct stats *st) {
    int done = 0;
    while (done < s->out_len) {
        int n = sendmmsg(s->fd, s->out + done, (unsigned)(s->out_len - done), 0);
        if (n < 0) {
            if (errno == EINTR) continue;
            /* A full buffer (EAGAIN) or a refused port: the timers retransmit. */
            st->send_errors += (uint64_t)(s->out_len - done);
            break;
        }
        done += n;
    }
    s->out_len = 0;
}

static void flush_all(struct stats *st) {
    for (unsigned long i = 0; i < opt.sockets; i++)
        if (socks[i].out_len) flush(&socks[i], st);
}

/* Send user idx's request as it stands and arm its timer. */
static void transmit(uint32_t idx, struct stats *st, uint64_t now) {
    struct sock *s = sock_of(idx);
    struct user *u = &users[idx];
    if (s->out_len == BATCH) flush(s, st);
    char *buf = s->out_buf + (size_t)s->out_len * MSG_MAX;
    s->out_iov[s->out_len].iov_base = buf;
    s->out_iov[s->out_len].iov_len = build(idx, buf);
    s->out_len++;
    st->sent++;
    u->gen++;
    unsigned level = u->tries < LEVELS ? u->tries : LEVELS - 1;
    uint64_t timeout = timeout_ns(level);
    u->tries++;
    if (opt.jitter > 0) timeout += (uint64_t)((double)timeout * opt.jitter * next_random());
    fifo_push(&timers[level], idx, u->gen, now + timeout);
}

/* A new transaction for user idx: next CSeq, new branch, nc + 1 if a nonce is kept. */
static void new_transaction(uint32_t idx, struct stats *st, uint64_t now) {
    struct user *u = &users[idx];
    u->cseq++;
    u->branch = ++branch_serial;
    u->tries = 0;
    if (u->alg != ALG_NONE) u->nc++;
    transmit(idx, st, now);
}

static void start_request(uint32_t idx, struct stats *st, uint64_t now) {
    struct user *u = &users[idx];
    u->state = BUSY;
    u->auth_rounds = 0;
    u->first_ns = now;
    outstanding++;
    st->requests++;
    new_transaction(idx, st, now);
}

static void finish(uint32_t idx, struct stats *st, uint64_t now, int status) {
    struct user *u = &users[idx];
    u->state = IDLE;
    u->gen++;
    outstanding--;
    st->last_ns = now;
    if (status < 0) {
        st->timeouts++;
        if (st->timeouts <= opt.show_failures)
            fprintf(stderr, "sipload: timeout: Call-ID %lu-%s@127.0.0.1 CSeq %u, %u sends\n",
                    opt.first + idx, opt.tag, u->cseq, u->tries);
        return;
    }
    st->answered++;
    if (status >= 200 && status < 300) {
        st->ok++;
        if (st->lat_len == st->lat_cap) {
            st->lat_cap = st->lat_cap ? st->lat_cap * 2 : 65536;
            st->lat_us = realloc(st->lat_us, st->lat_cap * sizeof *st->lat_us);
            if (st->lat_us == NULL) die("out of memory for latencies");
        }
        uint64_t us = (now - u->first_ns) / 1000u;
        st->lat_us[st->lat_len++] = us > UINT32_MAX ? UINT32_MAX : (uint32_t)us;
    } else {
        st->non2xx++;
        if (st->non2xx <= opt.show_failures)
            fprintf(stderr, "sipload: %d: Call-ID %lu-%s@127.0.0.1 CSeq %u\n", status,
                    opt.first + idx, opt.tag, u->cseq);
    }
}

static void fire_timers(struct stats *st, uint64_t now) {
    for (unsigned level = 0; level < LEVELS; level++) {
        struct fifo *f = &timers[level];
        while (f->len) {
            struct timer t = f->items[f->head];
            if (t.deadline_ns > now) break;
            f->head = (f->head + 1) % f->cap;
            f->len--;
            struct user *u = &users[t.idx];
            if (u->state != BUSY || u->gen != t.gen) continue; /* answered or sent again */
            if (u->tries >= opt.tries) {
                finish(t.idx, st, now, -1);
            } else {
                st->retransmissions++;
                transmit(t.idx, st, now);
            }
        }
    }
}

static uint64_t next_deadline(void) {
    uint64_t best = UINT64_MAX;
    for (unsigned level = 0; level < LEVELS; level++)
        if (timers[level].len && timers[level].items[timers[level].head].deadline_ns < best)
            best = timers[level].items[timers[level].head].deadline_ns;
    return best;
}

/* ---- responses ---- */

/* The value of a header line: from after the colon, spaces skipped, to the line's end. */
static const char *header_value(const char *line, const char *end, size_t name_len) {
    const char *p = line + name_len;
    while (p < end && (*p == ' ' || *p == '\t')) p++;
    if (p >= end || *p != ':') return NULL;
    p++;
    while (p < end && (*p == ' ' || *p == '\t')) p++;
    return p;
}

static int name_is(const char *line, const char *end, const char *name) {
    size_t n = strlen(name);
    if ((size_t)(end - line) <= n || strncasecmp(line, name, n) != 0) return 0;
    return line[n] == ':' || line[n] == ' ' || line[n] == '\t';
}

/* One Digest challenge: its algorithm, nonce and stale flag. */
struct challenge {
    int alg;
    int stale;
    const char *nonce;
    size_t nonce_len;
    const char *realm;
    size_t realm_len;
};

/* Parse the auth-params of a WWW-Authenticate value (after "Digest"). */
static int parse_challenge(const char *p, const char *end, struct challenge *c) {
    memset(c, 0, sizeof *c);
    c->alg = ALG_MD5; /* RFC 7616: no algorithm means MD5 */
    while (p < end && (*p == ' ' || *p == '\t')) p++;
    if ((size_t)(end - p) < 6 || strncasecmp(p, "Digest", 6) != 0) return 0;
    p += 6;
    while (p < end) {
        while (p < end && (*p == ' ' || *p == '\t' || *p == ',')) p++;
        const char *name = p;
        while (p < end && *p != '=' && *p != ' ' && *p != ',') p++;
        size_t name_len = (size_t)(p - name);
        while (p < end && *p == ' ') p++;
        if (p >= end || *p != '=') break;
        p++;
        while (p < end && *p == ' ') p++;
        const char *val;
        size_t val_len;
        if (p < end && *p == '"') {
            val = ++p;
            while (p < end && *p != '"') p += (*p == '\\' && p + 1 < end) ? 2 : 1;
            val_len = (size_t)(p - val);
            if (p < end) p++;
        } else {
            val = p;
            while (p < end && *p != ',' && *p != ' ') p++;
            val_len = (size_t)(p - val);
        }
        if (name_len == 5 && strncasecmp(name, "nonce", 5) == 0) {
            c->nonce = val;
            c->nonce_len = val_len;
        } else if (name_len == 5 && strncasecmp(name, "realm", 5) == 0) {
            c->realm = val;
            c->realm_len = val_len;
        } else if (name_len == 5 && strncasecmp(name, "stale", 5) == 0) {
            c->stale = val_len == 4 && strncasecmp(val, "true", 4) == 0;
        } else if (name_len == 9 && strncasecmp(name, "algorithm", 9) == 0) {
            if (val_len == 7 && strncasecmp(val, "SHA-256", 7) == 0)
                c->alg = ALG_SHA256;
            else if (val_len == 3 && strncasecmp(val, "MD5", 3) == 0)
                c->alg = ALG_MD5;
            else
                c->alg = ALG_NONE; /* one we do not do (SHA-512-256, -sess) */
        }
    }
    return c->nonce != NULL && c->alg != ALG_NONE;
}

/* Read an unsigned decimal at p (up to end); -1 if none. */
static long parse_ulong(const char *p, const char *end, const char **after) {
    long v = 0;
    const char *q = p;
    while (q < end && *q >= '0' && *q <= '9' && v < 100000000000L) v = v * 10 + (*q++ - '0');
    if (after) *after = q;
    return q == p ? -1 : v;
}

static void handle_response(const char *buf, size_t len, struct stats *st, uint64_t now) {
    const char *end = buf + len;
    if (len < 12 || memcmp(buf, "SIP/2.0 ", 8) != 0) {
        st->strays++;
        return;
    }
    long status = parse_ulong(buf + 8, end, NULL);
    if (status < 100 || status > 699) {
        st->strays++;
        return;
    }
    long who = -1, cseq = -1;
    struct challenge best = {0}, c;
    const char *line = memchr(buf, '\n', len);
    while (line != NULL && ++line < end) {
        const char *eol = memchr(line, '\n', (size_t)(end - line));
        const char *stop = eol ? eol : end;
        if (stop > line && stop[-1] == '\r') stop--;
        if (stop == line) break; /* the blank line: the end of the head */
        const char *v;
        if ((name_is(line, stop, "Call-ID") && (v = header_value(line, stop, 7))) ||
            (name_is(line, stop, "i") && (v = header_value(line, stop, 1)))) {
            const char *after;
            long n = parse_ulong(v, stop, &after);
            size_t tag_len = strlen(opt.tag);
            if (n >= 0 && after < stop && *after == '-' && (size_t)(stop - after) > tag_len &&
                memcmp(after + 1, opt.tag, tag_len) == 0 && after[1 + tag_len] == '@')
                who = n;
        } else if (name_is(line, stop, "CSeq") && (v = header_value(line, stop, 4))) {
            cseq = parse_ulong(v, stop, NULL);
        } else if (status == 401 && name_is(line, stop, "WWW-Authenticate") &&
                   (v = header_value(line, stop, 16)) && parse_challenge(v, stop, &c)) {
            if (best.nonce == NULL || c.alg == opt.alg_pref) best = c;
        }
        line = eol;
    }
    if (who < (long)opt.first || who >= (long)(opt.first + opt.users)) {
        st->strays++;
        return;
    }
    uint32_t idx = (uint32_t)(who - (long)opt.first);
    struct user *u = &users[idx];
    if (u->state != BUSY || cseq != (long)u->cseq) {
        st->strays++; /* a late answer to an earlier transaction, or a duplicate */
        return;
    }
    st->responses++;
    st->status[status]++;
    if (status < 200) return; /* provisional: wait on (the timer still retransmits) */
    if (status == 401 && opt.password != NULL && best.nonce != NULL &&
        u->auth_rounds < MAX_AUTH_ROUNDS && best.nonce_len < NONCE_MAX) {
        if (best.realm != NULL && realm_len == 0 && best.realm_len < sizeof realm) {
            memcpy(realm, best.realm, best.realm_len);
            realm[best.realm_len] = '\0';
            realm_len = best.realm_len;
        }
        char *nonce = nonces + (size_t)idx * NONCE_MAX;
        memcpy(nonce, best.nonce, best.nonce_len);
        nonce[best.nonce_len] = '\0';
        u->alg = (uint8_t)best.alg;
        u->nc = 0; /* new_transaction() makes it 1 */
        u->auth_rounds++;
        st->challenges++;
        st->stale += (uint64_t)best.stale;
        new_transaction(idx, st, now);
        return;
    }
    finish(idx, st, now, (int)status);
}

/*
 * Sleep until a socket is readable, a timer is due, or until_ns (the next paced send
 * or the phase's end), then read every ready socket until it has nothing more.
 */
static void wait_and_receive(uint64_t until_ns, struct stats *st) {
    static char bufs[BATCH][RECV_MAX];
    static struct mmsghdr msgs[BATCH];
    static struct iovec iovs[BATCH];
    struct epoll_event evs[MAX_SOCKETS];
    uint64_t now = now_ns();
    uint64_t deadline = next_deadline();
    if (until_ns < deadline) deadline = until_ns;
    int ms = 0;
    if (deadline > now) {
        uint64_t wait = (deadline - now + 999999u) / 1000000u;
        ms = wait > 1000 ? 1000 : (int)wait;
    }
    int n = epoll_wait(epfd, evs, MAX_SOCKETS, ms);
    for (int e = 0; e < n; e++) {
        struct sock *s = &socks[evs[e].data.u32];
        for (;;) {
            for (int i = 0; i < BATCH; i++) {
                iovs[i].iov_base = bufs[i];
                iovs[i].iov_len = RECV_MAX;
                memset(&msgs[i].msg_hdr, 0, sizeof msgs[i].msg_hdr);
                msgs[i].msg_hdr.msg_iov = &iovs[i];
                msgs[i].msg_hdr.msg_iovlen = 1;
            }
            int got = recvmmsg(s->fd, msgs, BATCH, MSG_DONTWAIT, NULL);
            if (got <= 0) break;
            uint64_t t = now_ns();
            for (int i = 0; i < got; i++) handle_response(bufs[i], msgs[i].msg_len, st, t);
            if (got < BATCH) break;
        }
    }
}

/* ---- phases ---- */

struct phase {
    const char *name;
    int measured_refresh; /* re-register users in turn; else each user once */
    unsigned long requests;
    double duration;
    double rate;
};

static void run_phase(const struct phase *ph, struct stats *st) {
    memset(st, 0, sizeof *st);
    double user0, sys0;
    cpu_now(&user0, &sys0);
    uint64_t start = now_ns();
    uint64_t stop_starting = start + (uint64_t)(ph->duration * 1e9);
    /* After the last start, what is in progress gets its whole retransmission time. */
    uint64_t drain = 0;
    for (unsigned long t = 0; t < opt.tries; t++) drain += timeout_ns(t < LEVELS ? t : LEVELS - 1);
    uint64_t hard_stop = stop_starting + drain + 100000000u;
    double interval_ns = ph->rate > 0 ? 1e9 / ph->rate : 0;
    double next_due = (double)start;
    unsigned long cursor = 0, started = 0;
    st->start_ns = start;
    st->last_ns = start;
    for (;;) {
        uint64_t now = now_ns();
        fire_timers(st, now);
        int may_start = !interrupted && now < stop_starting && started < ph->requests;
        while (may_start && outstanding < opt.window) {
            if (interval_ns > 0 && (double)now < next_due) break;
            uint32_t idx = UINT32_MAX;
            if (!ph->measured_refresh) {
                idx = (uint32_t)cursor++;
            } else {
                for (unsigned long k = 0; k < opt.users; k++) {
                    uint32_t c = (uint32_t)(cursor++ % opt.users);
                    if (users[c].state == IDLE) {
                        idx = c;
                        break;
                    }
                }
                if (idx == UINT32_MAX) break; /* every user busy: wait */
            }
            start_request(idx, st, now);
            started++;
            if (interval_ns > 0) next_due += interval_ns;
            may_start = started < ph->requests;
        }
        flush_all(st);
        if (outstanding == 0 && (!may_start || interrupted)) break;
        if (now >= hard_stop || (interrupted && now >= stop_starting)) break;
        uint64_t wake = hard_stop;
        if (may_start && interval_ns > 0 && outstanding < opt.window && next_due < (double)wake)
            wake = (uint64_t)next_due;
        if (may_start && now < stop_starting && stop_starting < wake) wake = stop_starting;
        wait_and_receive(wake, st);
        flush_all(st);
        if (interrupted) stop_starting = now;
    }
    /* What is still in progress failed: abandon it (its late answers are strays). */
    for (unsigned long i = 0; i < opt.users && outstanding; i++) {
        if (users[i].state == BUSY) {
            users[i].state = IDLE;
            users[i].gen++;
            outstanding--;
            st->unfinished++;
        }
    }
    for (unsigned level = 0; level < LEVELS; level++) timers[level].len = 0;
    cpu_now(&st->cpu_user_s, &st->cpu_sys_s);
    st->cpu_user_s -= user0;
    st->cpu_sys_s -= sys0;
}

static int cmp_u32(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

static double pct_ms(const struct stats *st, double q) {
    if (st->lat_len == 0) return 0;
    size_t rank = (size_t)(q * (double)st->lat_len + 0.999999);
    if (rank < 1) rank = 1;
    if (rank > st->lat_len) rank = st->lat_len;
    return st->lat_us[rank - 1] / 1000.0;
}

static void print_stats(FILE *out, const char *name, struct stats *st) {
    double elapsed = (double)(st->last_ns - st->start_ns) / 1e9;
    uint64_t failures = st->non2xx + st->timeouts + st->unfinished;
    qsort(st->lat_us, st->lat_len, sizeof *st->lat_us, cmp_u32);
    fprintf(out, "\"%s\":{\"requests\":%lu,\"sent\":%lu,\"answered\":%lu,\"ok\":%lu,"
           "\"failures\":%lu,\"non2xx\":%lu,\"timeouts\":%lu,\"unfinished\":%lu,"
           "\"retransmissions\":%lu,\"responses\":%lu,\"strays\":%lu,\"challenges\":%lu,"
           "\"stale\":%lu,\"send_errors\":%lu,\"elapsed_s\":%.6f,\"rate\":%.1f,"
           "\"cpu_user_s\":%.4f,\"cpu_sys_s\":%.4f,\"cpu_us_per_request\":%.3f,\"status\":{",
           name, (unsigned long)st->requests, (unsigned long)st->sent,
           (unsigned long)st->answered, (unsigned long)st->ok, (unsigned long)failures,
           (unsigned long)st->non2xx, (unsigned long)st->timeouts,
           (unsigned long)st->unfinished, (unsigned long)st->retransmissions,
           (unsigned long)st->responses, (unsigned long)st->strays,
           (unsigned long)st->challenges, (unsigned long)st->stale,
           (unsigned long)st->send_errors, elapsed, elapsed > 0 ? st->answered / elapsed : 0.0,
           st->cpu_user_s, st->cpu_sys_s,
           st->requests ? (st->cpu_user_s + st->cpu_sys_s) * 1e6 / (double)st->requests : 0.0);
    int first = 1;
    for (int code = 100; code < 700; code++) {
        if (!st->status[code]) continue;
        fprintf(out, "%s\"%d\":%lu", first ? "" : ",", code, (unsigned long)st->status[code]);
        first = 0;
    }
    fprintf(out, "},\"latency_ms\":{\"p50\":%.3f,\"p90\":%.3f,\"p99\":%.3f,\"max\":%.3f}}",
           pct_ms(st, 0.50), pct_ms(st, 0.90), pct_ms(st, 0.99), pct_ms(st, 1.0));
}

/* ---- set-up ---- */

/* Add target HOST:PORT. */
static void parse_target(const char *spec) {
    char host[256];
    if (opt.ntargets == MAX_TARGETS) usage_error("--target at most %d times", MAX_TARGETS);
    struct sockaddr_in *target = &opt.targets[opt.ntargets++];
    const char *colon = strrchr(spec, ':');
    if (colon == NULL || (size_t)(colon - spec) >= sizeof host)
        usage_error("--target must be HOST:PORT");
    memcpy(host, spec, (size_t)(colon - spec));
    host[colon - spec] = '\0';
    if (strcmp(host, "localhost") == 0) strcpy(host, "127.0.0.1");
    char *endp;
    long port = strtol(colon + 1, &endp, 10);
    if (*endp || port < 1 || port > 65535) usage_error("bad port in --target %s", spec);
    memset(target, 0, sizeof *target);
    target->sin_family = AF_INET;
    target->sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, host, &target->sin_addr) != 1)
        usage_error("--target host must be an IPv4 address on 127.0.0.0/8, not %s", host);
    if ((ntohl(target->sin_addr.s_addr) >> 24) != 127)
        usage_error("refusing %s: only loopback (127.0.0.0/8) targets", host);
}

static void open_sockets(void) {
    epfd = epoll_create1(0);
    if (epfd < 0) die("epoll_create1: %s", strerror(errno));
    for (unsigned long i = 0; i < opt.sockets; i++) {
        struct sock *s = &socks[i];
        struct sockaddr_in local = {.sin_family = AF_INET};
        socklen_t len = sizeof local;
        int size = 4 << 20;
        local.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        s->fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (s->fd < 0) die("socket: %s", strerror(errno));
        setsockopt(s->fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
        setsockopt(s->fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
        if (bind(s->fd, (struct sockaddr *)&local, sizeof local) < 0)
            die("bind 127.0.0.1: %s", strerror(errno));
        const struct sockaddr_in *target = &opt.targets[i % opt.ntargets];
        if (connect(s->fd, (struct sockaddr *)target, sizeof *target) < 0)
            die("connect: %s", strerror(errno));
        getsockname(s->fd, (struct sockaddr *)&local, &len);
        s->port = ntohs(local.sin_port);
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
        if (epoll_ctl(epfd, EPOLL_CTL_ADD, s->fd, &ev) < 0) die("epoll_ctl: %s", strerror(errno));
        char buf[1024];
        int n = snprintf(buf, sizeof buf,
                         "REGISTER %s SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:%d;rport;"
                         "branch=z9hG4bK-%s-",
                         request_uri, s->port, opt.tag);
        s->head = strdup(buf);
        s->head_len = (size_t)n;
        n = snprintf(buf, sizeof buf, "@127.0.0.1:%d>\r\nExpires: %lu\r\nUser-Agent: %s\r\n",
                     s->port, opt.expires, opt.user_agent);
        s->tail = strdup(buf);
        s->tail_len = (size_t)n;
        s->out_buf = xcalloc(BATCH, MSG_MAX);
        for (int k = 0; k < BATCH; k++) {
            s->out[k].msg_hdr.msg_iov = &s->out_iov[k];
            s->out[k].msg_hdr.msg_iovlen = 1;
        }
    }
}

static void build_pieces(void) {
    snprintf(request_uri, sizeof request_uri, "sip:%s", opt.domain);
#define PIECE(var, ...) var##_len = (size_t)snprintf(var, sizeof var, __VA_ARGS__)
    PIECE(mid1, "\r\nMax-Forwards: 70\r\nFrom: <sip:%s", opt.prefix);
    PIECE(mid2, "@%s>;tag=f", opt.domain);
    PIECE(mid3, "\r\nTo: <sip:%s", opt.prefix);
    PIECE(mid4, "@%s>\r\nCall-ID: ", opt.domain);
    PIECE(mid5, "-%s@127.0.0.1\r\nCSeq: ", opt.tag);
    PIECE(mid6, " REGISTER\r\nContact: <sip:%s", opt.prefix);
#undef PIECE
    char a2[400];
    int n = snprintf(a2, sizeof a2, "REGISTER:%s", request_uri);
    digest_hex(ALG_MD5, ha2_hex[ALG_MD5 - 1], a2, (size_t)n, (char *)NULL);
    digest_hex(ALG_SHA256, ha2_hex[ALG_SHA256 - 1], a2, (size_t)n, (char *)NULL);
}

static void on_signal(int sig) {
    (void)sig;
    interrupted = 1;
}

static const char help[] =
    "usage: sipload --target 127.0.0.1:PORT [--target 127.0.0.1:PORT2 ...] [options]\n"
    "  --users N            distinct users (10000)\n"
    "  --first-user K       number of the first user (0): users PREFIX<K>..PREFIX<K+N-1>\n"
    "  --window W           requests in progress at most (64)\n"
    "  --mode initial|refresh\n"
    "  --requests R         measured requests at most (initial: N; refresh: N)\n"
    "  --duration S         seconds to start measured requests in, at most (60)\n"
    "  --warmup-duration S  the same bound for refresh mode's first registrations (600)\n"
    "  --rate R             requests a second (paced, still capped by the window); 0: closed loop\n"
    "  --expires E          Expires header (300)\n"
    "  --domain D           (example.com)\n"
    "  --user-prefix P      user names P<n> (user)\n"
    "  --password PW        answer 401s with Digest credentials for P<n> and PW\n"
    "  --algorithm A        MD5 (default) or SHA-256: the challenge to pick when both come\n"
    "  --sockets K          local UDP ports the users share (4), a multiple of the targets\n"
    "  --timeout-ms T       first retransmission after T ms (T1), doubling (500)\n"
    "  --t2-ms T            ... up to T ms between sends (T2, 4000)\n"
    "  --tries N            sends of one request at most (3)\n"
    "  --jitter PCT         each timer up to PCT %% longer, at random (10)\n"
    "  --tag T              run tag in Call-IDs and branches (random)\n"
    "  --user-agent UA      (sipload)\n"
    "  --show-failures N    print the first N failed requests on stderr (0)\n"
    "  --pause              refresh: after the warm-up print {\"warmup_done\":true} and wait\n"
    "                       for a line on stdin before measuring\n";

static unsigned long parse_count(const char *name, const char *v, unsigned long lo,
                                 unsigned long hi) {
    char *end;
    errno = 0;
    unsigned long n = strtoul(v, &end, 10);
    if (errno || *end || v[0] == '-' || n < lo || n > hi)
        usage_error("%s must be an integer from %lu to %lu, not %s", name, lo, hi, v);
    return n;
}

static double parse_seconds(const char *name, const char *v, double hi) {
    char *end;
    double d = strtod(v, &end);
    if (*end || !(d >= 0) || d > hi) usage_error("%s must be from 0 to %g, not %s", name, hi, v);
    return d;
}

int main(int argc, char **argv) {
    static const struct option longs[] = {
        {"target", required_argument, 0, 't'},       {"users", required_argument, 0, 'n'},
        {"first-user", required_argument, 0, 'F'},   {"window", required_argument, 0, 'w'},
        {"mode", required_argument, 0, 'm'},         {"requests", required_argument, 0, 'r'},
        {"duration", required_argument, 0, 'd'},     {"warmup-duration", required_argument, 0, 'W'},
        {"rate", required_argument, 0, 'R'},         {"expires", required_argument, 0, 'e'},
        {"domain", required_argument, 0, 'D'},       {"user-prefix", required_argument, 0, 'p'},
        {"password", required_argument, 0, 'P'},     {"algorithm", required_argument, 0, 'a'},
        {"sockets", required_argument, 0, 's'},      {"timeout-ms", required_argument, 0, 'T'},
        {"tries", required_argument, 0, 'k'},        {"tag", required_argument, 0, 'g'},
        {"user-agent", required_argument, 0, 'u'},   {"help", no_argument, 0, 'h'},
        {"t2-ms", required_argument, 0, '2'},        {"pause", no_argument, 0, 'z'},
        {"show-failures", required_argument, 0, 'f'},
        {"jitter", required_argument, 0, 'j'},
        {0, 0, 0, 0},
    };
    char tag[32];
    long requests = -1;
    opt.users = 10000;
    opt.window = 64;
    opt.mode = "initial";
    opt.duration = 60;
    opt.warmup_duration = 600;
    opt.expires = 300;
    opt.domain = "example.com";
    opt.prefix = "user";
    opt.sockets = 4;
    opt.timeout_ms = 500;
    opt.t2_ms = 4000;
    opt.jitter = 0.1;
    opt.tries = 3;
    opt.user_agent = "sipload";
    opt.alg_pref = ALG_MD5;
    snprintf(tag, sizeof tag, "%lx%lx", (unsigned long)getpid(), (unsigned long)now_ns() & 0xffffff);
    opt.tag = tag;
    int c;
    while ((c = getopt_long(argc, argv, "", longs, NULL)) != -1) {
        switch (c) {
        case 't': parse_target(optarg); break;
        case 'n': opt.users = parse_count("--users", optarg, 1, 50000000); break;
        case 'F': opt.first = parse_count("--first-user", optarg, 0, 1000000000); break;
        case 'w': opt.window = parse_count("--window", optarg, 1, 100000); break;
        case 'm': opt.mode = optarg; break;
        case 'r': requests = (long)parse_count("--requests", optarg, 1, 1000000000); break;
        case 'd': opt.duration = parse_seconds("--duration", optarg, 86400); break;
        case 'W': opt.warmup_duration = parse_seconds("--warmup-duration", optarg, 86400); break;
        case 'R': opt.rate = parse_seconds("--rate", optarg, 1e7); break;
        case 'e': opt.expires = parse_count("--expires", optarg, 0, 100000000); break;
        case 'D': opt.domain = optarg; break;
        case 'p': opt.prefix = optarg; break;
        case 'P': opt.password = optarg; break;
        case 'a':
            if (strcasecmp(optarg, "MD5") == 0) opt.alg_pref = ALG_MD5;
            else if (strcasecmp(optarg, "SHA-256") == 0) opt.alg_pref = ALG_SHA256;
            else usage_error("--algorithm is MD5 or SHA-256");
            break;
        case 's': opt.sockets = parse_count("--sockets", optarg, 1, MAX_SOCKETS); break;
        case 'T': opt.timeout_ms = parse_count("--timeout-ms", optarg, 1, 60000); break;
        case '2': opt.t2_ms = parse_count("--t2-ms", optarg, 1, 600000); break;
        case 'z': opt.pause = 1; break;
        case 'j': opt.jitter = parse_seconds("--jitter", optarg, 100) / 100; break;
        case 'f': opt.show_failures = parse_count("--show-failures", optarg, 0, 1000000); break;
        case 'k': opt.tries = parse_count("--tries", optarg, 1, 20); break;
        case 'g': opt.tag = optarg; break;
        case 'u': opt.user_agent = optarg; break;
        case 'h': fputs(help, stdout); return 0;
        default: usage_error("unknown option");
        }
    }
    if (optind < argc) usage_error("unexpected argument %s", argv[optind]);
    if (opt.ntargets == 0) usage_error("--target is required");
    if (opt.sockets % opt.ntargets != 0)
        usage_error("--sockets %lu is not a multiple of the %lu targets", opt.sockets,
                    opt.ntargets);
    if (strcmp(opt.mode, "initial") == 0) opt.refresh = 0;
    else if (strcmp(opt.mode, "refresh") == 0) opt.refresh = 1;
    else usage_error("--mode is initial or refresh");
    if (strlen(opt.domain) > 200 || strlen(opt.prefix) > 100 || strlen(opt.tag) > 30 ||
        strlen(opt.user_agent) > 100 || (opt.password && strlen(opt.password) > 200))
        usage_error("an option is too long");
    if (strpbrk(opt.tag, "-@ \t\r\n")) usage_error("--tag may not hold '-', '@' or spaces");
    opt.requests = requests > 0 ? (unsigned long)requests : opt.users;
    if (!opt.refresh && opt.requests > opt.users) opt.requests = opt.users;

    struct sched_param batch = {.sched_priority = 0};
    if (sched_setscheduler(0, SCHED_BATCH, &batch) != 0)
        fprintf(stderr, "sipload: SCHED_BATCH refused (%s); running as a normal task\n",
                strerror(errno));
    md_ctx = EVP_MD_CTX_new();
    if (md_ctx == NULL) die("EVP_MD_CTX_new failed");
    users = xcalloc(opt.users, sizeof *users);
    if (opt.password) nonces = xcalloc(opt.users, NONCE_MAX);
    build_pieces();
    open_sockets();
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);

    static struct stats warm, measured;
    char *json = NULL;
    size_t json_len = 0;
    FILE *out = open_memstream(&json, &json_len);
    if (out == NULL) die("open_memstream: %s", strerror(errno));
    fprintf(out, "{\"mode\":\"%s\",\"users\":%lu,\"first_user\":%lu,\"window\":%lu,\"rate_target\":%.1f,"
           "\"sockets\":%lu,\"targets\":%lu,\"tag\":\"%s\",\"auth\":%s,",
           opt.mode, opt.users, opt.first, opt.window, opt.rate, opt.sockets, opt.ntargets,
           opt.tag, opt.password ? "true" : "false");
    if (opt.refresh) {
        struct phase w = {"warmup", 0, opt.users, opt.warmup_duration, 0};
        run_phase(&w, &warm);
        print_stats(out, "warmup", &warm);
        fputc(',', out);
        if (warm.ok < opt.users) {
            /* Users that never registered cannot refresh: measure those that did. */
            fprintf(stderr, "sipload: %lu of %lu users did not register in the warm-up\n",
                    (unsigned long)(opt.users - warm.ok), opt.users);
        }
        if (opt.pause) {
            /* Let the caller read the server's CPU between the phases. */
            char line[64];
            fflush(out);
            printf("{\"warmup_done\":true}\n");
            fflush(stdout);
            if (fgets(line, sizeof line, stdin) == NULL) die("--pause: stdin closed");
        }
    }
    struct phase m = {"measured", opt.refresh, opt.requests, opt.duration, opt.rate};
    run_phase(&m, &measured);
    print_stats(out, "measured", &measured);
    fputs("}\n", out);
    fclose(out);
    fwrite(json, 1, json_len, stdout);
    fflush(stdout);
    free(json);
    return 0;
}
