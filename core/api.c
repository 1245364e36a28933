/*
 * api.c — routing, body collection and replies.  Validation lives in request.c, state changes
 * on the engine thread (engine.c); single-job reads are served here under rcu_read_lock().
 */
#include "api.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <poll.h>
#include <stdio.h>
#include <sys/socket.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "json.h"
#include "log.h"

#define BODY_MAX        (64 * 1024)
#define SSE_KEEPALIVE_MS 15000
#define SSE_SLICE_MS    500
#define SSE_SNDBUF      (64 * 1024)     /* bytes the kernel holds for one event stream */
#define SHUTDOWN_GRACE_MS 1000
#define LONG_POLL_MAX_S 30

struct api {
    struct MHD_Daemon *mhd;
    struct engine *engine;
    struct bus *bus;
    unsigned sse_queue;
    const char *version;
    int stopping;
};

/* Per request: the body as it arrives. */
struct request {
    char  *body;
    size_t len;
    int    too_large;
};

static enum MHD_Result reply(struct MHD_Connection *conn, unsigned status, json_t *body)
{
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    if (!text)
        return MHD_NO;
    struct MHD_Response *r = MHD_create_response_from_buffer(strlen(text), text,
                                                             MHD_RESPMEM_MUST_FREE);
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    enum MHD_Result ret = MHD_queue_response(conn, status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result reply_error(struct MHD_Connection *conn, unsigned status,
                                   const char *code, const char *detail)
{
    return reply(conn, status, error_json(code, detail));
}

static enum MHD_Result reply_cmd(struct MHD_Connection *conn, struct cmd *c)
{
    return reply(conn, (unsigned) c->status, c->body);
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

/* ---- handlers ------------------------------------------------------------------------- */

static enum MHD_Result submit_job(struct api *api, struct MHD_Connection *conn,
                                  struct request *rq)
{
    enum MHD_Result ret;
    json_t *body = body_object(conn, rq, &ret);
    if (!body)
        return ret;
    struct cmd c = { .type = CMD_SUBMIT };
    struct req_error err;
    if (req_job_spec(body, &c.job, &err) < 0) {
        json_decref(body);
        return reply_error(conn, 400, err.code, err.detail);
    }
    engine_call(api->engine, &c);
    json_decref(body);
    return reply_cmd(conn, &c);
}

static enum MHD_Result get_job(struct api *api, struct MHD_Connection *conn, uint64_t id)
{
    json_t *body = NULL;
    rcu_read_lock();
    struct job *j = sched_job(&api->engine->sched, id);
    if (j) {
        struct job_status st;
        job_status_read(j, &st);
        body = job_json(j, &st);
    }
    rcu_read_unlock();
    if (!body)
        return reply_error(conn, 404, "not_found", "no such job");
    return reply(conn, 200, body);
}

static enum MHD_Result list_jobs(struct api *api, struct MHD_Connection *conn)
{
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
    engine_call(api->engine, &c);
    return reply_cmd(conn, &c);
}

static enum MHD_Result job_action(struct api *api, struct MHD_Connection *conn,
                                  struct request *rq, uint64_t id, const char *action)
{
    struct cmd c = { .job_id = id };
    if (strcmp(action, "cancel") == 0) {
        c.type = CMD_CANCEL;
        engine_call(api->engine, &c);
        return reply_cmd(conn, &c);
    }
    enum req_report_kind kind;
    if (strcmp(action, "start") == 0) {
        kind = REQ_START;
        c.type = CMD_START;
    } else if (strcmp(action, "succeed") == 0) {
        kind = REQ_SUCCEED;
        c.type = CMD_SUCCEED;
    } else {
        kind = REQ_FAIL;
        c.type = CMD_FAIL;
    }
    enum MHD_Result ret;
    json_t *body = body_object(conn, rq, &ret);
    if (!body)
        return ret;
    struct req_error err;
    int rc = req_report(body, kind, &c.report, &err);
    json_decref(body);
    if (rc < 0)
        return reply_error(conn, 400, err.code, err.detail);
    engine_call(api->engine, &c);
    return reply_cmd(conn, &c);
}

static enum MHD_Result register_worker(struct api *api, struct MHD_Connection *conn,
                                       struct request *rq)
{
    enum MHD_Result ret;
    json_t *body = body_object(conn, rq, &ret);
    if (!body)
        return ret;
    struct cmd c = { .type = CMD_REGISTER };
    struct req_error err;
    if (req_worker_spec(body, &c.worker, &err) < 0) {
        json_decref(body);
        return reply_error(conn, 400, err.code, err.detail);
    }
    engine_call(api->engine, &c);
    json_decref(body);
    return reply_cmd(conn, &c);
}

static enum MHD_Result list_workers(struct api *api, struct MHD_Connection *conn)
{
    struct cmd c = { .type = CMD_LIST_WORKERS };
    engine_call(api->engine, &c);
    return reply_cmd(conn, &c);
}

static enum MHD_Result heartbeat(struct api *api, struct MHD_Connection *conn,
                                 struct request *rq, const char *worker_id)
{
    enum MHD_Result ret;
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
    engine_call(api->engine, &c);
    return reply_cmd(conn, &c);
}

static enum MHD_Result assignments(struct api *api, struct MHD_Connection *conn,
                                   const char *worker_id)
{
    double wait = 0;
    const char *w = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "wait");
    if (w) {
        char *end;
        wait = strtod(w, &end);
        if (!*w || *end || !(wait >= 0 && wait <= LONG_POLL_MAX_S))
            return reply_error(conn, 400, "bad_field", "wait must be 0..30 seconds");
    }
    double until = engine_mono_now() + wait;
    uint64_t gen = engine_assign_gen(api->engine);
    struct cmd c = { .type = CMD_ASSIGNMENTS };
    strcpy(c.worker_id, worker_id);
    engine_call(api->engine, &c);
    for (;;) {
        double left = until - engine_mono_now();
        if (c.status != 200 || json_array_size(json_object_get(c.body, "jobs")) > 0 || left <= 0
            || api->stopping)
            break;
        engine_wait_assignment(api->engine, &gen, (int) (left * 1000) + 1);
        if (api->stopping)
            break;
        json_decref(c.body);
        c = (struct cmd) { .type = CMD_ASSIGNMENTS };
        strcpy(c.worker_id, worker_id);
        engine_call(api->engine, &c);
    }
    return reply_cmd(conn, &c);
}

/* ---- server-sent events ----------------------------------------------------------------- */

struct sse {
    struct api *api;
    struct bus_sub *sub;
    int fd;              /* the client's socket: a hang-up ends the stream early */
    char  *out;          /* formatted, not yet sent */
    size_t len, off;
};

static int client_gone(int fd)
{
    struct pollfd p = { .fd = fd, .events = POLLRDHUP };
    return fd >= 0 && poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR));
}

/* Leaves the bus as soon as the stream ends: libmicrohttpd may free the response (and call
 * sse_free) only at its listener's next wake-up. */
static ssize_t sse_end(struct sse *s)
{
    if (s->sub) {
        bus_unsubscribe(s->api->bus, s->sub);
        s->sub = NULL;
    }
    return MHD_CONTENT_READER_END_OF_STREAM;
}

static ssize_t sse_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    struct sse *s = cls;
    if (!s->sub)
        return MHD_CONTENT_READER_END_OF_STREAM;
    if (!s->out) {
        if (bus_closed(s->api->bus))
            return sse_end(s);
        /* wait in slices so that a client that left is noticed within one */
        struct bus_event *ev = NULL;
        for (int waited = 0; !ev && waited < SSE_KEEPALIVE_MS; waited += SSE_SLICE_MS) {
            ev = bus_next(s->sub, SSE_SLICE_MS);
            if (!ev && (bus_closed(s->api->bus) || client_gone(s->fd)))
                return sse_end(s);
        }
        if (!ev) {
            if (bus_closed(s->api->bus))
                return sse_end(s);
            s->out = strdup(": keepalive\n\n");
        } else {
            const char *name = hodei_event_type_names[ev->type];
            if (asprintf(&s->out, "event: %s\ndata: %s%s%s\n\n", name,
                         ev->payload ? ev->payload : "{\"type\":\"",
                         ev->payload ? "" : name, ev->payload ? "" : "\"}") < 0)
                s->out = NULL;
            bus_event_put(ev);
        }
        if (!s->out)
            return MHD_CONTENT_READER_END_WITH_ERROR;
        s->len = strlen(s->out);
        s->off = 0;
    }
    size_t n = s->len - s->off < max ? s->len - s->off : max;
    memcpy(buf, s->out + s->off, n);
    s->off += n;
    if (s->off == s->len) {
        free(s->out);
        s->out = NULL;
    }
    return (ssize_t) n;
}

static void sse_free(void *cls)
{
    struct sse *s = cls;
    sse_end(s);
    free(s->out);
    free(s);
}

static enum MHD_Result events(struct api *api, struct MHD_Connection *conn)
{
    struct sse *s = calloc(1, sizeof *s);
    if (!s)
        return MHD_NO;
    s->api = api;
    const union MHD_ConnectionInfo *info =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    s->fd = info ? info->connect_fd : -1;
    /* A fixed send buffer: left to autotuning the kernel grows it to megabytes for a stalled
     * client, holding stale events there before the subscriber's bounded queue ever drops. */
    if (s->fd >= 0)
        setsockopt(s->fd, SOL_SOCKET, SO_SNDBUF, &(int){ SSE_SNDBUF }, sizeof(int));
    s->sub = bus_subscribe(api->bus, api->sse_queue, 1);
    s->out = strdup(": subscribed\n\n");   /* sends the headers right away */
    s->len = strlen(s->out);
    struct MHD_Response *r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, sse_read,
                                                               s, sse_free);
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream");
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    MHD_add_response_header(r, "X-Accel-Buffering", "no");
    enum MHD_Result ret = MHD_queue_response(conn, 200, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result health(struct api *api, struct MHD_Connection *conn)
{
    const struct sched_metrics *m = &api->engine->sched.m;
    return reply(conn, 200, json_pack("{s:s, s:s, s:I, s:I}", "status", "ok",
                                      "version", api->version,
                                      "workers", (json_int_t) counter_load(&m->workers_total),
                                      "jobs_queued", (json_int_t) counter_load(&m->jobs_queued)));
}

/* ---- routing -------------------------------------------------------------------------- */

static enum MHD_Result method_not_allowed(struct MHD_Connection *conn, const char *allowed)
{
    char detail[64];
    snprintf(detail, sizeof detail, "allowed: %s", allowed);
    return reply_error(conn, 405, "method_not_allowed", detail);
}

static enum MHD_Result route(struct api *api, struct MHD_Connection *conn, const char *url,
                             const char *method, struct request *rq)
{
    static const char prefix[] = "/api/v1/";
    int get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
    int post = strcmp(method, "POST") == 0;
    if (strncmp(url, prefix, sizeof prefix - 1) != 0)
        return reply_error(conn, 404, "not_found", "no such endpoint");
    /* split the rest into at most three segments */
    char path[256];
    char *seg[4] = { 0 };
    int nseg = 0;
    if (strlen(url) >= sizeof path)
        return reply_error(conn, 404, "not_found", "no such endpoint");
    strcpy(path, url + sizeof prefix - 1);
    for (char *save = NULL, *tok = strtok_r(path, "/", &save); tok;
         tok = strtok_r(NULL, "/", &save)) {
        if (nseg == 3)
            return reply_error(conn, 404, "not_found", "no such endpoint");
        seg[nseg++] = tok;
    }
    if (nseg == 0)
        return reply_error(conn, 404, "not_found", "no such endpoint");

    if (strcmp(seg[0], "jobs") == 0) {
        if (nseg == 1)
            return post ? submit_job(api, conn, rq) : get ? list_jobs(api, conn)
                        : method_not_allowed(conn, "GET, POST");
        int action = nseg == 3 && (strcmp(seg[2], "cancel") == 0 || strcmp(seg[2], "start") == 0
                                   || strcmp(seg[2], "succeed") == 0
                                   || strcmp(seg[2], "fail") == 0);
        if (nseg == 3 && !action)
            return reply_error(conn, 404, "not_found", "no such endpoint");
        if (nseg == 2 && !get)
            return method_not_allowed(conn, "GET");
        if (nseg == 3 && !post)
            return method_not_allowed(conn, "POST");
        uint64_t id;
        if (!req_job_id(seg[1], &id))
            return reply_error(conn, 400, "bad_id", "job ids are decimal numbers");
        return nseg == 2 ? get_job(api, conn, id) : job_action(api, conn, rq, id, seg[2]);
    }
    if (strcmp(seg[0], "workers") == 0) {
        if (nseg == 1)
            return post ? register_worker(api, conn, rq) : get ? list_workers(api, conn)
                        : method_not_allowed(conn, "GET, POST");
        if (nseg != 3 || (strcmp(seg[2], "heartbeat") != 0 && strcmp(seg[2], "assignments") != 0))
            return reply_error(conn, 404, "not_found", "no such endpoint");
        int is_heartbeat = seg[2][0] == 'h';
        if (is_heartbeat ? !post : !get)
            return method_not_allowed(conn, is_heartbeat ? "POST" : "GET");
        if (!req_id_valid(seg[1]))
            return reply_error(conn, 400, "bad_id", "worker ids must match [A-Za-z0-9._:-]{1,64}");
        return is_heartbeat ? heartbeat(api, conn, rq, seg[1]) : assignments(api, conn, seg[1]);
    }
    if (nseg == 1 && strcmp(seg[0], "events") == 0)
        return get ? events(api, conn) : method_not_allowed(conn, "GET");
    if (nseg == 1 && strcmp(seg[0], "health") == 0)
        return get ? health(api, conn) : method_not_allowed(conn, "GET");
    return reply_error(conn, 404, "not_found", "no such endpoint");
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *conn, const char *url,
                              const char *method, const char *version, const char *upload,
                              size_t *upload_size, void **con_cls)
{
    struct api *api = cls;
    struct request *rq = *con_cls;
    if (!rq) {
        rq = calloc(1, sizeof *rq);
        if (!rq)
            return MHD_NO;
        *con_cls = rq;
        const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                                     MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (cl && strtoull(cl, NULL, 10) > BODY_MAX)
            rq->too_large = 1;   /* refused once the call completes; nothing is stored */
        return MHD_YES;
    }
    if (*upload_size) {
        if (!rq->too_large) {
            if (rq->len + *upload_size > BODY_MAX) {
                rq->too_large = 1;
                free(rq->body);
                rq->body = NULL;
                rq->len = 0;
            } else {
                char *grown = realloc(rq->body, rq->len + *upload_size);
                if (!grown)
                    return MHD_NO;
                rq->body = grown;
                memcpy(rq->body + rq->len, upload, *upload_size);
                rq->len += *upload_size;
            }
        }
        *upload_size = 0;
        return MHD_YES;
    }
    if (api->stopping)
        return reply_error(conn, 503, "shutting_down", "the scheduler is shutting down");
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

struct api *api_start(const struct config *cfg, struct engine *engine, struct bus *bus,
                      const char *version)
{
    struct api *api = calloc(1, sizeof *api);
    if (!api)
        return NULL;
    api->engine = engine;
    api->bus = bus;
    api->sse_queue = cfg->sse_queue;
    api->version = version;
    struct sockaddr_in addr = { .sin_family = AF_INET, .sin_port = htons(cfg->listen_port) };
    inet_pton(AF_INET, cfg->listen_host, &addr.sin_addr);
    api->mhd = MHD_start_daemon(
        MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ITC
            | MHD_USE_ERROR_LOG,
        (uint16_t) cfg->listen_port, NULL, NULL, handle, api,
        MHD_OPTION_SOCK_ADDR, (struct sockaddr *) &addr,
        MHD_OPTION_NOTIFY_COMPLETED, completed, api,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned) 4096,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned) 120,
        MHD_OPTION_THREAD_STACK_SIZE, (size_t) (1024 * 1024),
        MHD_OPTION_LISTEN_BACKLOG_SIZE, (unsigned) 1024,
        MHD_OPTION_END);
    if (!api->mhd) {
        log_error("cannot listen on %s:%u", cfg->listen_host, cfg->listen_port);
        free(api);
        return NULL;
    }
    return api;
}

void api_stop(struct api *api)
{
    api->stopping = 1;
    MHD_quiesce_daemon(api->mhd);
    engine_close(api->engine);
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
    free(api);
}
