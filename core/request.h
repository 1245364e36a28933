/*
 * request.h — validation of API request bodies and path parameters (api.md), independent of
 * HTTP so that the rules are unit-tested on their own.  A function either fills its output
 * completely or returns -1 with an error code and a sentence for the client.
 */
#ifndef HODEI_CORE_REQUEST_H
#define HODEI_CORE_REQUEST_H

#include <jansson.h>
#include <stdint.h>

#include "limits.h"
#include "scheduler.h"

struct req_error {
    const char *code;            /* short machine-readable code, e.g. "bad_field" */
    char detail[256];
};

/* A client id (tenant_id, worker_id): [A-Za-z0-9._:-]{1,64}, and not the reserved
 * __overflow__ label. */
int req_id_valid(const char *s);
/* A job id: the decimal form of 1..2^63. */
int req_job_id(const char *s, uint64_t *out);

/* Bodies.  Strings in the outputs point into body: keep it alive while they are used.
 * A job spec's tenant_id may be omitted (""): a tenant's token says it (api.c). */
int req_job_spec(json_t *body, struct job_spec *out, struct req_error *err);
int req_worker_spec(json_t *body, struct worker_spec *out, struct req_error *err);
int req_heartbeat(json_t *body, double *cpu_usage_percent, double *memory_usage_mb,
                  struct req_error *err);

/* A worker's report on a job.  worker_id may be omitted ("") when the worker's session token
 * says who it is; output (succeed and fail) is the base64 of the output's tail, at most
 * HODEI_OUTPUT_TAIL bytes, with output_bytes the size of the whole output. */
enum req_report_kind { REQ_START, REQ_SUCCEED, REQ_FAIL };
struct req_report {
    char worker_id[HODEI_ID_MAX + 1];
    int  has_exit_code;
    int  exit_code;
    enum hodei_error_type error_type;   /* REQ_FAIL only */
    int  has_output;
    struct job_output output;           /* .tail: decoded, owned by the report */
};
int req_report(json_t *body, enum req_report_kind kind, struct req_report *out,
               struct req_error *err);
/* Frees what req_report() decoded (also after it failed). */
void req_report_free(struct req_report *r);

/* Parses a JSON text of len bytes: an object, or -1 with err set (bad_json). */
json_t *req_parse(const char *text, size_t len, struct req_error *err);

#endif
