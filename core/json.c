/* json.c — serialization of jobs, workers, events and errors. */
#include "json.h"

#include <string.h>

static json_t *time_or_null(double t)
{
    return t > 0 ? json_real(t) : json_null();
}

static json_t *string_or_null(const char *s)
{
    return s && *s ? json_string(s) : json_null();
}

json_t *job_json(const struct job *j, const struct job_status *st)
{
    char id[24];
    snprintf(id, sizeof id, "%llu", (unsigned long long) j->id);
    return json_pack("{s:s, s:s, s:s, s:s, s:I, s:I, s:i, s:I, s:I, s:I, s:s, s:o, s:o, s:o,"
                     " s:f, s:o, s:o, s:o, s:o}",
        "id", id,
        "tenant_id", j->tenant_id,
        "name", j->name,
        "command", j->command,
        "cpu_m", (json_int_t) j->cpu_m,
        "memory_mb", (json_int_t) j->memory_mb,
        "priority", j->priority,
        "timeout_s", (json_int_t) j->timeout_s,
        "max_retries", (json_int_t) j->max_retries,
        "attempts", (json_int_t) st->attempts,
        "state", job_state_names[st->state],
        "worker_id", string_or_null(st->worker_id),
        "error_type", st->error_type >= 0 ? json_string(hodei_error_type_names[st->error_type])
                                          : json_null(),
        "exit_code", st->has_exit_code ? json_integer(st->exit_code) : json_null(),
        "submitted_at", j->submitted_at,
        "assigned_at", time_or_null(st->assigned_at),
        "started_at", time_or_null(st->started_at),
        "finished_at", time_or_null(st->finished_at),
        "output_bytes", st->output_bytes >= 0 ? json_integer(st->output_bytes) : json_null());
}

json_t *worker_json(const struct worker *w)
{
    json_t *labels = json_object(), *jobs = json_array();
    for (unsigned i = 0; i < w->nlabels; i++)
        json_object_set_new(labels, w->labels[i].key, json_string(w->labels[i].value));
    const struct job *j;
    cds_list_for_each_entry(j, &w->jobs, worker_link) {
        char id[24];
        snprintf(id, sizeof id, "%llu", (unsigned long long) j->id);
        json_array_append_new(jobs, json_string(id));
    }
    return json_pack("{s:s, s:I, s:I, s:I, s:I, s:s, s:o, s:f, s:f, s:f, s:f, s:o}",
        "id", w->id,
        "cpu_m", (json_int_t) w->cpu_m,
        "memory_mb", (json_int_t) w->memory_mb,
        "free_cpu_m", (json_int_t) w->free_cpu_m,
        "free_memory_mb", (json_int_t) w->free_memory_mb,
        "state", w->healthy ? "healthy" : "unhealthy",
        "labels", labels,
        "cpu_usage_percent", gauge_load(&w->cpu_usage_percent),
        "memory_usage_mb", gauge_load(&w->memory_usage_mb),
        "registered_at", w->registered_at,
        "last_heartbeat", w->last_heartbeat,
        "jobs", jobs);
}

json_t *error_json(const char *code, const char *detail)
{
    return json_pack("{s:s, s:s}", "error", code, "detail", detail);
}

char *event_json(enum hodei_event_type type, double time, const struct job *j,
                 const struct worker *w)
{
    json_t *ev = json_pack("{s:s, s:f}", "type", hodei_event_type_names[type], "time", time);
    if (j) {
        json_object_set_new(ev, "job", job_json(j, &j->st));
        json_object_set_new(ev, "worker_id", string_or_null(j->st.worker_id));
    } else {
        json_object_set_new(ev, "worker_id", string_or_null(w ? w->id : NULL));
    }
    char *text = json_dumps(ev, JSON_COMPACT);
    json_decref(ev);
    return text;
}
