/*
 * api.c — authentication, routing, body collection, replies, and the parking of long polls
 * and event streams (api.h).  Validation lives in request.c, state changes on the engine
 * thread (engine.c); single-job reads are served here under rcu_read_lock().
 */
#include "api.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>
#include <urcu/list.h>

#include "alloc.h"
#include "heap.h"
#include "hodei_clock.h"
#include "json.h"
#include "limits.h"
#include "log.h"

#define SSE_KEEPALIVE_S   15.0
#define SSE_SNDBUF        (64 * 1024)   /* bytes the kernel holds for one event stream */
#define SHUTDOWN_GRACE_MS 1000
#define LONG_POLL_MAX_S   30
#define IP_BUCKETS        1024
#define LOG_EVERY_MS      10000         /* one log line at most per this, per kind of refusal */

/* ---- types ------------------------------------------------------------------------------ */

/*
 * A connection that waits for something (a long poll, an event stream with nothing to send)
 * is parked: suspended in libmicrohttpd, in the deadline heap, and resumed exactly once by
 * whichever comes first — what it waits for (wake), its deadline, the client hanging up, or
 * shutdown.  All of it under api.park_lock, so a wake can never resume a connection twice or
 * one that is not suspended; a wake that comes while the connection is not parked is kept
 * (wake_pending) and makes its next park return at once.
 */
struct park {
    struct MHD_Connection *conn;
    int    parked;           /* suspended; the next wake resumes it */
    int    wake_pending;     /* woken while not parked */
    int    gone;             /* the client hung up (streams) */
    int    dead;             /* its stream ended: the watcher frees it */
    double deadline;         /* monotonic s, while parked */
    size_t heap_slot;
    struct cds_list_head poll_link;   /* api.polls, while a parked long poll */
    struct park *next_dead;
};

/* Open connections of one client address (trusted proxies are not counted). */
struct ip_count {
    in_addr_t addr;
    unsigned  n;
    struct ip_count *next;
};

struct api {
    struct MHD_Daemon *mhd;
    struct engine *engine;
    struct bus *bus;
    struct auth *auth;             /* NULL: --insecure-no-auth */
    const struct config *cfg;
    atomic_int stopping;
    atomic_uint streams;           /* open event streams */
    atomic_uint_fast64_t assign_gen;   /* bumped by every placement: long polls re-check */
    /* per-IP connection counts */
    pthread_mutex_t ip_lock;
    struct ip_count *ips[IP_BUCKETS];
    uint64_t refused;              /* connections refused over the per-IP limit */
    _Atomic int64_t refused_logged;     /* monotonic ms of the last log line about them */
    atomic_uint_fast64_t auth_refused;  /* requests refused 401/403 */
    _Atomic int64_t auth_logged;
    /* parking */
    pthread_mutex_t park_lock;
    struct heap deadlines;         /* parked connections by deadline */
    struct cds_list_head polls;    /* parked long polls */
    struct park *graveyard;        /* ended streams, freed by the watcher */
    int watch_epfd, watch_kick;    /* epoll set of streams' sockets; eventfd to wake it */
    int watch_stop;
    pthread_t watcher;
};

/* Per request. */
struct request {
    char  *body;
    size_t len;
    int    too_large;
    int    authenticated;
    enum hodei_auth_failure auth_failure;    /* when not authenticated */
    char   token_id[TOKEN_ID_LEN + 1];       /* of the token it sent, when it parsed */
    struct principal who;
    /* a long poll in progress */
    int    polling;
    double poll_until;
    char   poll_worker[HODEI_ID_MAX + 1];
    struct park park;
};

/* An event stream: the response's reader state. */
struct sse {
    struct api *api;
    struct bus_sub *sub;
    int    fd;
    char  *out;              /* formatted, not yet sent */
    size_t len, off;
    double keepalive_at;     /* monotonic s */
    struct park park;        /* the watcher frees the struct sse through it */
};

/* ---- log lines a flood cannot multiply ------------------------------------------------ */

/* 1 when a line may be written now: at most one per LOG_EVERY_MS for *last. */
static int log_due(_Atomic int64_t *last)
{
    int64_t now = hodei_mono_ms(), was = atomic_load(last);
    return (was == 0 || now - was >= LOG_EVERY_MS)
           && atomic_compare_exchange_strong(last, &was, now);
}

static void client_text(struct MHD_Connection *conn, char *buf, size_t len)
{
    const union MHD_ConnectionInfo *info =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    char ip[INET_ADDRSTRLEN] = "?";
    if (info && info->client_addr->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *) info->client_addr)->sin_addr, ip,
                  sizeof ip);
    const char *fwd = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "X-Forwarded-For");
    snprintf(buf, len, "%s%s%.64s%s", ip, fwd ? " (for " : "", fwd ? fwd : "", fwd ? ")" : "");
    for (char *c = buf; *c; c++)   /* a header is the client's: nothing that could forge a line */
        if (*c < 0x20 || *c == 0x7f)
            *c = '?';
}

/* Says who was refused, with how many refusals went unlogged since the last line. */
static void log_refusal(struct api *api, struct MHD_Connection *conn, unsigned status,
                        enum hodei_auth_failure why, const char *token_id)
{
    uint64_t n = atomic_fetch_add(&api->auth_refused, 1) + 1;
    if (!log_due(&api->auth_logged))
        return;
    static _Atomic uint64_t logged;
    uint64_t before = atomic_exchange(&logged, n);
    char who[160];
    client_text(conn, who, sizeof who);
    log_info("refused %u (%s) from %s%s%s; %llu refusals since the last such line", status,
             hodei_auth_failure_names[why], who, token_id[0] ? " with token " : "", token_id,
             (unsigned long long) (n - before));
}

/* ---- replies ---------------------------------------------------------------------------- */

static struct MHD_Response *json_response(json_t *body)
{
    char *text = must(json_dumps(body, JSON_COMPACT));
    json_decref(body);
    struct MHD_Response *r = must(MHD_create_response_from_buffer(strlen(text), text,
                                                                  MHD_RESPMEM_MUST_FREE));
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    return r;
}

static enum MHD_Result queue(struct MHD_Connection *conn, unsigned status, struct MHD_Response *r)
{
    enum MHD_Result ret = MHD_queue_response(conn, status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result reply(struct MHD_Connection *conn, unsigned status, json_t *body)
{
    return queue(conn, status, json_response(body));
}

static enum MHD_Result reply_error(struct MHD_Connection *conn, unsigned status,
                                   const char *code, const char *detail)
{
    return reply(conn, status, error_json(code, detail));
}

/* 401: no usable token.  The connection is closed after it: a client without credentials
 * gets nothing more from it. */
static enum MHD_Result refuse_401(struct api *api, struct MHD_Connection *conn,
                                  enum hodei_auth_failure why, const char *token_id)
{
    static const char *const detail[HODEI_AUTH_COUNT] = {
        [HODEI_AUTH_MISSING] = "send Authorization: Bearer <token>",
        [HODEI_AUTH_MALFORMED] = "the Authorization header does not carry a Hodei token",
        [HODEI_AUTH_UNKNOWN] = "the token is not valid (unknown, revoked, or its worker was "
                               "removed)",
        [HODEI_AUTH_BAD_SECRET] = "the token is not valid (unknown, revoked, or its worker was "
                                  "removed)",
    };
    sched_count_auth_failure(&api->engine->sched, why);
    log_refusal(api, conn, 401, why, token_id);
    struct MHD_Response *r = json_response(error_json("unauthorized", detail[why]));
    MHD_add_response_header(r, MHD_HTTP_HEADER_WWW_AUTHENTICATE,
                            why == HODEI_AUTH_MISSING ? "Bearer realm=\"hodei\""
                            : "Bearer realm=\"hodei\", error=\"invalid_token\"");
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONNECTION, "close");
    return queue(conn, 401, r);
}

static enum MHD_Result refuse_403(struct api *api, struct MHD_Connection *conn,
                                  const struct principal *who, const char *detail)
{
    sched_count_auth_failure(&api->engine->sched, HODEI_AUTH_FORBIDDEN);
    log_refusal(api, conn, 403, HODEI_AUTH_FORBIDDEN, who->token_id);
    return reply_error(conn, 403, "forbidden", detail);
}

/* The HTTP answer to an engine result that is not SCHED_OK. */
static enum MHD_Result reply_refusal(struct MHD_Connection *conn, const struct cmd *c,
                                     const char *what)
{
    char detail[200];
    switch (c->rc) {
    case SCHED_NOT_FOUND:
        snprintf(detail, sizeof detail, "no such %s", what);
        return reply_error(conn, 404, "not_found", detail);
    case SCHED_CONFLICT:
        if (c->type == CMD_REGISTER)
            return reply_error(conn, 409, "duplicate_worker",
                               "a worker with this id is registered");
        snprintf(detail, sizeof detail, "%s", c->detail[0] ? c->detail
                 : "the resource is not in a state that allows this");
        return reply_error(conn, 409, "conflict", detail);
    case SCHED_TENANT_FULL:
        return reply_error(conn, 429, "tenant_queue_full",
                           "this tenant has its maximum of unfinished jobs");
    case SCHED_FULL:
    default:
        if (c->type == CMD_REGISTER)
            return reply_error(conn, 429, "worker_cap",
                               "the maximum number of workers is registered");
        return reply_error(conn, 429, "queue_full",
                           "the queue holds its maximum of unfinished jobs");
    }
}

/* Runs c and answers: ok_status with its object, or the refusal. */
static enum MHD_Result run(struct api *api, struct MHD_Connection *conn, struct cmd *c,
                           unsigned ok_status, const char *what)
{
    engine_call(api->engine, c);
    if (c->rc != SCHED_OK)
        return reply_refusal(conn, c, what);
    return reply(conn, ok_status, c->object);
}

/* ---- connections per client address ----------------------------------------------------- */

static int trusted(const struct api *api, in_addr_t a)
{
    for (unsigned i = 0; i < api->cfg->ntrusted; i++)
        if (api->cfg->trusted_proxies[i].s_addr == a)
            return 1;
    return 0;
}

static struct ip_count **ip_slot(struct api *api, in_addr_t a)
{
    struct ip_count **p = &api->ips[(a * 2654435761u) % IP_BUCKETS];
    while (*p && (*p)->addr != a)
        p = &(*p)->next;
    return p;
}

static in_addr_t client_addr(const struct sockaddr *sa, int *ok)
{
    *ok = sa && sa->sa_family == AF_INET;
    return *ok ? ((const struct sockaddr_in *) sa)->sin_addr.s_addr : 0;
}

/* Accept policy: a client address already at its limit gets no new connection.  A check, not
 * a reservation (the count moves in on_connection), so concurrent accepts of one address may
 * pass the limit by the number of pool threads at most. */
static enum MHD_Result accept_policy(void *cls, const struct sockaddr *sa, socklen_t len)
{
    struct api *api = cls;
    int ok;
    in_addr_t a = client_addr(sa, &ok);
    if (!ok || trusted(api, a))
        return MHD_YES;
    pthread_mutex_lock(&api->ip_lock);
    struct ip_count *c = *ip_slot(api, a);
    int allowed = !c || c->n < api->cfg->max_connections_per_ip;
    if (!allowed && (++api->refused, log_due(&api->refused_logged))) {
        char ip[INET_ADDRSTRLEN];
        inet_ntop(AF_INET, &a, ip, sizeof ip);
        log_warn("%llu connections refused so far over the limit of %u per client address "
                 "(the last from %s)", (unsigned long long) api->refused,
                 api->cfg->max_connections_per_ip, ip);
    }
    pthread_mutex_unlock(&api->ip_lock);
    return allowed ? MHD_YES : MHD_NO;
}

static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                          enum MHD_ConnectionNotificationCode code)
{
    struct api *api = cls;
    const union MHD_ConnectionInfo *info =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    int ok;
    in_addr_t a = client_addr(info ? info->client_addr : NULL, &ok);
    if (!ok || trusted(api, a))
        return;
    pthread_mutex_lock(&api->ip_lock);
    struct ip_count **slot = ip_slot(api, a);
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        if (!*slot) {
            *slot = xcalloc(1, sizeof **slot);
            (*slot)->addr = a;
        }
        (*slot)->n++;
        *socket_context = *slot;
    } else if (*socket_context) {
        struct ip_count *c = *slot;
        if (--c->n == 0) {
            *slot = c->next;
            free(c);
        }
        *socket_context = NULL;
    }
    pthread_mutex_unlock(&api->ip_lock);
}

/* ---- parking -------------------------------------------------------------------------- */

static int deadline_less(const void *a, const void *b)
{
    return ((const struct park *) a)->deadline < ((const struct park *) b)->deadline;
}

static void kick_watcher(struct api *api)
{
    uint64_t one = 1;
    if (write(api->watch_kick, &one, sizeof one) < 0) {
        /* the counter is already non-zero: the watcher wakes anyway */
    }
}

/* Suspends p's connection until deadline or a wake; 0 (nothing suspended) when a wake came
 * first, the client left or the server stops.  From the connection's own handler or reader.
 * gen: the assign_gen a long poll read before it looked (0 for streams). */
static int park(struct api *api, struct park *p, double deadline, int is_poll, uint64_t gen)
{
    pthread_mutex_lock(&api->park_lock);
    if (p->wake_pending || p->gone || atomic_load(&api->stopping)
        || (is_poll && atomic_load(&api->assign_gen) != gen)) {
        p->wake_pending = 0;
        pthread_mutex_unlock(&api->park_lock);
        return 0;
    }
    MHD_suspend_connection(p->conn);
    p->parked = 1;
    p->deadline = deadline;
    heap_push(&api->deadlines, p);
    if (is_poll)
        cds_list_add(&p->poll_link, &api->polls);
    if (heap_top(&api->deadlines) == p)
        kick_watcher(api);   /* its wait may now be too long */
    pthread_mutex_unlock(&api->park_lock);
    return 1;
}

/* Resumes p if parked, else remembers the wake; park_lock held. */
static void wake_locked(struct api *api, struct park *p)
{
    if (!p->parked) {
        p->wake_pending = 1;
        return;
    }
    p->parked = 0;
    heap_remove(&api->deadlines, p);
    if (p->poll_link.next) {
        cds_list_del(&p->poll_link);
        p->poll_link.next = p->poll_link.prev = NULL;
    }
    MHD_resume_connection(p->conn);
}

static void wake(struct api *api, struct park *p)
{
    pthread_mutex_lock(&api->park_lock);
    wake_locked(api, p);
    pthread_mutex_unlock(&api->park_lock);
}

/* The engine placed a job: parked long polls look again (engine side, under its state lock). */
static void on_assign(void *ctx, const char *worker_id)
{
    struct api *api = ctx;
    atomic_fetch_add(&api->assign_gen, 1);
    pthread_mutex_lock(&api->park_lock);
    struct park *p, *tmp;
    cds_list_for_each_entry_safe(p, tmp, &api->polls, poll_link) {
        struct request *rq = caa_container_of(p, struct request, park);
        if (strcmp(rq->poll_worker, worker_id) == 0)
            wake_locked(api, p);
    }
    pthread_mutex_unlock(&api->park_lock);
}

/* Resumes parked connections at their deadlines, notices stream clients that hang up, and
 * frees ended streams once no event of its own can point at them any more. */
static void *watcher_main(void *arg)
{
    struct api *api = arg;
    struct epoll_event ev[64];
    pthread_mutex_lock(&api->park_lock);
    for (;;) {
        while (api->graveyard) {
            struct park *p = api->graveyard;
            api->graveyard = p->next_dead;
            free(caa_container_of(p, struct sse, park));
        }
        if (api->watch_stop)
            break;
        int timeout = -1;
        struct park *top = heap_top(&api->deadlines);
        if (top) {
            double left = top->deadline - hodei_mono();
            timeout = left <= 0 ? 0 : (int) (left * 1000) + 1;
        }
        pthread_mutex_unlock(&api->park_lock);
        int n = epoll_wait(api->watch_epfd, ev, 64, timeout);
        pthread_mutex_lock(&api->park_lock);
        for (int i = 0; i < n; i++) {
            struct park *p = ev[i].data.ptr;
            if (!p) {
                uint64_t count;
                if (read(api->watch_kick, &count, sizeof count) < 0) {
                    /* nothing to read: another wake consumed it */
                }
                continue;
            }
            if (!p->dead) {
                p->gone = 1;
                wake_locked(api, p);
            }
        }
        double now = hodei_mono();
        struct park *p;
        while ((p = heap_top(&api->deadlines)) && p->deadline <= now)
            wake_locked(api, p);
    }
    pthread_mutex_unlock(&api->park_lock);
    return NULL;
}

/* ---- authentication ----------------------------------------------------------------------- */

/* Who sent the request: 0 with rq->who, or -1 with rq->auth_failure (and rq->token_id when
 * the token parsed). */
static int authenticate(struct api *api, struct MHD_Connection *conn, struct request *rq)
{
    struct principal *who = &rq->who;
    memset(who, 0, sizeof *who);
    if (!api->auth) {
        who->kind = PRINCIPAL_ADMIN;
        return 0;
    }
    const char *h = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                                MHD_HTTP_HEADER_AUTHORIZATION);
    if (!h) {
        rq->auth_failure = HODEI_AUTH_MISSING;
        return -1;
    }
    struct token t;
    if (strncasecmp(h, "Bearer ", 7) != 0 || token_parse(h + 7, strlen(h + 7), &t) < 0) {
        rq->auth_failure = HODEI_AUTH_MALFORMED;
        return -1;
    }
    memcpy(rq->token_id, t.id, sizeof rq->token_id);
    if (t.kind == TOKEN_FILE)
        return auth_check(api->auth, &t, who, &rq->auth_failure);
    unsigned char hash[TOKEN_HASH_LEN];
    token_hash(t.secret, t.secret_len, hash);
    int rc = -1;
    rcu_read_lock();
    const struct worker *w = sched_session(&api->engine->sched, t.id);
    if (!w) {
        rq->auth_failure = HODEI_AUTH_UNKNOWN;
    } else if (!token_hash_equal(hash, w->session.hash)) {
        rq->auth_failure = HODEI_AUTH_BAD_SECRET;
    } else {
        who->kind = PRINCIPAL_SESSION;
        memcpy(who->token_id, t.id, sizeof who->token_id);
        memcpy(who->worker, w->id, sizeof who->worker);
        rc = 0;
    }
    rcu_read_unlock();
    return rc;
}

/* Principal kinds as a set; admins may do everything. */
#define MAY_TENANT  (1u << PRINCIPAL_TENANT)
#define MAY_WORKER  (1u << PRINCIPAL_WORKER)
#define MAY_SESSION (1u << PRINCIPAL_SESSION)

static const char *const kind_names[] = {
    [PRINCIPAL_TENANT] = "a tenant token", [PRINCIPAL_WORKER] = "a worker token",
    [PRINCIPAL_SESSION] = "a worker session token", [PRINCIPAL_ADMIN] = "an admin token" };

/* 1 when who's role may use the route; else 0 after answering 403. */
static int allowed(struct api *api, struct MHD_Connection *conn, const struct principal *who,
                   unsigned may, const char *route, enum MHD_Result *ret)
{
    if (who->kind == PRINCIPAL_ADMIN || (may & (1u << who->kind)))
        return 1;
    char detail[160];
    snprintf(detail, sizeof detail, "%s may not %s", kind_names[who->kind], route);
    *ret = refuse_403(api, conn, who, detail);
    return 0;
}

/* ---- bodies --------------------------------------------------------------------------- */

/* The JSON object a request carries, or NULL after replying 400. */
static json_t *body_object(struct MHD_Connection *conn, struct request *rq,
                           enum MHD_Result *ret)
{
    const char *type = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                                   MHD_HTTP_HEADER_CONTENT_TYPE);
    if (!rq->len) {
        *ret = reply_error(conn, 400, "bad_json", "a JSON object body is required");
        return NULL;
    }
    if (!type || strncasecmp(type, "application/json", 16) != 0
        || (type[16] && type[16] != ';' && type[16] != ' ')) {
        *ret = reply_error(conn, 400, "bad_content_type",
                           "the body must be sent as Content-Type: application/json");
        return NULL;
    }
    struct req_error err;
    json_t *root = req_parse(rq->body, rq->len, &err);
    if (!root)
        *ret = reply_error(conn, 400, err.code, err.detail);
    return root;
}

/* ---- jobs ----------------------------------------------------------------------------- */

static enum MHD_Result submit_job(struct api *api, struct MHD_Connection *conn,
                                  struct request *rq)
{
    enum MHD_Result ret;
    if (!allowed(api, conn, &rq->who, MAY_TENANT, "submit jobs", &ret))
        return ret;
    json_t *body = body_object(conn, rq, &ret);
    if (!body)
        return ret;
    struct cmd c = { .type = CMD_SUBMIT };
    struct req_error err;
    if (req_job_spec(body, &c.job, &err) < 0) {
        ret = reply_error(conn, 400, err.code, err.detail);
    } else if (rq->who.kind == PRINCIPAL_TENANT && c.job.tenant_id[0]
               && strcmp(c.job.tenant_id, rq->who.tenant) != 0) {
        ret = refuse_403(api, conn, &rq->who, "a tenant token submits for its own tenant only");
    } else if (rq->who.kind != PRINCIPAL_TENANT && !c.job.tenant_id[0]) {
        ret = reply_error(conn, 400, "bad_field", "'tenant_id' is required");
    } else {
        if (rq->who.kind == PRINCIPAL_TENANT)
            strcpy(c.job.tenant_id, rq->who.tenant);
        ret = run(api, conn, &c, 201, "job");
    }
    json_decref(body);
    return ret;
}

static enum MHD_Result get_job(struct api *api, struct MHD_Connection *conn,
                               struct request *rq, uint64_t id)
{
    enum MHD_Result ret;
    if (!allowed(api, conn, &rq->who, MAY_TENANT, "read jobs", &ret))
        return ret;
    json_t *body = NULL;
    rcu_read_lock();
    struct job *j = sched_job(&api->engine->sched, id);
    if (j && (rq->who.kind != PRINCIPAL_TENANT || strcmp(j->tenant_id, rq->who.tenant) == 0)) {
        struct job_status st;
        job_status_read(j, &st);
        body = job_json(j, &st);
    }
    rcu_read_unlock();
    if (!body)
        return reply_error(conn, 404, "not_found", "no such job");
    return reply(conn, 200, body);
}

static enum MHD_Result list_jobs(struct api *api, struct MHD_Connection *conn,
                                 struct request *rq)
{
    enum MHD_Result ret;
    if (!allowed(api, conn, &rq->who, MAY_TENANT, "list jobs", &ret))
        return ret;
    struct cmd c = { .type = CMD_LIST_JOBS };
    const char *tenant = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "tenant_id");
    const char *state = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "state");
    const char *limit = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "limit");
    const char *after = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "after");
    c.list.state = -1;
    c.list.limit = 100;
    if (tenant) {
        if (!req_id_valid(tenant))
            return reply_error(conn, 400, "bad_id", "tenant_id must match [A-Za-z0-9._:-]{1,64}");
        strcpy(c.list.tenant_id, tenant);
    }
    if (rq->who.kind == PRINCIPAL_TENANT) {
        if (tenant && strcmp(tenant, rq->who.tenant) != 0)
            return refuse_403(api, conn, &rq->who,
                              "a tenant token lists its own tenant's jobs only");
        strcpy(c.list.tenant_id, rq->who.tenant);
    }
    if (state) {
        c.list.state = hodei_name_index(job_state_names, JOB_STATE_COUNT, state);
        if (c.list.state < 0)
            return reply_error(conn, 400, "bad_field", "state must be one of queued, assigned, "
                               "running, succeeded, failed, cancelled");
    }
    if (limit) {
        uint64_t n;
        if (!req_job_id(limit, &n) || n > 1000)
            return reply_error(conn, 400, "bad_field", "limit must be an integer 1..1000");
        c.list.limit = (unsigned) n;
    }
    if (after && !req_job_id(after, &c.list.after))
        return reply_error(conn, 400, "bad_id", "after must be a job id");
    return run(api, conn, &c, 200, "job");
}

static enum MHD_Result cancel_job(struct api *api, struct MHD_Connection *conn,
                                  struct request *rq, uint64_t id)
{
    enum MHD_Result ret;
    if (!allowed(api, conn, &rq->who, MAY_TENANT, "cancel jobs", &ret))
        return ret;
    struct cmd c = { .type = CMD_CANCEL, .job_id = id };
    strcpy(c.tenant_scope, rq->who.tenant);
    return run(api, conn, &c, 200, "job");
}

static enum MHD_Result job_output(struct api *api, struct MHD_Connection *conn,
                                  struct request *rq, uint64_t id)
{
    enum MHD_Result ret;
    if (!allowed(api, conn, &rq->who, MAY_TENANT, "read job output", &ret))
        return ret;
    struct cmd c = { .type = CMD_OUTPUT, .job_id = id };
    strcpy(c.tenant_scope, rq->who.tenant);
    engine_call(api->engine, &c);
    if (c.rc != SCHED_OK)
        return reply_refusal(conn, &c, "job");
    char detail[160];
    if (!c.output.reported) {
        snprintf(detail, sizeof detail, "job %llu is %s: its output comes with the outcome its "
                 "worker reports", (unsigned long long) id, job_state_names[c.output.state]);
        return reply_error(conn, 404, "no_output", detail);
    }
    if (!c.output.kept) {
        snprintf(detail, sizeof detail, "the output of job %llu (%llu bytes) is no longer kept: "
                 "newer outputs took its place", (unsigned long long) id,
                 (unsigned long long) c.output.total);
        return reply_error(conn, 410, "output_dropped", detail);
    }
    struct MHD_Response *r = must(MHD_create_response_from_buffer(
        c.output.len, c.output.tail, MHD_RESPMEM_MUST_FREE));
    char n[24];
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/octet-stream");
    MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
    snprintf(n, sizeof n, "%llu", (unsigned long long) c.output.total);
    MHD_add_response_header(r, "Hodei-Output-Bytes", n);
    return queue(conn, 200, r);
}

/* start, succeed and fail: from the session of the worker the job is on (or an admin). */
static enum MHD_Result job_report(struct api *api, struct MHD_Connection *conn,
                                  struct request *rq, uint64_t id, const char *action)
{
    enum MHD_Result ret;
    if (!allowed(api, conn, &rq->who, MAY_SESSION, "report on jobs", &ret))
        return ret;
    static const struct { const char *name; enum cmd_type cmd; enum req_report_kind kind; }
    actions[] = { { "start", CMD_START, REQ_START }, { "succeed", CMD_SUCCEED, REQ_SUCCEED },
                  { "fail", CMD_FAIL, REQ_FAIL } };
    size_t a = 0;
    while (strcmp(actions[a].name, action) != 0)
        a++;
    json_t *body = body_object(conn, rq, &ret);
    if (!body)
        return ret;
    struct cmd c = { .type = actions[a].cmd, .job_id = id };
    struct req_error err;
    if (req_report(body, actions[a].kind, &c.report, &err) < 0) {
        ret = reply_error(conn, 400, err.code, err.detail);
    } else if (rq->who.kind == PRINCIPAL_SESSION && c.report.worker_id[0]
               && strcmp(c.report.worker_id, rq->who.worker) != 0) {
        ret = refuse_403(api, conn, &rq->who, "a worker session reports for its own worker only");
    } else if (rq->who.kind != PRINCIPAL_SESSION && !c.report.worker_id[0]) {
        ret = reply_error(conn, 400, "bad_field", "'worker_id' is required");
    } else {
        if (rq->who.kind == PRINCIPAL_SESSION)
            strcpy(c.report.worker_id, rq->who.worker);
        ret = run(api, conn, &c, 200, "job");
    }
    req_report_free(&c.report);
    json_decref(body);
    return ret;
}

/* ---- workers ---------------------------------------------------------------------------- */

static enum MHD_Result register_worker(struct api *api, struct MHD_Connection *conn,
                                       struct request *rq)
{
    enum MHD_Result ret;
    if (!allowed(api, conn, &rq->who, MAY_WORKER, "register workers", &ret))
        return ret;
    json_t *body = body_object(conn, rq, &ret);
    if (!body)
        return ret;
    struct cmd c = { .type = CMD_REGISTER };
    struct req_error err;
    char session[TOKEN_MAX + 1] = "";
    if (req_worker_spec(body, &c.worker, &err) < 0) {
        ret = reply_error(conn, 400, err.code, err.detail);
    } else if (api->auth && token_generate(TOKEN_SESSION, session, c.worker.session.id,
                                           c.worker.session.hash) < 0) {
        ret = reply_error(conn, 503, "no_randomness", "the system's random source failed");
    } else {
        engine_call(api->engine, &c);
        if (c.rc != SCHED_OK) {
            ret = reply_refusal(conn, &c, "worker");
        } else {
            /* the only place the session's secret ever appears */
            if (session[0])
                json_object_set_new(c.object, "session_token", json_string(session));
            ret = reply(conn, 201, c.object);
        }
    }
    memset(session, 0, sizeof session);
    json_decref(body);
    return ret;
}

static enum MHD_Result list_workers(struct api *api, struct MHD_Connection *conn,
                                    struct request *rq)
{
    enum MHD_Result ret;
    if (!allowed(api, conn, &rq->who, 0, "list workers", &ret))
        return ret;
    struct cmd c = { .type = CMD_LIST_WORKERS };
    return run(api, conn, &c, 200, "worker");
}

/* Heartbeats and assignments of worker_id: its own session, or an admin. */
static int own_worker(struct api *api, struct MHD_Connection *conn, const struct principal *who,
                      const char *worker_id, const char *route, enum MHD_Result *ret)
{
    if (!allowed(api, conn, who, MAY_SESSION, route, ret))
        return 0;
    if (who->kind == PRINCIPAL_SESSION && strcmp(who->worker, worker_id) != 0) {
        *ret = refuse_403(api, conn, who, "a worker session acts for its own worker only");
        return 0;
    }
    return 1;
}

static enum MHD_Result heartbeat(struct api *api, struct MHD_Connection *conn,
                                 struct request *rq, const char *worker_id)
{
    enum MHD_Result ret;
    if (!own_worker(api, conn, &rq->who, worker_id, "heartbeat", &ret))
        return ret;
    json_t *body = body_object(conn, rq, &ret);
    if (!body)
        return ret;
    struct cmd c = { .type = CMD_HEARTBEAT };
    struct req_error err;
    int rc = req_heartbeat(body, &c.cpu_usage_percent, &c.memory_usage_mb, &err);
    json_decref(body);
    if (rc < 0)
        return reply_error(conn, 400, err.code, err.detail);
    strcpy(c.worker_id, worker_id);
    return run(api, conn, &c, 200, "worker");
}

/* GET /workers/{id}/assignments?wait=S: the assigned jobs not yet started; with none, the
 * connection parks until one is placed on the worker, the wait ends or the server stops.
 * Called again by libmicrohttpd after each resume (rq->polling). */
static enum MHD_Result assignments(struct api *api, struct MHD_Connection *conn,
                                   struct request *rq, const char *worker_id)
{
    enum MHD_Result ret;
    if (!rq->polling) {
        if (!own_worker(api, conn, &rq->who, worker_id, "poll assignments", &ret))
            return ret;
        double wait = 0;
        const char *w = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "wait");
        if (w) {
            char *end;
            wait = strtod(w, &end);
            if (!*w || *end || !(wait >= 0 && wait <= LONG_POLL_MAX_S))
                return reply_error(conn, 400, "bad_field", "wait must be 0..30 seconds");
        }
        rq->polling = 1;
        rq->poll_until = hodei_mono() + wait;
        strcpy(rq->poll_worker, worker_id);
        rq->park.conn = conn;
    }
    for (;;) {
        uint64_t gen = atomic_load(&api->assign_gen);
        struct cmd c = { .type = CMD_ASSIGNMENTS };
        strcpy(c.worker_id, rq->poll_worker);
        engine_call(api->engine, &c);
        if (c.rc != SCHED_OK)
            return reply_refusal(conn, &c, "worker");
        if (json_array_size(json_object_get(c.object, "jobs")) > 0
            || hodei_mono() >= rq->poll_until || atomic_load(&api->stopping))
            return reply(conn, 200, c.object);
        json_decref(c.object);
        if (park(api, &rq->park, rq->poll_until, 1, gen))
            return MHD_YES;   /* resumed later: this function runs again */
    }
}

/* ---- event streams -------------------------------------------------------------------- */

static void sse_wake(void *ctx)
{
    struct sse *s = ctx;
    wake(s->api, &s->park);
}

static ssize_t copy_out(struct sse *s, char *buf, size_t max)
{
    size_t n = s->len - s->off < max ? s->len - s->off : max;
    memcpy(buf, s->out + s->off, n);
    s->off += n;
    if (s->off == s->len) {
        free(s->out);
        s->out = NULL;
    }
    return (ssize_t) n;
}

/* libmicrohttpd's reader: the next bytes of the stream, or 0 after parking it. */
static ssize_t sse_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    struct sse *s = cls;
    for (;;) {
        if (s->out)
            return copy_out(s, buf, max);
        if (s->park.gone || bus_closed(s->api->bus) || atomic_load(&s->api->stopping))
            return MHD_CONTENT_READER_END_OF_STREAM;
        struct bus_event *ev = bus_arm(s->sub);
        double now = hodei_mono();
        if (ev) {
            const char *name = hodei_event_type_names[ev->type];
            s->out = ev->payload ? xasprintf("event: %s\ndata: %s\n\n", name, ev->payload)
                                 : xasprintf("event: %s\ndata: {\"type\":\"%s\"}\n\n", name, name);
            bus_event_put(ev);
        } else if (now >= s->keepalive_at) {
            s->out = xstrdup(": keepalive\n\n");
        } else if (park(s->api, &s->park, s->keepalive_at, 0, 0)) {
            return 0;   /* resumed by an event, the keepalive time, a hang-up or shutdown */
        } else {
            continue;
        }
        s->len = strlen(s->out);
        s->off = 0;
        s->keepalive_at = now + SSE_KEEPALIVE_S;
    }
}

/* When libmicrohttpd is done with the stream (never while it is parked). */
static void sse_free(void *cls)
{
    struct sse *s = cls;
    struct api *api = s->api;
    bus_unsubscribe(api->bus, s->sub);   /* no wake from the bus after this */
    atomic_fetch_sub(&api->streams, 1);
    free(s->out);
    pthread_mutex_lock(&api->park_lock);
    if (s->park.parked)
        heap_remove(&api->deadlines, &s->park);
    epoll_ctl(api->watch_epfd, EPOLL_CTL_DEL, s->fd, NULL);
    s->park.dead = 1;
    s->park.next_dead = api->graveyard;
    api->graveyard = &s->park;
    pthread_mutex_unlock(&api->park_lock);
    kick_watcher(api);
}

static enum MHD_Result events(struct api *api, struct MHD_Connection *conn, struct request *rq)
{
    enum MHD_Result ret;
    if (!allowed(api, conn, &rq->who, MAY_TENANT, "follow events", &ret))
        return ret;
    if (atomic_fetch_add(&api->streams, 1) >= api->cfg->max_event_streams) {
        atomic_fetch_sub(&api->streams, 1);
        return reply_error(conn, 429, "too_many_streams",
                           "the server has its maximum of open event streams");
    }
    const union MHD_ConnectionInfo *info =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    struct sse *s = xcalloc(1, sizeof *s);
    s->api = api;
    s->fd = info->connect_fd;
    s->park.conn = conn;
    /* A fixed send buffer: left to autotuning the kernel grows it to megabytes for a stalled
     * client, holding stale events there before the subscriber's bounded queue ever drops. */
    setsockopt(s->fd, SOL_SOCKET, SO_SNDBUF, &(int){ SSE_SNDBUF }, sizeof(int));
    struct epoll_event ev = { .events = EPOLLRDHUP | EPOLLONESHOT, .data.ptr = &s->park };
    epoll_ctl(api->watch_epfd, EPOLL_CTL_ADD, s->fd, &ev);
    struct bus_sub_config sub = {
        .queue_cap = api->cfg->sse_queue, .wants_payload = 1,
        .tenant = rq->who.kind == PRINCIPAL_TENANT ? rq->who.tenant : NULL,
        .wake = sse_wake, .wake_ctx = s };
    s->sub = bus_subscribe_with(api->bus, &sub);
    s->out = xstrdup(": subscribed\n\n");   /* sends the headers right away */
    s->len = strlen(s->out);
    s->keepalive_at = hodei_mono() + SSE_KEEPALIVE_S;
    struct MHD_Response *r = must(MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096,
                                                                    sse_read, s, sse_free));
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream");
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    MHD_add_response_header(r, "X-Accel-Buffering", "no");
    return queue(conn, 200, r);
}

static enum MHD_Result health(struct MHD_Connection *conn)
{
    return reply(conn, 200, json_pack("{s:s}", "status", "ok"));
}

/* ---- routing -------------------------------------------------------------------------- */

static enum MHD_Result method_not_allowed(struct MHD_Connection *conn, const char *allowed)
{
    char detail[64];
    snprintf(detail, sizeof detail, "allowed: %s", allowed);
    return reply_error(conn, 405, "method_not_allowed", detail);
}

static enum MHD_Result not_found(struct MHD_Connection *conn)
{
    return reply_error(conn, 404, "not_found", "no such endpoint");
}

static int is_health(const char *url)
{
    return strcmp(url, "/api/v1/health") == 0 || strcmp(url, "/api/v1/health/") == 0;
}

static enum MHD_Result route(struct api *api, struct MHD_Connection *conn, const char *url,
                             const char *method, struct request *rq)
{
    static const char prefix[] = "/api/v1/";
    int get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
    int post = strcmp(method, "POST") == 0;
    if (strncmp(url, prefix, sizeof prefix - 1) != 0)
        return not_found(conn);
    /* split the rest into at most three segments */
    char path[256];
    char *seg[4] = { 0 };
    int nseg = 0;
    if (strlen(url) >= sizeof path)
        return not_found(conn);
    strcpy(path, url + sizeof prefix - 1);
    for (char *save = NULL, *tok = strtok_r(path, "/", &save); tok;
         tok = strtok_r(NULL, "/", &save)) {
        if (nseg == 3)
            return not_found(conn);
        seg[nseg++] = tok;
    }
    if (nseg == 0)
        return not_found(conn);

    if (strcmp(seg[0], "jobs") == 0) {
        if (nseg == 1)
            return post ? submit_job(api, conn, rq) : get ? list_jobs(api, conn, rq)
                        : method_not_allowed(conn, "GET, POST");
        int is_output = nseg == 3 && strcmp(seg[2], "output") == 0;
        int is_report = nseg == 3 && (strcmp(seg[2], "start") == 0
                                      || strcmp(seg[2], "succeed") == 0
                                      || strcmp(seg[2], "fail") == 0);
        int is_cancel = nseg == 3 && strcmp(seg[2], "cancel") == 0;
        if (nseg == 3 && !is_output && !is_report && !is_cancel)
            return not_found(conn);
        if ((nseg == 2 || is_output) && !get)
            return method_not_allowed(conn, "GET");
        if ((is_report || is_cancel) && !post)
            return method_not_allowed(conn, "POST");
        uint64_t id;
        if (!req_job_id(seg[1], &id))
            return reply_error(conn, 400, "bad_id", "job ids are decimal numbers");
        return nseg == 2 ? get_job(api, conn, rq, id)
             : is_output ? job_output(api, conn, rq, id)
             : is_cancel ? cancel_job(api, conn, rq, id)
             : job_report(api, conn, rq, id, seg[2]);
    }
    if (strcmp(seg[0], "workers") == 0) {
        if (nseg == 1)
            return post ? register_worker(api, conn, rq) : get ? list_workers(api, conn, rq)
                        : method_not_allowed(conn, "GET, POST");
        if (nseg != 3 || (strcmp(seg[2], "heartbeat") != 0 && strcmp(seg[2], "assignments") != 0))
            return not_found(conn);
        int is_heartbeat = seg[2][0] == 'h';
        if (is_heartbeat ? !post : !get)
            return method_not_allowed(conn, is_heartbeat ? "POST" : "GET");
        if (!req_id_valid(seg[1]))
            return reply_error(conn, 400, "bad_id", "worker ids must match [A-Za-z0-9._:-]{1,64}");
        return is_heartbeat ? heartbeat(api, conn, rq, seg[1])
                            : assignments(api, conn, rq, seg[1]);
    }
    if (nseg == 1 && strcmp(seg[0], "events") == 0)
        return get ? events(api, conn, rq) : method_not_allowed(conn, "GET");
    return not_found(conn);
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *conn, const char *url,
                              const char *method, const char *version, const char *upload,
                              size_t *upload_size, void **con_cls)
{
    struct api *api = cls;
    struct request *rq = *con_cls;
    if (!rq) {
        rq = xcalloc(1, sizeof *rq);
        *con_cls = rq;
        const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                                     MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (cl && strtoull(cl, NULL, 10) > HODEI_BODY_MAX)
            rq->too_large = 1;   /* refused once the call completes; nothing is stored */
        rq->authenticated = is_health(url) || authenticate(api, conn, rq) == 0;
        return MHD_YES;
    }
    if (*upload_size) {
        /* a body is kept only from a client with credentials, and only up to the limit */
        if (rq->authenticated && !rq->too_large) {
            if (rq->len + *upload_size > HODEI_BODY_MAX) {
                rq->too_large = 1;
                free(rq->body);
                rq->body = NULL;
                rq->len = 0;
            } else {
                rq->body = xrealloc(rq->body, rq->len + *upload_size);
                memcpy(rq->body + rq->len, upload, *upload_size);
                rq->len += *upload_size;
            }
        }
        *upload_size = 0;
        return MHD_YES;
    }
    if (rq->polling)
        return assignments(api, conn, rq, rq->poll_worker);
    if (atomic_load(&api->stopping))
        return reply_error(conn, 503, "shutting_down", "the scheduler is shutting down");
    if (is_health(url))
        return strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0
               ? health(conn) : method_not_allowed(conn, "GET");
    if (!rq->authenticated)
        return refuse_401(api, conn, rq->auth_failure, rq->token_id);
    if (rq->too_large)
        return reply_error(conn, 413, "too_large", "the body exceeds 64 KiB");
    return route(api, conn, url, method, rq);
}

static void completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                      enum MHD_RequestTerminationCode toe)
{
    struct request *rq = *con_cls;
    if (rq) {
        free(rq->body);
        free(rq);
        *con_cls = NULL;
    }
}

/* libmicrohttpd's own messages (e.g. "Server reached connection limit"), rate-limited so that a
 * flood cannot flood the log. */
static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    static _Atomic int64_t last;
    if (!log_due(&last))
        return;
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    msg[strcspn(msg, "\n")] = '\0';
    log_warn("libmicrohttpd: %s", msg);
}

/* Pool threads: handlers never wait for a client (parking), only briefly for the engine. */
static unsigned pool_size(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 4 ? 4 : n > 16 ? 16 : (unsigned) n;
}

struct api *api_start(const struct config *cfg, struct engine *engine, struct bus *bus,
                      struct auth *auth)
{
    struct api *api = xcalloc(1, sizeof *api);
    api->engine = engine;
    api->bus = bus;
    api->auth = auth;
    api->cfg = cfg;
    pthread_mutex_init(&api->ip_lock, NULL);
    pthread_mutex_init(&api->park_lock, NULL);
    api->deadlines = HEAP_INIT(deadline_less, struct park, heap_slot);
    CDS_INIT_LIST_HEAD(&api->polls);
    api->watch_epfd = epoll_create1(EPOLL_CLOEXEC);
    api->watch_kick = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    struct epoll_event kick = { .events = EPOLLIN, .data.ptr = NULL };
    if (api->watch_epfd < 0 || api->watch_kick < 0
        || epoll_ctl(api->watch_epfd, EPOLL_CTL_ADD, api->watch_kick, &kick) < 0
        || pthread_create(&api->watcher, NULL, watcher_main, api) != 0) {
        log_error("cannot start the API's watcher thread");
        return NULL;
    }
    engine->on_assign_ctx = api;
    CMM_STORE_SHARED(engine->on_assign, on_assign);

    struct sockaddr_in addr = { .sin_family = AF_INET, .sin_port = htons(cfg->listen_port) };
    inet_pton(AF_INET, cfg->listen_host, &addr.sin_addr);
    api->mhd = MHD_start_daemon(
        MHD_USE_EPOLL_INTERNAL_THREAD | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG,
        (uint16_t) cfg->listen_port, accept_policy, api, handle, api,
        MHD_OPTION_EXTERNAL_LOGGER, mhd_log, api,
        MHD_OPTION_SOCK_ADDR, (struct sockaddr *) &addr,
        MHD_OPTION_THREAD_POOL_SIZE, pool_size(),
        MHD_OPTION_NOTIFY_COMPLETED, completed, api,
        MHD_OPTION_NOTIFY_CONNECTION, on_connection, api,
        MHD_OPTION_CONNECTION_LIMIT, cfg->max_connections,
        MHD_OPTION_CONNECTION_TIMEOUT, cfg->idle_timeout_s,
        MHD_OPTION_LISTEN_BACKLOG_SIZE, (unsigned) 4096,
        MHD_OPTION_END);
    if (!api->mhd) {
        log_error("cannot listen on %s:%u", cfg->listen_host, cfg->listen_port);
        return NULL;
    }
    return api;
}

void api_stop(struct api *api)
{
    atomic_store(&api->stopping, 1);
    MHD_quiesce_daemon(api->mhd);
    /* every parked connection resumes now and ends: nothing parks any more */
    pthread_mutex_lock(&api->park_lock);
    struct park *p;
    while ((p = heap_top(&api->deadlines)))
        wake_locked(api, p);
    pthread_mutex_unlock(&api->park_lock);
    bus_close(api->bus);
    /* let the requests in flight (woken long-polls, ending streams) send their answers;
     * idle kept-alive connections are simply closed after the grace */
    for (int waited_ms = 0; waited_ms < SHUTDOWN_GRACE_MS; waited_ms += 10) {
        const union MHD_DaemonInfo *info =
            MHD_get_daemon_info(api->mhd, MHD_DAEMON_INFO_CURRENT_CONNECTIONS);
        if (!info || info->num_connections == 0)
            break;
        usleep(10000);
    }
    MHD_stop_daemon(api->mhd);
    CMM_STORE_SHARED(api->engine->on_assign, NULL);
    pthread_mutex_lock(&api->park_lock);
    api->watch_stop = 1;
    pthread_mutex_unlock(&api->park_lock);
    kick_watcher(api);
    pthread_join(api->watcher, NULL);
    close(api->watch_epfd);
    close(api->watch_kick);
    heap_free(&api->deadlines);
    for (int b = 0; b < IP_BUCKETS; b++)
        while (api->ips[b]) {
            struct ip_count *c = api->ips[b];
            api->ips[b] = c->next;
            free(c);
        }
    free(api);
}
