/* request.c — request validation (see request.h and api.md for the rules). */
#include "request.h"

#include <errno.h>
#include <math.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"

static int fail(struct req_error *err, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(struct req_error *err, const char *code, const char *fmt, ...)
{
    va_list ap;
    err->code = code;
    va_start(ap, fmt);
    vsnprintf(err->detail, sizeof err->detail, fmt, ap);
    va_end(ap);
    return -1;
}

int req_id_valid(const char *s)
{
    return hodei_id_valid(s, strlen(s)) && strcmp(s, HODEI_OVERFLOW_LABEL) != 0;
}

int req_job_id(const char *s, uint64_t *out)
{
    size_t n = strlen(s);
    if (n == 0 || n > 19 || s[0] == '0' || strspn(s, "0123456789") != n)
        return 0;
    errno = 0;
    unsigned long long v = strtoull(s, NULL, 10);
    if (errno || v > INT64_MAX)
        return 0;
    *out = v;
    return 1;
}

json_t *req_parse(const char *text, size_t len, struct req_error *err)
{
    json_error_t jerr;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        fail(err, "bad_json", "malformed JSON at line %d column %d: %s", jerr.line, jerr.column,
             jerr.text);
        return NULL;
    }
    if (!json_is_object(root)) {
        json_decref(root);
        fail(err, "bad_json", "the body must be a JSON object");
        return NULL;
    }
    return root;
}

/* Every key of body must be one of allowed (NULL-terminated). */
static int only_fields(json_t *body, const char *const *allowed, struct req_error *err)
{
    const char *key;
    json_t *value;
    json_object_foreach(body, key, value) {
        int known = 0;
        for (const char *const *a = allowed; *a; a++)
            if (strcmp(key, *a) == 0)
                known = 1;
        if (!known)
            return fail(err, "bad_field", "unknown field '%.64s'", key);
    }
    return 0;
}

/* An optional integer field in [min, max]; def when absent. */
static int int_field(json_t *body, const char *key, int required, long long min, long long max,
                     long long def, long long *out, struct req_error *err)
{
    json_t *v = json_object_get(body, key);
    if (!v) {
        if (required)
            return fail(err, "bad_field", "'%s' is required", key);
        *out = def;
        return 0;
    }
    if (!json_is_integer(v))
        return fail(err, "bad_field", "'%s' must be an integer", key);
    long long n = json_integer_value(v);
    if (n < min || n > max)
        return fail(err, "bad_field", "'%s' must be between %lld and %lld", key, min, max);
    *out = n;
    return 0;
}

static int number_field(json_t *body, const char *key, double min, double max, double *out,
                        struct req_error *err)
{
    json_t *v = json_object_get(body, key);
    if (!v)
        return fail(err, "bad_field", "'%s' is required", key);
    if (!json_is_number(v))
        return fail(err, "bad_field", "'%s' must be a number", key);
    double d = json_number_value(v);
    if (!isfinite(d) || d < min || d > max)
        return fail(err, "bad_field", "'%s' must be between %g and %g", key, min, max);
    *out = d;
    return 0;
}

/* A string field of 1..max bytes (min_len 0 allows ""), without NUL bytes. */
static int string_field(json_t *body, const char *key, int required, size_t min_len,
                        size_t max_len, const char **out, struct req_error *err)
{
    json_t *v = json_object_get(body, key);
    if (!v) {
        if (required)
            return fail(err, "bad_field", "'%s' is required", key);
        *out = NULL;
        return 0;
    }
    if (!json_is_string(v))
        return fail(err, "bad_field", "'%s' must be a string", key);
    const char *s = json_string_value(v);
    size_t len = json_string_length(v);
    if (strlen(s) != len)
        return fail(err, "bad_field", "'%s' must not contain NUL characters", key);
    if (len < min_len || len > max_len)
        return fail(err, "bad_field", "'%s' must be %zu to %zu bytes long", key, min_len, max_len);
    *out = s;
    return 0;
}

static int id_field(json_t *body, const char *key, int required, char *out,
                    struct req_error *err)
{
    const char *s;
    if (string_field(body, key, required, 0, 1024, &s, err) < 0)
        return -1;
    if (!s) {
        out[0] = '\0';
        return 0;
    }
    if (!req_id_valid(s))
        return fail(err, "bad_id", "'%s' must match [A-Za-z0-9._:-]{1,64} (and not be %s)", key,
                    HODEI_OVERFLOW_LABEL);
    strcpy(out, s);
    return 0;
}

int req_job_spec(json_t *body, struct job_spec *out, struct req_error *err)
{
    static const char *const fields[] = { "tenant_id", "name", "command", "cpu_m", "memory_mb",
                                          "priority", "timeout_s", "max_retries", NULL };
    const char *name, *command;
    long long cpu, mem, prio, timeout, retries;
    if (only_fields(body, fields, err) < 0
        || id_field(body, "tenant_id", 0, out->tenant_id, err) < 0
        || string_field(body, "command", 1, 1, SCHED_COMMAND_MAX, &command, err) < 0
        || string_field(body, "name", 0, 0, SCHED_NAME_MAX, &name, err) < 0
        || int_field(body, "cpu_m", 0, 1, 1000000, 100, &cpu, err) < 0
        || int_field(body, "memory_mb", 0, 1, 10000000, 64, &mem, err) < 0
        || int_field(body, "priority", 0, SCHED_PRIORITY_MIN, SCHED_PRIORITY_MAX, 0, &prio, err) < 0
        || int_field(body, "timeout_s", 0, 0, 86400, 0, &timeout, err) < 0
        || int_field(body, "max_retries", 0, 0, 10, 0, &retries, err) < 0)
        return -1;
    strcpy(out->name, name ? name : "");
    out->command = (char *) command;
    out->cpu_m = (uint32_t) cpu;
    out->memory_mb = (uint32_t) mem;
    out->priority = (int) prio;
    out->timeout_s = (uint32_t) timeout;
    out->max_retries = (uint32_t) retries;
    return 0;
}

int req_worker_spec(json_t *body, struct worker_spec *out, struct req_error *err)
{
    static const char *const fields[] = { "worker_id", "cpu_m", "memory_mb", "labels", NULL };
    long long cpu, mem;
    if (only_fields(body, fields, err) < 0
        || id_field(body, "worker_id", 0, out->id, err) < 0
        || int_field(body, "cpu_m", 1, 1, 100000000, 0, &cpu, err) < 0
        || int_field(body, "memory_mb", 1, 1, 1000000000, 0, &mem, err) < 0)
        return -1;
    out->cpu_m = (uint32_t) cpu;
    out->memory_mb = (uint32_t) mem;
    out->nlabels = 0;
    json_t *labels = json_object_get(body, "labels");
    if (!labels)
        return 0;
    if (!json_is_object(labels))
        return fail(err, "bad_field", "'labels' must be an object of strings");
    if (json_object_size(labels) > SCHED_LABELS_MAX)
        return fail(err, "bad_field", "'labels' holds at most %d entries", SCHED_LABELS_MAX);
    const char *key;
    json_t *value;
    json_object_foreach(labels, key, value) {
        if (!hodei_id_valid(key, strlen(key)))
            return fail(err, "bad_field", "label names must match [A-Za-z0-9._:-]{1,64}");
        const char *v;
        if (string_field(labels, key, 1, 0, HODEI_LABEL_VALUE_MAX, &v, err) < 0)
            return fail(err, "bad_field", "label '%s' must be a string of at most %d bytes", key,
                        HODEI_LABEL_VALUE_MAX);
        out->labels[out->nlabels].key = (char *) key;
        out->labels[out->nlabels].value = (char *) v;
        out->nlabels++;
    }
    return 0;
}

int req_heartbeat(json_t *body, double *cpu_usage_percent, double *memory_usage_mb,
                  struct req_error *err)
{
    static const char *const fields[] = { "cpu_usage_percent", "memory_usage_mb", NULL };
    /* 100 % per core, up to 1024 cores */
    if (only_fields(body, fields, err) < 0
        || number_field(body, "cpu_usage_percent", 0, 102400, cpu_usage_percent, err) < 0
        || number_field(body, "memory_usage_mb", 0, 1e12, memory_usage_mb, err) < 0)
        return -1;
    return 0;
}

/* The output's tail: base64 (RFC 4648, padded) of at most HODEI_OUTPUT_TAIL bytes. */
static int output_field(json_t *body, struct req_report *out, struct req_error *err)
{
    const char *b64;
    long long total;
    size_t max_b64 = 4 * ((HODEI_OUTPUT_TAIL + 2) / 3);
    out->has_output = json_object_get(body, "output") != NULL;
    if (string_field(body, "output", 0, 0, max_b64, &b64, err) < 0)
        return -1;
    if (!out->has_output) {
        if (json_object_get(body, "output_bytes"))
            return fail(err, "bad_field", "'output_bytes' comes with 'output'");
        return 0;
    }
    size_t n = strlen(b64);
    size_t pad = n >= 1 && b64[n - 1] == '=' ? (n >= 2 && b64[n - 2] == '=' ? 2 : 1) : 0;
    unsigned char *tail = xmalloc(n / 4 * 3 + 1);
    out->output.tail = tail;
    out->output.len = 0;
    int len = n % 4 == 0 ? EVP_DecodeBlock(tail, (const unsigned char *) b64, (int) n) : -1;
    if (len < 0 || strspn(b64, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
                       != n - pad || (size_t) len - pad > HODEI_OUTPUT_TAIL)
        return fail(err, "bad_field", "'output' must be the base64 of at most %d bytes",
                    HODEI_OUTPUT_TAIL);
    out->output.len = (size_t) len - pad;
    if (int_field(body, "output_bytes", 1, (long long) out->output.len, 1LL << 53, 0, &total,
                  err) < 0)
        return -1;
    out->output.total = (uint64_t) total;
    return 0;
}

int req_report(json_t *body, enum req_report_kind kind, struct req_report *out,
               struct req_error *err)
{
    static const char *const start_fields[] = { "worker_id", NULL };
    static const char *const succeed_fields[] = { "worker_id", "exit_code", "output",
                                                  "output_bytes", NULL };
    static const char *const fail_fields[] = { "worker_id", "exit_code", "error_type", "output",
                                               "output_bytes", NULL };
    const char *const *fields = kind == REQ_START ? start_fields
                              : kind == REQ_SUCCEED ? succeed_fields : fail_fields;
    long long code;
    memset(out, 0, sizeof *out);
    if (only_fields(body, fields, err) < 0
        || id_field(body, "worker_id", 0, out->worker_id, err) < 0)
        return -1;
    if (kind != REQ_START && output_field(body, out, err) < 0)
        return -1;
    out->has_exit_code = json_object_get(body, "exit_code") != NULL;
    if (int_field(body, "exit_code", 0, INT32_MIN, INT32_MAX, 0, &code, err) < 0)
        return -1;
    out->exit_code = (int) code;
    if (kind == REQ_SUCCEED)
        out->has_exit_code = 1;   /* default 0 */
    if (kind == REQ_FAIL) {
        const char *type;
        if (string_field(body, "error_type", 1, 1, 64, &type, err) < 0)
            return -1;
        int t = hodei_name_index(hodei_error_type_names, HODEI_ERR_COUNT, type);
        if (t < 0)
            return fail(err, "bad_field", "'error_type' must be one of exit_code, timeout, "
                        "worker_lost, spawn_error, cancelled, other");
        out->error_type = (enum hodei_error_type) t;
    }
    return 0;
}

void req_report_free(struct req_report *r)
{
    free((void *) r->output.tail);
    r->output.tail = NULL;
    r->has_output = 0;
}
