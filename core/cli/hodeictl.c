/*
 * hodeictl — command-line client of the hodei-scheduler API.
 *
 *   hodeictl [--api URL] [--json] submit|get|list|cancel|workers|events ...
 *
 * Tables and key/value lines for people by default; --json prints the API's JSON for scripts.
 * Exit status: 0 done, 1 the API refused or could not be reached, 2 bad arguments.
 */
#include "client.h"

#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define REQUEST_TIMEOUT_MS 30000L
#define LIST_PAGE_MAX      1000L
#define EXIT_API           1
#define EXIT_USAGE         2

struct ctl {
    struct hodei_api api;
    int              json;
};

static const char usage_text[] =
    "usage: hodeictl [--api URL] [--json] COMMAND ...\n"
    "  submit --tenant T [--name N] [--cpu-m N] [--memory-mb N] [--priority P]\n"
    "         [--timeout S] [--retries N] -- COMMAND...   submit a job (/bin/sh -c COMMAND)\n"
    "  get ID                                             show one job\n"
    "  list [--tenant T] [--state S] [--limit N]          list jobs (all pages)\n"
    "  cancel ID                                          cancel a job\n"
    "  workers                                            list workers\n"
    "  events [--count N]                                 follow the event stream\n"
    "--api defaults to $HODEI_API, else " HODEI_API_DEFAULT_URL ".\n";

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

/* A JSON scalar as text ("-" for null or absent); times are formatted when is_time. */
static const char *scalar_text(json_t *v, int is_time, char *buf, size_t size)
{
    if (json_is_string(v))
        return json_string_value(v);
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
    char buf[64];
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++)
        printf("%-13s %s\n", fields[i], field_text(job, fields[i], buf, sizeof buf));
}

/* "exit 3", "timeout", ... — what became of a finished job, "-" while it is not. */
static const char *job_result(json_t *job, char *buf, size_t size)
{
    const char *error_type = json_string_value(json_object_get(job, "error_type"));
    json_t *exit_code = json_object_get(job, "exit_code");
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
        char b[8][64];   /* one buffer per column: each may be formatted into */
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
        char cpu[40], mem[40];
        snprintf(cpu, sizeof cpu, "%" JSON_INTEGER_FORMAT "/%" JSON_INTEGER_FORMAT,
                 json_integer_value(json_object_get(w, "free_cpu_m")),
                 json_integer_value(json_object_get(w, "cpu_m")));
        snprintf(mem, sizeof mem, "%" JSON_INTEGER_FORMAT "/%" JSON_INTEGER_FORMAT,
                 json_integer_value(json_object_get(w, "free_memory_mb")),
                 json_integer_value(json_object_get(w, "memory_mb")));
        printf("%-16s %-10s %-17s %-19s ", field_text(w, "id", b, sizeof b),
               field_text(w, "state", b, sizeof b), cpu, mem);
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
        fprintf(stderr, "hodeictl: %s\n", reply.error);
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
    if (!json_object_get(payload, "tenant_id")) {
        rc = usage_error("submit needs --tenant");
        goto out;
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
    else
        printf("job %s submitted (tenant %s, %s)\n", json_string_value(json_object_get(job, "id")),
               json_string_value(json_object_get(job, "tenant_id")),
               json_string_value(json_object_get(job, "state")));
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
    char b[4][64];
    if (p->json) {
        print_json(data, JSON_COMPACT);
    } else {
        json_t *job = json_object_get(data, "job");
        printf("%s %-18s", scalar_text(json_object_get(data, "time"), 1, b[0], sizeof b[0]), type);
        if (job)
            printf(" job=%s tenant=%s state=%s", field_text(job, "id", b[1], sizeof b[1]),
                   field_text(job, "tenant_id", b[2], sizeof b[2]),
                   field_text(job, "state", b[3], sizeof b[3]));
        const char *worker = json_string_value(json_object_get(data, "worker_id"));
        if (!worker && job)
            worker = json_string_value(json_object_get(job, "worker_id"));
        if (worker)
            printf(" worker=%s", worker);
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
        fprintf(stderr, "hodeictl: %s\n", reply.error);
        hodei_reply_clear(&reply);
        return EXIT_API;
    }
    hodei_reply_clear(&reply);
    return 0;
}

/* --- main -------------------------------------------------------------------------------------- */

static const struct command {
    const char *name;
    int (*run)(struct ctl *ctl, int argc, char **argv);
} commands[] = {
    { "submit", cmd_submit }, { "get", cmd_get }, { "list", cmd_list },
    { "cancel", cmd_cancel }, { "workers", cmd_workers }, { "events", cmd_events },
};

int main(int argc, char **argv)
{
    static const struct option options[] = {
        { "api", required_argument, NULL, 'a' }, COMMON_OPTIONS,
        { "help", no_argument, NULL, 'h' }, { NULL, 0, NULL, 0 },
    };
    struct ctl ctl = {0};
    const char *url = getenv("HODEI_API");
    int opt;

    while ((opt = getopt_long(argc, argv, "+", options, NULL)) != -1) {
        if (opt == 'a')
            url = optarg;
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

    if (hodei_api_global_init() < 0 || hodei_api_open(&ctl.api, url && *url ? url : HODEI_API_DEFAULT_URL) < 0) {
        fprintf(stderr, "hodeictl: cannot set up the HTTP client\n");
        return EXIT_API;
    }
    int rc = cmd->run(&ctl, argc - optind, argv + optind);
    hodei_api_close(&ctl.api);
    return rc;
}
