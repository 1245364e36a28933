/* json.h — the API's JSON shapes (api.md): job, worker, event, error. */
#ifndef HODEI_CORE_JSON_H
#define HODEI_CORE_JSON_H

#include <jansson.h>
#include "scheduler.h"

/* A job from its immutable fields and a status copy (job_status_read or the live one). */
json_t *job_json(const struct job *j, const struct job_status *st);
/* A worker with its job ids: the engine thread only. */
json_t *worker_json(const struct worker *w);
/* {"error": code, "detail": detail} */
json_t *error_json(const char *code, const char *detail);
/* The SSE data of an event: {"type", "time", "job"?, "worker_id"}. */
char *event_json(enum hodei_event_type type, double time, const struct job *j,
                 const struct worker *w);

#endif
