/*
 * client.c — the hodei-scheduler API client shared by hodei-worker and hodeictl.
 */
#include "client.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#define CONNECT_TIMEOUT_MS 5000L
/* Replies are small JSON documents; anything bigger is not the daemon talking. */
#define REPLY_MAX          (64L << 20)

struct buf {
    char  *data;
    size_t len, cap;
};

static int buf_append(struct buf *b, const char *p, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *d = realloc(b->data, cap);
        if (!d)
            return -1;
        b->data = d;
        b->cap = cap;
    }
    memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
    return 0;
}

static void buf_free(struct buf *b)
{
    free(b->data);
    *b = (struct buf){0};
}

int hodei_api_global_init(void)
{
    return curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK ? 0 : -1;
}

int hodei_token_load(const char *token_file, char out[HODEI_TOKEN_TEXT_MAX + 1], char *err,
                     size_t errlen)
{
    out[0] = '\0';
    if (!token_file) {
        const char *env = getenv("HODEI_TOKEN");
        if (env && strlen(env) > HODEI_TOKEN_TEXT_MAX) {
            snprintf(err, errlen, "HODEI_TOKEN is longer than a token");
            return -1;
        }
        snprintf(out, HODEI_TOKEN_TEXT_MAX + 1, "%s", env ? env : "");
        return 0;
    }
    int fd = open(token_file, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0) {
        snprintf(err, errlen, "%s: %s", token_file, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    if (st.st_mode & 0007) {
        snprintf(err, errlen, "%s: others may read it (mode %04o); run: chmod o-rwx %s",
                 token_file, (unsigned) (st.st_mode & 07777), token_file);
        close(fd);
        return -1;
    }
    char buf[HODEI_TOKEN_TEXT_MAX + 2];
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n < 0) {
        snprintf(err, errlen, "%s: %s", token_file, strerror(errno));
        return -1;
    }
    buf[n] = '\0';
    buf[strcspn(buf, "\r\n")] = '\0';
    if (strlen(buf) > HODEI_TOKEN_TEXT_MAX || !buf[0]) {
        snprintf(err, errlen, "%s: the first line must be a token", token_file);
        return -1;
    }
    strcpy(out, buf);
    return 0;
}

int hodei_api_open(struct hodei_api *api, const char *server_url)
{
    size_t n = strlen(server_url);
    while (n > 0 && server_url[n - 1] == '/')
        n--;
    *api = (struct hodei_api){0};
    if (asprintf(&api->base, "%.*s%s", (int)n, server_url, HODEI_API_PREFIX) < 0) {
        api->base = NULL;
        return -1;
    }
    api->curl = curl_easy_init();
    if (!api->curl) {
        free(api->base);
        api->base = NULL;
        return -1;
    }
    return 0;
}

void hodei_api_close(struct hodei_api *api)
{
    if (api->curl)
        curl_easy_cleanup(api->curl);
    free(api->base);
    *api = (struct hodei_api){0};
}

void hodei_reply_clear(struct hodei_reply *reply)
{
    json_decref(reply->body);
    reply->body = NULL;
    reply->status = 0;
    reply->error[0] = '\0';
}

static size_t collect_body(char *p, size_t size, size_t n, void *arg)
{
    struct buf *b = arg;
    if (b->len + n > (size_t)REPLY_MAX || buf_append(b, p, n) < 0)
        return 0;
    return n;
}

static int abort_requested(void *arg, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                           curl_off_t ulnow)
{
    const struct hodei_api *api = arg;
    return api->abort_on && *api->abort_on;
}

/* The Authorization header (when the api has a token) appended to headers. */
static struct curl_slist *auth_header(const struct hodei_api *api, struct curl_slist *headers)
{
    char line[HODEI_TOKEN_TEXT_MAX + 32];
    if (!api->token[0])
        return headers;
    snprintf(line, sizeof line, "Authorization: Bearer %s", api->token);
    struct curl_slist *h = curl_slist_append(headers, line);
    memset(line, 0, sizeof line);
    return h ? h : headers;
}

/* Options every request carries; the caller adds method, body and receiver. */
static void set_common_options(struct hodei_api *api, const char *url, char *errbuf)
{
    CURL *c = api->curl;
    curl_easy_reset(c);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, CONNECT_TIMEOUT_MS);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, abort_requested);
    curl_easy_setopt(c, CURLOPT_XFERINFODATA, api);
}

/* Fills reply->error from a failed transfer. */
static void describe_transport_error(struct hodei_api *api, CURLcode rc, const char *errbuf,
                                     struct hodei_reply *reply)
{
    if (rc == CURLE_ABORTED_BY_CALLBACK)
        snprintf(reply->error, sizeof reply->error, "request interrupted");
    else
        snprintf(reply->error, sizeof reply->error, "cannot reach %s: %s", api->base,
                 errbuf[0] ? errbuf : curl_easy_strerror(rc));
}

/* Fills reply from the status and body of a completed transfer; 0 when it is a 2xx JSON reply. */
static int interpret_reply(const struct buf *body, struct hodei_reply *reply)
{
    json_error_t jerr;
    reply->body = body->len ? json_loadb(body->data, body->len, 0, &jerr) : NULL;
    if (reply->status >= 200 && reply->status < 300) {
        if (reply->body)
            return 0;
        snprintf(reply->error, sizeof reply->error, "HTTP %ld with a reply that is not JSON",
                 reply->status);
        return -1;
    }
    const char *error = json_string_value(json_object_get(reply->body, "error"));
    const char *detail = json_string_value(json_object_get(reply->body, "detail"));
    if (error)
        snprintf(reply->error, sizeof reply->error, "%s: %s", error, detail ? detail : "");
    else
        snprintf(reply->error, sizeof reply->error, "HTTP %ld", reply->status);
    return -1;
}

int hodei_api_call(struct hodei_api *api, const char *method, const char *path, json_t *body,
                   long timeout_ms, struct hodei_reply *reply)
{
    char errbuf[CURL_ERROR_SIZE] = "";
    struct buf received = {0};
    struct curl_slist *headers = NULL;
    char *url = NULL, *payload = NULL;
    int ret = -1;

    *reply = (struct hodei_reply){0};
    if (asprintf(&url, "%s%s", api->base, path) < 0) {
        url = NULL;
        snprintf(reply->error, sizeof reply->error, "out of memory");
        goto out;
    }
    set_common_options(api, url, errbuf);
    CURL *c = api->curl;
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &received);
    headers = auth_header(api, headers);
    if (strcmp(method, "GET") != 0) {
        payload = body ? json_dumps(body, JSON_COMPACT) : strdup("");
        if (!payload) {
            snprintf(reply->error, sizeof reply->error, "out of memory");
            goto out;
        }
        headers = curl_slist_append(headers, "Content-Type: application/json");
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, payload);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(payload));
    }
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers);
    CURLcode rc = curl_easy_perform(c);
    if (rc != CURLE_OK) {
        describe_transport_error(api, rc, errbuf, reply);
        goto out;
    }
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &reply->status);
    ret = interpret_reply(&received, reply);
out:
    curl_slist_free_all(headers);
    free(payload);
    free(url);
    buf_free(&received);
    return ret;
}

struct header_catch {
    const char *name;
    char       *value;
    size_t      len;
};

static size_t catch_header(char *p, size_t size, size_t n, void *arg)
{
    struct header_catch *h = arg;
    size_t name_len = strlen(h->name);
    if (name_len && n > name_len + 1 && strncasecmp(p, h->name, name_len) == 0
        && p[name_len] == ':') {
        const char *v = p + name_len + 1;
        size_t vlen = n - name_len - 1;
        while (vlen && (*v == ' ' || *v == '\t'))
            v++, vlen--;
        while (vlen && (v[vlen - 1] == '\r' || v[vlen - 1] == '\n' || v[vlen - 1] == ' '))
            vlen--;
        snprintf(h->value, h->len, "%.*s", (int)vlen, v);
    }
    return n;
}

int hodei_api_get_raw(struct hodei_api *api, const char *path, long timeout_ms,
                      const char *header, char *header_value, size_t header_len,
                      char **data, size_t *len, struct hodei_reply *reply)
{
    char errbuf[CURL_ERROR_SIZE] = "";
    struct buf received = {0};
    struct curl_slist *headers = NULL;
    struct header_catch catch = { .name = header ? header : "", .value = header_value,
                                  .len = header_len };
    char *url = NULL;
    int ret = -1;

    *reply = (struct hodei_reply){0};
    *data = NULL;
    *len = 0;
    if (header_value && header_len)
        header_value[0] = '\0';
    if (asprintf(&url, "%s%s", api->base, path) < 0) {
        snprintf(reply->error, sizeof reply->error, "out of memory");
        return -1;
    }
    set_common_options(api, url, errbuf);
    headers = auth_header(api, headers);
    curl_easy_setopt(api->curl, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(api->curl, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(api->curl, CURLOPT_WRITEFUNCTION, collect_body);
    curl_easy_setopt(api->curl, CURLOPT_WRITEDATA, &received);
    if (header && header_value && header_len) {
        curl_easy_setopt(api->curl, CURLOPT_HEADERFUNCTION, catch_header);
        curl_easy_setopt(api->curl, CURLOPT_HEADERDATA, &catch);
    }
    CURLcode rc = curl_easy_perform(api->curl);
    if (rc != CURLE_OK) {
        describe_transport_error(api, rc, errbuf, reply);
    } else {
        curl_easy_getinfo(api->curl, CURLINFO_RESPONSE_CODE, &reply->status);
        if (reply->status >= 200 && reply->status < 300) {
            *data = received.data ? received.data : strdup("");
            *len = received.len;
            received = (struct buf){0};
            ret = *data ? 0 : -1;
        } else {
            interpret_reply(&received, reply);
        }
    }
    curl_slist_free_all(headers);
    free(url);
    buf_free(&received);
    return ret;
}

static char *escape(const char *s)
{
    char *e = curl_easy_escape(NULL, s, 0);
    char *copy = e ? strdup(e) : NULL;   /* callers free() what this file returns */
    curl_free(e);
    return copy;
}

char *hodei_api_path_add_query(const char *path, const char *key, const char *value)
{
    char *v = escape(value), *out = NULL;
    if (v && asprintf(&out, "%s%c%s=%s", path, strchr(path, '?') ? '&' : '?', key, v) < 0)
        out = NULL;
    free(v);
    return out;
}

char *hodei_api_path_id(const char *prefix, const char *id, const char *suffix)
{
    char *v = escape(id), *out = NULL;
    if (v && asprintf(&out, "%s/%s%s", prefix, v, suffix) < 0)
        out = NULL;
    free(v);
    return out;
}

/* --- Server-Sent Events ----------------------------------------------------------------- */

struct sse_reader {
    CURL          *curl;
    struct buf     line;       /* bytes of the current, unfinished line */
    struct buf     data;       /* data: lines of the current event, joined by '\n' */
    char           type[64];   /* event: of the current event */
    hodei_event_fn on_event;
    void          *arg;
    int            stopped;    /* on_event asked to stop */
    int            failed;     /* not a 2xx stream: the body is an error reply */
    struct buf     error_body;
};

/* A blank line ends an event: hand it over unless its data is not JSON. */
static void sse_dispatch(struct sse_reader *r)
{
    if (r->data.len) {
        json_error_t jerr;
        json_t *data = json_loadb(r->data.data, r->data.len, 0, &jerr);
        if (data) {
            r->stopped = r->on_event(r->type[0] ? r->type : "message", data, r->arg) != 0;
            json_decref(data);
        }
    }
    r->data.len = 0;
    r->type[0] = '\0';
}

static const char *sse_field_value(const char *line, const char *field)
{
    size_t n = strlen(field);
    if (strncmp(line, field, n) != 0 || line[n] != ':')
        return NULL;
    return line[n + 1] == ' ' ? line + n + 2 : line + n + 1;
}

static void sse_line(struct sse_reader *r, char *line)
{
    const char *v;
    size_t n = strlen(line);
    if (n && line[n - 1] == '\r')
        line[n - 1] = '\0';
    if (line[0] == '\0')
        sse_dispatch(r);
    else if ((v = sse_field_value(line, "event")))
        snprintf(r->type, sizeof r->type, "%s", v);
    else if ((v = sse_field_value(line, "data"))) {
        if (r->data.len)
            buf_append(&r->data, "\n", 1);
        buf_append(&r->data, v, strlen(v));
    }
    /* comments (": keepalive"), id: and retry: need nothing from a follower */
}

static size_t sse_receive(char *p, size_t size, size_t n, void *arg)
{
    struct sse_reader *r = arg;
    long status = 0;
    curl_easy_getinfo(r->curl, CURLINFO_RESPONSE_CODE, &status);
    if (status < 200 || status >= 300) {
        r->failed = 1;
        return collect_body(p, size, n, &r->error_body);
    }
    const char *end = p + n;
    while (p < end && !r->stopped) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t chunk = (size_t)((nl ? nl : end) - p);
        if (buf_append(&r->line, p, chunk) < 0)
            return 0;
        p += chunk;
        if (!nl)
            break;
        sse_line(r, r->line.data);
        r->line.len = 0;
        p++;
    }
    return r->stopped ? 0 : n;
}

int hodei_api_follow_events(struct hodei_api *api, hodei_event_fn on_event, void *arg,
                            struct hodei_reply *reply)
{
    char errbuf[CURL_ERROR_SIZE] = "";
    struct sse_reader r = { .curl = api->curl, .on_event = on_event, .arg = arg };
    struct curl_slist *headers = curl_slist_append(NULL, "Accept: text/event-stream");
    char *url = NULL;
    int ret = -1;

    *reply = (struct hodei_reply){0};
    if (asprintf(&url, "%s/events", api->base) < 0) {
        url = NULL;
        snprintf(reply->error, sizeof reply->error, "out of memory");
        goto out;
    }
    set_common_options(api, url, errbuf);
    headers = auth_header(api, headers);
    curl_easy_setopt(api->curl, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(api->curl, CURLOPT_WRITEFUNCTION, sse_receive);
    curl_easy_setopt(api->curl, CURLOPT_WRITEDATA, &r);
    CURLcode rc = curl_easy_perform(api->curl);
    curl_easy_getinfo(api->curl, CURLINFO_RESPONSE_CODE, &reply->status);
    if (r.stopped)
        ret = 0;
    else if (r.failed)
        interpret_reply(&r.error_body, reply);
    else if (rc != CURLE_OK)
        describe_transport_error(api, rc, errbuf, reply);
    else
        snprintf(reply->error, sizeof reply->error, "the server closed the event stream");
out:
    curl_slist_free_all(headers);
    free(url);
    buf_free(&r.line);
    buf_free(&r.data);
    buf_free(&r.error_body);
    return ret;
}

/* --- option numbers ------------------------------------------------------------------------ */

int hodei_parse_long(const char *s, long min, long max, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end != '\0' || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}
