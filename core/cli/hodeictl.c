/*
 * hodeictl — command-line client of the hodei-scheduler API, and the keeper of its tokens file.
 *
 *   hodeictl [--api URL] [--token-file FILE] [--json]
 *            submit|get|list|cancel|output|workers|events ...
 *   hodeictl token create|list|revoke ... --tokens FILE
 *
 * Tables and key/value lines for people by default; --json prints the API's JSON for scripts.
 * Strings that come from tenants or the server (names, commands, labels, output, errors) are
 * printed with control characters escaped, so nothing in them can drive the terminal.
 * Exit status: 0 done, 1 the API refused or could not be reached (or the tokens file could not
 * be used), 2 bad arguments.
 */
#include "client.h"
#include "token.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <libgen.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define REQUEST_TIMEOUT_MS 30000L
#define LIST_PAGE_MAX      1000L
#define EXIT_API           1
#define EXIT_USAGE         2
/* A field escaped: each byte may take 6 ("\u009b"); commands are the longest. */
#define SAFE_MAX           (6 * 4096 + 1)

struct ctl {
    struct hodei_api api;
    int              json;
};

static const char usage_text[] =
    "usage: hodeictl [--api URL] [--token-file FILE] [--json] COMMAND ...\n"
    "  submit [--tenant T] [--name N] [--cpu-m N] [--memory-mb N] [--priority P]\n"
    "         [--timeout S] [--retries N] -- COMMAND...   submit a job (/bin/sh -c COMMAND)\n"
    "  get ID                                             show one job\n"
    "  list [--tenant T] [--state S] [--limit N]          list jobs (all pages)\n"
    "  cancel ID                                          cancel a job\n"
    "  output ID [--raw]                                  the tail of a finished job's output\n"
    "  workers                                            list workers\n"
    "  events [--count N]                                 follow the event stream\n"
    "  token create --role tenant|worker|admin [--tenant ID] --tokens FILE\n"
    "                                                     add a token, print it once\n"
    "  token list --tokens FILE                           list tokens (ids and roles)\n"
    "  token revoke ID --tokens FILE                      remove a token\n"
    "--api defaults to $HODEI_API, else " HODEI_API_DEFAULT_URL ".\n"
    "The token comes from --token-file, else $HODEI_TOKEN.  A tenant's submit may leave out\n"
    "--tenant (the token names it).  After token create or revoke, send SIGHUP to\n"
    "hodei-scheduler (systemctl reload hodei-scheduler).\n";

/* Prints why (when fmt is not NULL) and the usage; returns the usage exit status. */
static int usage_error(const char *fmt, ...)
{
    if (fmt) {
        va_list ap;
        va_start(ap, fmt);
        fputs("hodeictl: ", stderr);
        vfprintf(stderr, fmt, ap);
        fputc('\n', stderr);
        va_end(ap);
    }
    fputs(usage_text, stderr);
    return EXIT_USAGE;
}

/* --- formatting -------------------------------------------------------------------------------- */

/* Length of the UTF-8 sequence at p (valid, no C1 control), or 0. */
static size_t utf8_char(const unsigned char *p, size_t n)
{
    size_t len = p[0] >= 0xc2 && p[0] <= 0xdf ? 2 : p[0] >= 0xe0 && p[0] <= 0xef ? 3
               : p[0] >= 0xf0 && p[0] <= 0xf4 ? 4 : 0;
    if (!len || len > n)
        return 0;
    uint32_t cp = p[0] & (0xff >> (len + 1));
    for (size_t i = 1; i < len; i++) {
        if ((p[i] & 0xc0) != 0x80)
            return 0;
        cp = cp << 6 | (p[i] & 0x3f);
    }
    if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) || cp > 0x10ffff
        || (cp >= 0xd800 && cp <= 0xdfff) || (cp >= 0x80 && cp <= 0x9f))
        return 0;
    return len;
}

/*
 * Writes p[0..n) with what could drive a terminal escaped: C0 controls and DEL as \n, \t, \r
 * or \xNN (newlines and tabs pass when keep_lines), C1 controls and bytes that are not UTF-8 as
 * \xNN.  Returns the bytes written; out holds at least 4 * n + 1.
 */
static size_t escape_into(const unsigned char *p, size_t n, char *out, int keep_lines)
{
    char *o = out;
    for (size_t i = 0; i < n;) {
        unsigned char c = p[i];
        size_t len = c >= 0x80 ? utf8_char(p + i, n - i) : 0;
        if (len) {
            memcpy(o, p + i, len);
            o += len;
            i += len;
            continue;
        }
        if (keep_lines && (c == '\n' || c == '\t'))
            *o++ = (char)c;
        else if (c == '\n' || c == '\t' || c == '\r')
            o += sprintf(o, "\\%c", c == '\n' ? 'n' : c == '\t' ? 't' : 'r');
        else if (c < 0x20 || c >= 0x7f)
            o += sprintf(o, "\\x%02x", c);
        else if (c == '\\' && !keep_lines)   /* so that an escape is never ambiguous */
            o += sprintf(o, "\\\\");
        else
            *o++ = (char)c;
        i++;
    }
    *o = '\0';
    return (size_t)(o - out);
}

/* s escaped into buf (size bytes; longer strings are cut at a character). */
static const char *safe(const char *s, char *buf, size_t size)
{
    size_t n = strlen(s);
    if (n > (size - 1) / 4)
        n = (size - 1) / 4;
    escape_into((const unsigned char *)s, n, buf, 0);
    return buf;
}

static void print_json(json_t *v, size_t flags)
{
    json_dumpf(v, stdout, flags | JSON_PRESERVE_ORDER);
    fputc('\n', stdout);
}

/* Epoch seconds as UTC "YYYY-MM-DDTHH:MM:SS.mmmZ" into buf. */
static const char *format_time(double t, char *buf, size_t size)
{
    time_t secs = (time_t)t;
    struct tm tm;
    char day[32];
    gmtime_r(&secs, &tm);
    strftime(day, sizeof day, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf, size, "%s.%03dZ", day, (int)((t - (double)secs) * 1000.0));
    return buf;
}

/* A JSON scalar as text ("-" for null or absent, strings escaped); times are formatted when
 * is_time. */
static const char *scalar_text(json_t *v, int is_time, char *buf, size_t size)
{
    if (json_is_string(v))
        return safe(json_string_value(v), buf, size);
    if (json_is_integer(v))
        snprintf(buf, size, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
    else if (json_is_real(v) && is_time)
        format_time(json_real_value(v), buf, size);
    else if (json_is_real(v))
        snprintf(buf, size, "%.1f", json_real_value(v));
    else
        return "-";
    return buf;
}

static const char *field_text(json_t *obj, const char *key, char *buf, size_t size)
{
    size_t n = strlen(key);
    int is_time = n > 3 && strcmp(key + n - 3, "_at") == 0;
    return scalar_text(json_object_get(obj, key), is_time, buf, size);
}

static void print_job(json_t *job)
{
    static const char *const fields[] = {
        "id", "tenant_id", "name", "command", "state", "worker_id", "error_type", "exit_code",
        "attempts", "max_retries", "priority", "cpu_m", "memory_mb", "timeout_s",
        "submitted_at", "assigned_at", "started_at", "finished_at",
    };
    static char buf[SAFE_MAX];
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++)
        printf("%-13s %s\n", fields[i], field_text(job, fields[i], buf, sizeof buf));
}

/* "exit 3", "timeout", ... — what became of a finished job, "-" while it is not. */
static const char *job_result(json_t *job, char *buf, size_t size)
{
    char type[64];
    const char *error_type = json_string_value(json_object_get(job, "error_type"));
    json_t *exit_code = json_object_get(job, "exit_code");
    if (error_type)
        error_type = safe(error_type, type, sizeof type);
    if (error_type && json_is_integer(exit_code))
        snprintf(buf, size, "%s %" JSON_INTEGER_FORMAT, error_type, json_integer_value(exit_code));
    else if (error_type)
        snprintf(buf, size, "%s", error_type);
    else if (json_is_integer(exit_code))
        snprintf(buf, size, "exit %" JSON_INTEGER_FORMAT, json_integer_value(exit_code));
    else
        return "-";
    return buf;
}

static void print_job_table(json_t *jobs)
{
    size_t i;
    json_t *job;
    printf("%-8s %-16s %-16s %-10s %-12s %-8s %-16s %s\n", "ID", "TENANT", "NAME", "STATE",
           "WORKER", "ATTEMPTS", "RESULT", "COMMAND");
    json_array_foreach(jobs, i, job) {
        char b[8][256];   /* one buffer per column: each may be formatted into */
        printf("%-8s %-16s %-16s %-10s %-12s %-8s %-16s %.60s\n",
               field_text(job, "id", b[0], sizeof b[0]), field_text(job, "tenant_id", b[1], sizeof b[1]),
               field_text(job, "name", b[2], sizeof b[2]), field_text(job, "state", b[3], sizeof b[3]),
               field_text(job, "worker_id", b[4], sizeof b[4]),
               field_text(job, "attempts", b[5], sizeof b[5]), job_result(job, b[6], sizeof b[6]),
               field_text(job, "command", b[7], sizeof b[7]));
    }
}

static void print_worker_table(json_t *workers)
{
    size_t i;
    json_t *w;
    char b[64];
    printf("%-16s %-10s %-17s %-19s %-6s %-11s %s\n", "ID", "STATE", "CPU_M FREE/TOTAL",
           "MEMORY_MB FREE/TOTAL", "CPU%", "MEM_USED_MB", "JOBS");
    json_array_foreach(workers, i, w) {
        char b2[64];
        char cpu[40], mem[40];
        snprintf(cpu, sizeof cpu, "%" JSON_INTEGER_FORMAT "/%" JSON_INTEGER_FORMAT,
                 json_integer_value(json_object_get(w, "free_cpu_m")),
                 json_integer_value(json_object_get(w, "cpu_m")));
        snprintf(mem, sizeof mem, "%" JSON_INTEGER_FORMAT "/%" JSON_INTEGER_FORMAT,
                 json_integer_value(json_object_get(w, "free_memory_mb")),
                 json_integer_value(json_object_get(w, "memory_mb")));
        printf("%-16s %-10s %-17s %-19s ", field_text(w, "id", b, sizeof b),
               field_text(w, "state", b2, sizeof b2), cpu, mem);
        printf("%-6.1f %-11.0f %zu\n", json_number_value(json_object_get(w, "cpu_usage_percent")),
               json_number_value(json_object_get(w, "memory_usage_mb")),
               json_array_size(json_object_get(w, "jobs")));
    }
}

/* --- requests ------------------------------------------------------------------------------------ */

/* One API call; on failure prints the reason and returns -1.  *body is the reply (json_decref). */
static int request(struct ctl *ctl, const char *method, const char *path, json_t *payload, json_t **body)
{
    struct hodei_reply reply;
    int rc = hodei_api_call(&ctl->api, method, path, payload, REQUEST_TIMEOUT_MS, &reply);
    if (rc < 0) {
        char msg[4 * sizeof reply.error];
        fprintf(stderr, "hodeictl: %s\n", safe(reply.error, msg, sizeof msg));
        hodei_reply_clear(&reply);
        return -1;
    }
    *body = reply.body;
    return 0;
}

/* A request about one job (GET /jobs/ID or POST /jobs/ID/cancel), printing the job it returns. */
static int job_request(struct ctl *ctl, const char *method, const char *id, const char *suffix)
{
    json_t *job;
    char *path = hodei_api_path_id("/jobs", id, suffix);
    int rc = path ? request(ctl, method, path, NULL, &job) : -1;
    free(path);
    if (rc < 0)
        return EXIT_API;
    if (ctl->json)
        print_json(job, JSON_INDENT(2));
    else
        print_job(job);
    json_decref(job);
    return 0;
}

/* --- commands ---------------------------------------------------------------------------------- */

/* Options every command accepts after its name too. */
#define COMMON_OPTIONS { "json", no_argument, NULL, 'j' }

/* Parses the options of a command that takes only --json and exactly nargs operands. */
static int parse_plain(struct ctl *ctl, int argc, char **argv, int nargs)
{
    static const struct option options[] = { COMMON_OPTIONS, { NULL, 0, NULL, 0 } };
    int opt;
    optind = 0;
    while ((opt = getopt_long(argc, argv, "", options, NULL)) != -1) {
        if (opt != 'j')
            return -1;
        ctl->json = 1;
    }
    return argc - optind == nargs ? 0 : -1;
}

/* The words after `--` as one shell command; words are single-quoted unless plainly safe. */
static char *join_command(int argc, char **argv)
{
    if (argc == 1)
        return strdup(argv[0]);
    size_t size = 1;
    for (int i = 0; i < argc; i++)
        size += 4 * strlen(argv[i]) + 3;
    char *cmd = malloc(size), *p = cmd;
    if (!cmd)
        return NULL;
    for (int i = 0; i < argc; i++) {
        const char *w = argv[i];
        int plain = *w && strspn(w, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                    "0123456789_-+=.,/:@%") == strlen(w);
        if (i)
            *p++ = ' ';
        if (!plain)
            *p++ = '\'';
        for (; *w; w++) {
            if (*w == '\'' && !plain) {
                memcpy(p, "'\\''", 4);   /* close, escaped quote, reopen */
                p += 4;
            } else {
                *p++ = *w;
            }
        }
        if (!plain)
            *p++ = '\'';
    }
    *p = '\0';
    return cmd;
}

static int cmd_submit(struct ctl *ctl, int argc, char **argv)
{
    static const struct option options[] = {
        COMMON_OPTIONS,
        { "tenant", required_argument, NULL, 't' }, { "name", required_argument, NULL, 'n' },
        { "cpu-m", required_argument, NULL, 'c' }, { "memory-mb", required_argument, NULL, 'm' },
        { "priority", required_argument, NULL, 'p' }, { "timeout", required_argument, NULL, 'T' },
        { "retries", required_argument, NULL, 'r' }, { NULL, 0, NULL, 0 },
    };
    static const struct { int opt; const char *field; } numbers[] = {
        { 'c', "cpu_m" }, { 'm', "memory_mb" }, { 'p', "priority" }, { 'T', "timeout_s" },
        { 'r', "max_retries" },
    };
    json_t *payload = json_object(), *job = NULL;
    int opt, rc = EXIT_USAGE;
    long v;

    optind = 0;
    while ((opt = getopt_long(argc, argv, "+", options, NULL)) != -1) {
        if (opt == 'j') {
            ctl->json = 1;
        } else if (opt == 't' || opt == 'n') {
            json_object_set_new(payload, opt == 't' ? "tenant_id" : "name", json_string(optarg));
        } else if (opt == '?') {
            rc = usage_error(NULL);
            goto out;
        } else {
            if (hodei_parse_long(optarg, -1000000000L, 1000000000L, &v) < 0) {
                rc = usage_error("not an integer: '%s'", optarg);
                goto out;
            }
            for (size_t i = 0; i < sizeof numbers / sizeof numbers[0]; i++)
                if (numbers[i].opt == opt)
                    json_object_set_new(payload, numbers[i].field, json_integer(v));
        }
    }
    if (optind >= argc) {
        rc = usage_error("submit needs a command after --");
        goto out;
    }
    char *command = join_command(argc - optind, argv + optind);
    json_object_set_new(payload, "command", json_string(command ? command : ""));
    free(command);
    rc = EXIT_API;
    if (request(ctl, "POST", "/jobs", payload, &job) < 0)
        goto out;
    rc = 0;
    if (ctl->json)
        print_json(job, JSON_INDENT(2));
    else {
        char b[3][256];
        printf("job %s submitted (tenant %s, %s)\n", field_text(job, "id", b[0], sizeof b[0]),
               field_text(job, "tenant_id", b[1], sizeof b[1]),
               field_text(job, "state", b[2], sizeof b[2]));
    }
out:
    json_decref(payload);
    json_decref(job);
    return rc;
}

static int cmd_get(struct ctl *ctl, int argc, char **argv)
{
    if (parse_plain(ctl, argc, argv, 1) < 0)
        return usage_error("get takes exactly one job id");
    return job_request(ctl, "GET", argv[optind], "");
}

static int cmd_cancel(struct ctl *ctl, int argc, char **argv)
{
    if (parse_plain(ctl, argc, argv, 1) < 0)
        return usage_error("cancel takes exactly one job id");
    return job_request(ctl, "POST", argv[optind], "/cancel");
}

/* The path of one page of GET /jobs; NULL on ENOMEM. */
static char *list_page_path(const char *tenant, const char *state, long limit, const char *after)
{
    char n[24], *path = strdup("/jobs"), *next;
    const char *keys[] = { "tenant_id", "state", "limit", "after" };
    snprintf(n, sizeof n, "%ld", limit);
    const char *values[] = { tenant, state, n, after };
    for (size_t i = 0; path && i < 4; i++) {
        if (!values[i])
            continue;
        next = hodei_api_path_add_query(path, keys[i], values[i]);
        free(path);
        path = next;
    }
    return path;
}

/* Collects up to limit jobs (all when limit is 0) across pages into *jobs. */
static int list_collect(struct ctl *ctl, const char *tenant, const char *state, long limit, json_t *jobs)
{
    char after[32] = "";
    for (;;) {
        long want = limit ? limit - (long)json_array_size(jobs) : LIST_PAGE_MAX;
        char *path = list_page_path(tenant, state, want < LIST_PAGE_MAX ? want : LIST_PAGE_MAX,
                                    after[0] ? after : NULL);
        json_t *page;
        if (!path || request(ctl, "GET", path, NULL, &page) < 0) {
            free(path);
            return -1;
        }
        free(path);
        json_array_extend(jobs, json_object_get(page, "jobs"));
        const char *next = json_string_value(json_object_get(page, "next"));
        int more = next && json_array_size(json_object_get(page, "jobs")) > 0 &&
                   (!limit || (long)json_array_size(jobs) < limit);
        if (more)
            snprintf(after, sizeof after, "%s", next);
        json_decref(page);
        if (!more)
            return 0;
    }
}

static int cmd_list(struct ctl *ctl, int argc, char **argv)
{
    static const struct option options[] = {
        COMMON_OPTIONS, { "tenant", required_argument, NULL, 't' },
        { "state", required_argument, NULL, 's' }, { "limit", required_argument, NULL, 'l' },
        { NULL, 0, NULL, 0 },
    };
    const char *tenant = NULL, *state = NULL;
    long limit = 0;
    int opt;

    optind = 0;
    while ((opt = getopt_long(argc, argv, "", options, NULL)) != -1) {
        if (opt == 'j')
            ctl->json = 1;
        else if (opt == 't')
            tenant = optarg;
        else if (opt == 's')
            state = optarg;
        else if (opt == 'l' && hodei_parse_long(optarg, 1, 1000000000L, &limit) == 0)
            continue;
        else
            return usage_error("list takes --tenant T, --state S and --limit N (N >= 1)");
    }
    if (optind != argc)
        return usage_error("unexpected argument '%s'", argv[optind]);

    json_t *jobs = json_array();
    int rc = list_collect(ctl, tenant, state, limit, jobs) < 0 ? EXIT_API : 0;
    if (rc == 0 && ctl->json) {
        json_t *doc = json_pack("{s:O}", "jobs", jobs);
        print_json(doc, JSON_INDENT(2));
        json_decref(doc);
    } else if (rc == 0) {
        print_job_table(jobs);
    }
    json_decref(jobs);
    return rc;
}

static int cmd_workers(struct ctl *ctl, int argc, char **argv)
{
    json_t *body;
    if (parse_plain(ctl, argc, argv, 0) < 0)
        return usage_error("workers takes no arguments");
    if (request(ctl, "GET", "/workers", NULL, &body) < 0)
        return EXIT_API;
    if (ctl->json)
        print_json(body, JSON_INDENT(2));
    else
        print_worker_table(json_object_get(body, "workers"));
    json_decref(body);
    return 0;
}

struct event_printer {
    int  json;
    long left;   /* events still to print; 0: follow until interrupted */
};

/* One line per event: the data JSON with --json, else "TIME TYPE job=.. ...". */
static int print_event(const char *type, json_t *data, void *arg)
{
    struct event_printer *p = arg;
    char b[4][256];
    if (p->json) {
        print_json(data, JSON_COMPACT);
    } else {
        json_t *job = json_object_get(data, "job");
        char t[256];
        printf("%s %-18s", scalar_text(json_object_get(data, "time"), 1, b[0], sizeof b[0]),
               safe(type, t, sizeof t));
        if (job)
            printf(" job=%s tenant=%s state=%s", field_text(job, "id", b[1], sizeof b[1]),
                   field_text(job, "tenant_id", b[2], sizeof b[2]),
                   field_text(job, "state", b[3], sizeof b[3]));
        const char *worker = json_string_value(json_object_get(data, "worker_id"));
        if (!worker && job)
            worker = json_string_value(json_object_get(job, "worker_id"));
        if (worker)
            printf(" worker=%s", safe(worker, b[1], sizeof b[1]));
        if (job && json_string_value(json_object_get(job, "error_type")))
            printf(" result=%s", job_result(job, b[0], sizeof b[0]));
        putchar('\n');
    }
    fflush(stdout);
    return p->left > 0 && --p->left == 0;
}

static int cmd_events(struct ctl *ctl, int argc, char **argv)
{
    static const struct option options[] = {
        COMMON_OPTIONS, { "count", required_argument, NULL, 'n' }, { NULL, 0, NULL, 0 },
    };
    struct event_printer printer = {0};
    struct hodei_reply reply;
    int opt;

    optind = 0;
    while ((opt = getopt_long(argc, argv, "", options, NULL)) != -1) {
        if (opt == 'j')
            ctl->json = 1;
        else if (opt != 'n' || hodei_parse_long(optarg, 1, 1000000000L, &printer.left) < 0)
            return usage_error("events takes only --count N (N >= 1)");
    }
    if (optind != argc)
        return usage_error("unexpected argument '%s'", argv[optind]);
    printer.json = ctl->json;
    if (hodei_api_follow_events(&ctl->api, print_event, &printer, &reply) < 0) {
        char msg[4 * sizeof reply.error];
        fprintf(stderr, "hodeictl: %s\n", safe(reply.error, msg, sizeof msg));
        hodei_reply_clear(&reply);
        return EXIT_API;
    }
    hodei_reply_clear(&reply);
    return 0;
}

/* The tail of a finished job's output: escaped for a terminal, or as it is with --raw. */
static int cmd_output(struct ctl *ctl, int argc, char **argv)
{
    static const struct option options[] = {
        { "raw", no_argument, NULL, 'r' }, { NULL, 0, NULL, 0 },
    };
    int opt, raw = 0;
    optind = 0;
    while ((opt = getopt_long(argc, argv, "", options, NULL)) != -1) {
        if (opt != 'r')
            return usage_error("output takes one job id and --raw");
        raw = 1;
    }
    if (argc - optind != 1)
        return usage_error("output takes exactly one job id");
    char *path = hodei_api_path_id("/jobs", argv[optind], "/output");
    char total[32], *data = NULL;
    size_t len = 0;
    struct hodei_reply reply;
    int rc = path ? hodei_api_get_raw(&ctl->api, path, REQUEST_TIMEOUT_MS, "Hodei-Output-Bytes",
                                      total, sizeof total, &data, &len, &reply) : -1;
    free(path);
    if (rc < 0) {
        char msg[4 * sizeof reply.error];
        fprintf(stderr, "hodeictl: %s\n", safe(path ? reply.error : "out of memory", msg,
                                               sizeof msg));
        hodei_reply_clear(&reply);
        return EXIT_API;
    }
    if (raw) {
        fwrite(data, 1, len, stdout);
    } else {
        char *text = malloc(4 * len + 1);
        if (!text) {
            free(data);
            fputs("hodeictl: out of memory\n", stderr);
            return EXIT_API;
        }
        fwrite(text, 1, escape_into((const unsigned char *)data, len, text, 1), stdout);
        free(text);
    }
    if (total[0] && strtoull(total, NULL, 10) > len)
        fprintf(stderr, "hodeictl: (the last %zu of %s bytes)\n", len, total);
    free(data);
    hodei_reply_clear(&reply);
    return 0;
}

/* --- the tokens file --------------------------------------------------------------------------- */

/* Opens the tokens file (created 0600 when create) and locks it; the fd, or -1 after saying
 * why.  A file others may read is refused, as the daemon refuses it. */
static int tokens_open(const char *file, int create)
{
    for (;;) {
        int fd = open(file, O_RDWR | O_CLOEXEC | (create ? O_CREAT : 0), 0600);
        struct stat st, now;
        if (fd < 0 || flock(fd, LOCK_EX) < 0 || fstat(fd, &st) < 0) {
            fprintf(stderr, "hodeictl: %s: %s\n", file, strerror(errno));
            if (fd >= 0)
                close(fd);
            return -1;
        }
        if (stat(file, &now) == 0 && now.st_ino == st.st_ino && now.st_dev == st.st_dev) {
            if (st.st_mode & 0007) {
                fprintf(stderr, "hodeictl: %s: others may read or write it (mode %04o); run: "
                        "chmod o-rwx %s\n", file, (unsigned)(st.st_mode & 07777), file);
                close(fd);
                return -1;
            }
            return fd;
        }
        close(fd);   /* a revoke replaced the file while we waited: lock the new one */
    }
}

/* Every line of the tokens file (fd at its start), in a fresh array of n; NULL after saying why. */
static char **tokens_read(int fd, const char *file, size_t *n)
{
    FILE *f = fdopen(dup(fd), "r");
    char **lines = NULL, *line = NULL;
    size_t cap = 0, linecap = 0;
    ssize_t len;
    *n = 0;
    if (!f) {
        fprintf(stderr, "hodeictl: %s: %s\n", file, strerror(errno));
        return NULL;
    }
    while ((len = getline(&line, &linecap, f)) >= 0) {
        if (len && line[len - 1] == '\n')
            line[len - 1] = '\0';
        if (*n == cap) {
            cap = cap ? 2 * cap : 16;
            char **grown = realloc(lines, cap * sizeof *lines);
            if (!grown)
                break;
            lines = grown;
        }
        lines[(*n)++] = line;
        line = NULL;
        linecap = 0;
    }
    free(line);
    fclose(f);
    if (!lines)
        lines = calloc(1, sizeof *lines);
    return lines;
}

static void tokens_free(char **lines, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(lines[i]);
    free(lines);
}

static int token_create(const char *file, const char *role, const char *tenant)
{
    struct token_line tl = {0};
    char text[TOKEN_MAX + 1], line[256];
    int r = hodei_name_index(token_role_names, ROLE_COUNT, role);
    if (r < 0)
        return usage_error("--role must be tenant, worker or admin");
    tl.role = (enum token_role)r;
    if ((tl.role == ROLE_TENANT) != (tenant != NULL))
        return usage_error(tl.role == ROLE_TENANT ? "a tenant token needs --tenant ID"
                                                  : "--tenant goes with --role tenant only");
    if (tenant && (!hodei_id_valid(tenant, strlen(tenant))
                   || strcmp(tenant, HODEI_OVERFLOW_LABEL) == 0))
        return usage_error("--tenant must match [A-Za-z0-9._:-]{1,64}");
    snprintf(tl.tenant, sizeof tl.tenant, "%s", tenant ? tenant : "");
    if (token_generate(TOKEN_FILE, text, tl.id, tl.hash) < 0) {
        fprintf(stderr, "hodeictl: the system's random source failed\n");
        return EXIT_API;
    }
    int fd = tokens_open(file, 1);
    if (fd < 0)
        return EXIT_API;
    char last = '\n';
    off_t size = lseek(fd, 0, SEEK_END);
    if (size > 0 && pread(fd, &last, 1, size - 1) != 1)
        last = '\n';
    token_line_format(&tl, line, sizeof line);
    int ok = (last == '\n' || write(fd, "\n", 1) == 1)
             && write(fd, line, strlen(line)) == (ssize_t)strlen(line) && fsync(fd) == 0;
    if (!ok)
        fprintf(stderr, "hodeictl: %s: %s\n", file, strerror(errno));
    close(fd);
    if (!ok)
        return EXIT_API;
    puts(text);
    memset(text, 0, sizeof text);
    fprintf(stderr, "hodeictl: token %s (%s%s%s) added to %s; it is shown only this once.  "
            "Send SIGHUP to hodei-scheduler to use it.\n", tl.id, role, tenant ? ", tenant " : "",
            tenant ? tenant : "", file);
    return 0;
}

static int token_list(const char *file)
{
    int fd = tokens_open(file, 0);
    size_t n;
    char **lines = fd < 0 ? NULL : tokens_read(fd, file, &n);
    if (fd >= 0)
        close(fd);
    if (!lines)
        return EXIT_API;
    int rc = 0;
    printf("%-12s %-6s %s\n", "ID", "ROLE", "TENANT");
    for (size_t i = 0; i < n; i++) {
        struct token_line tl;
        const char *why;
        int got = token_line_parse(lines[i], &tl, &why);
        if (got < 0) {
            fprintf(stderr, "hodeictl: %s:%zu: %s\n", file, i + 1, why);
            rc = EXIT_API;
        } else if (got > 0) {
            printf("%-12s %-6s %s\n", tl.id, token_role_names[tl.role],
                   tl.tenant[0] ? tl.tenant : "-");
        }
    }
    tokens_free(lines, n);
    return rc;
}

/* Rewrites the file without the token's line: a new file in the same directory, with the
 * same owner and mode, renamed over the old one. */
static int token_revoke(const char *file, const char *id)
{
    int fd = tokens_open(file, 0);
    size_t n, found = 0;
    char **lines = fd < 0 ? NULL : tokens_read(fd, file, &n);
    if (!lines) {
        if (fd >= 0)
            close(fd);
        return EXIT_API;
    }
    for (size_t i = 0; i < n; i++) {
        struct token_line tl;
        const char *why;
        found += token_line_parse(lines[i], &tl, &why) > 0 && strcmp(tl.id, id) == 0;
    }
    char tmp[4096], *dir = strdup(file);
    snprintf(tmp, sizeof tmp, "%s/.hodei-tokens.XXXXXX", dir ? dirname(dir) : ".");
    free(dir);
    struct stat st;
    const char *failed = NULL;
    int out = -1;
    if (!found) {
        fprintf(stderr, "hodeictl: %s: no token %s\n", file, id);
    } else if (fstat(fd, &st) < 0 || (out = mkstemp(tmp)) < 0) {
        failed = "cannot create the new file";
    } else {
        FILE *f = fdopen(out, "w");
        for (size_t i = 0; f && i < n; i++) {
            struct token_line tl;
            const char *why;
            if (!(token_line_parse(lines[i], &tl, &why) > 0 && strcmp(tl.id, id) == 0))
                fprintf(f, "%s\n", lines[i]);
        }
        if (!f || fflush(f) != 0 || fchmod(out, st.st_mode & 07777) < 0 || fsync(out) < 0)
            failed = "cannot write the new file";
        else if (fchown(out, st.st_uid, st.st_gid) < 0 && errno != EPERM)
            failed = "cannot give the new file the old one's owner";
        else if (rename(tmp, file) < 0)
            failed = "cannot replace the file";
        if (failed)
            fprintf(stderr, "hodeictl: %s: %s: %s\n", file, failed, strerror(errno));
        if (f)
            fclose(f);
        else
            close(out);
        if (failed)
            unlink(tmp);
    }
    close(fd);
    tokens_free(lines, n);
    if (!found || failed)
        return EXIT_API;
    fprintf(stderr, "hodeictl: token %s removed from %s.  Send SIGHUP to hodei-scheduler to "
            "end it.\n", id, file);
    return 0;
}

/* hodeictl token create|list|revoke: the tokens file itself, no API. */
static int cmd_token(struct ctl *ctl, int argc, char **argv)
{
    static const struct option options[] = {
        { "role", required_argument, NULL, 'r' }, { "tenant", required_argument, NULL, 't' },
        { "tokens", required_argument, NULL, 'f' }, { NULL, 0, NULL, 0 },
    };
    const char *role = NULL, *tenant = NULL, *file = NULL;
    int opt;
    if (argc < 2)
        return usage_error("token needs create, list or revoke");
    const char *what = argv[1];
    optind = 0;
    while ((opt = getopt_long(argc - 1, argv + 1, "", options, NULL)) != -1) {
        if (opt == 'r')
            role = optarg;
        else if (opt == 't')
            tenant = optarg;
        else if (opt == 'f')
            file = optarg;
        else
            return usage_error(NULL);
    }
    int operands = argc - 1 - optind;
    if (!file)
        return usage_error("token %s needs --tokens FILE", what);
    if (strcmp(what, "create") == 0 && operands == 0 && role)
        return token_create(file, role, tenant);
    if (strcmp(what, "list") == 0 && operands == 0 && !role && !tenant)
        return token_list(file);
    if (strcmp(what, "revoke") == 0 && operands == 1 && !role && !tenant)
        return token_revoke(file, argv[1 + optind]);
    return usage_error("token create --role R [--tenant ID] --tokens FILE | "
                       "token list --tokens FILE | token revoke ID --tokens FILE");
}

/* --- main -------------------------------------------------------------------------------------- */

static const struct command {
    const char *name;
    int (*run)(struct ctl *ctl, int argc, char **argv);
    int api;   /* talks to the API */
} commands[] = {
    { "submit", cmd_submit, 1 }, { "get", cmd_get, 1 }, { "list", cmd_list, 1 },
    { "cancel", cmd_cancel, 1 }, { "output", cmd_output, 1 }, { "workers", cmd_workers, 1 },
    { "events", cmd_events, 1 }, { "token", cmd_token, 0 },
};

int main(int argc, char **argv)
{
    static const struct option options[] = {
        { "api", required_argument, NULL, 'a' }, COMMON_OPTIONS,
        { "token-file", required_argument, NULL, 'T' },
        { "help", no_argument, NULL, 'h' }, { NULL, 0, NULL, 0 },
    };
    struct ctl ctl = {0};
    const char *url = getenv("HODEI_API"), *token_file = NULL;
    int opt;

    while ((opt = getopt_long(argc, argv, "+", options, NULL)) != -1) {
        if (opt == 'a')
            url = optarg;
        else if (opt == 'T')
            token_file = optarg;
        else if (opt == 'j')
            ctl.json = 1;
        else if (opt == 'h') {
            fputs(usage_text, stdout);
            return 0;
        } else
            return usage_error(NULL);
    }
    if (optind >= argc)
        return usage_error("a command is required");
    const struct command *cmd = NULL;
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (strcmp(argv[optind], commands[i].name) == 0)
            cmd = &commands[i];
    if (!cmd)
        return usage_error("unknown command '%s'", argv[optind]);
    if (!cmd->api)
        return cmd->run(&ctl, argc - optind, argv + optind);

    char err[512];
    if (hodei_api_global_init() < 0 || hodei_api_open(&ctl.api, url && *url ? url : HODEI_API_DEFAULT_URL) < 0) {
        fprintf(stderr, "hodeictl: cannot set up the HTTP client\n");
        return EXIT_API;
    }
    if (hodei_token_load(token_file, ctl.api.token, err, sizeof err) < 0) {
        fprintf(stderr, "hodeictl: %s\n", err);
        hodei_api_close(&ctl.api);
        return EXIT_API;
    }
    int rc = cmd->run(&ctl, argc - optind, argv + optind);
    hodei_api_close(&ctl.api);
    return rc;
}
