/* core_request_test.c — validation of ids, labels and request bodies (core/request.c), and
 * the metrics snapshot the daemon publishes (core/metrics.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <openssl/evp.h>

#include "bus.h"
#include "hodei_snapshot.h"
#include "metrics.h"
#include "request.h"

static json_t *parse(const char *text)
{
    struct req_error err;
    json_t *j = req_parse(text, strlen(text), &err);
    assert_non_null(j);
    return j;
}

static void test_ids(void **state)
{
    assert_true(req_id_valid("acme"));
    assert_true(req_id_valid("A-b_c.d:9"));
    char max[65];
    memset(max, 'x', 64);
    max[64] = '\0';
    assert_true(req_id_valid(max));
    max[63] = '\0';
    assert_true(req_id_valid(max));
    char too_long[66];
    memset(too_long, 'x', 65);
    too_long[65] = '\0';
    assert_false(req_id_valid(too_long));
    assert_false(req_id_valid(""));
    assert_false(req_id_valid("a b"));
    assert_false(req_id_valid("a/b"));
    assert_false(req_id_valid("a\"b"));
    assert_false(req_id_valid("é"));
    assert_false(req_id_valid(HODEI_OVERFLOW_LABEL));   /* reserved */

    uint64_t id;
    assert_true(req_job_id("1", &id));
    assert_int_equal(id, 1);
    assert_true(req_job_id("9223372036854775807", &id));
    assert_false(req_job_id("9223372036854775808", &id));
    assert_false(req_job_id("0", &id));
    assert_false(req_job_id("01", &id));
    assert_false(req_job_id("-1", &id));
    assert_false(req_job_id("1a", &id));
    assert_false(req_job_id("", &id));
}

static void expect_job_error(const char *text, const char *code)
{
    struct job_spec spec;
    struct req_error err;
    json_t *j = parse(text);
    assert_int_equal(req_job_spec(j, &spec, &err), -1);
    assert_string_equal(err.code, code);
    assert_true(strlen(err.detail) > 0);
    json_decref(j);
}

static void test_job_spec(void **state)
{
    struct job_spec spec;
    struct req_error err;
    json_t *j = parse("{\"tenant_id\":\"acme\",\"command\":\"make\"}");
    assert_int_equal(req_job_spec(j, &spec, &err), 0);
    assert_string_equal(spec.tenant_id, "acme");
    assert_string_equal(spec.command, "make");
    assert_string_equal(spec.name, "");
    assert_int_equal(spec.cpu_m, 100);
    assert_int_equal(spec.memory_mb, 64);
    assert_int_equal(spec.priority, 0);
    assert_int_equal(spec.timeout_s, 0);
    assert_int_equal(spec.max_retries, 0);
    json_decref(j);

    /* tenant_id may be left out: a tenant's token names the tenant */
    j = parse("{\"command\":\"x\"}");
    assert_int_equal(req_job_spec(j, &spec, &err), 0);
    assert_string_equal(spec.tenant_id, "");
    json_decref(j);
    expect_job_error("{\"tenant_id\":\"a b\",\"command\":\"x\"}", "bad_id");
    expect_job_error("{\"tenant_id\":7,\"command\":\"x\"}", "bad_field");
    expect_job_error("{\"tenant_id\":\"t\"}", "bad_field");
    expect_job_error("{\"tenant_id\":\"t\",\"command\":\"\"}", "bad_field");
    expect_job_error("{\"tenant_id\":\"t\",\"command\":\"x\",\"cpu_m\":0}", "bad_field");
    expect_job_error("{\"tenant_id\":\"t\",\"command\":\"x\",\"cpu_m\":1.5}", "bad_field");
    expect_job_error("{\"tenant_id\":\"t\",\"command\":\"x\",\"priority\":101}", "bad_field");
    expect_job_error("{\"tenant_id\":\"t\",\"command\":\"x\",\"timeout_s\":86401}", "bad_field");
    expect_job_error("{\"tenant_id\":\"t\",\"command\":\"x\",\"max_retries\":11}", "bad_field");
    expect_job_error("{\"tenant_id\":\"t\",\"command\":\"x\",\"extra\":1}", "bad_field");

    struct req_error perr;
    assert_null(req_parse("{\"a\":", 5, &perr));
    assert_string_equal(perr.code, "bad_json");
    assert_null(req_parse("[1]", 3, &perr));
    assert_string_equal(perr.code, "bad_json");
    assert_null(req_parse("{\"a\":1,\"a\":2}", 13, &perr));
    /* NUL characters never reach a field */
    {
        const char *nul = "{\"command\":\"a\\u0000b\"}";
        assert_null(req_parse(nul, strlen(nul), &perr));
    }
    assert_string_equal(perr.code, "bad_json");
}

static void test_worker_labels(void **state)
{
    struct worker_spec spec;
    struct req_error err;
    json_t *j = parse("{\"cpu_m\":2000,\"memory_mb\":512,\"labels\":{\"zone\":\"eu-1\",\"gpu\":\"\"}}");
    assert_int_equal(req_worker_spec(j, &spec, &err), 0);
    assert_string_equal(spec.id, "");
    assert_int_equal(spec.nlabels, 2);
    assert_string_equal(spec.labels[0].key, "zone");
    assert_string_equal(spec.labels[0].value, "eu-1");
    assert_int_equal(spec.nrunning, 0);
    json_decref(j);
    /* after a restart, the jobs it runs */
    j = parse("{\"cpu_m\":1,\"memory_mb\":1,\"running\":[\"17\",\"9223372036854775807\"]}");
    assert_int_equal(req_worker_spec(j, &spec, &err), 0);
    assert_int_equal(spec.nrunning, 2);
    assert_int_equal(spec.running[0], 17);
    assert_true(spec.running[1] == INT64_MAX);
    json_decref(j);

    static const char *const bad[] = {
        "{\"memory_mb\":1}",                                            /* cpu required */
        "{\"cpu_m\":1,\"memory_mb\":1,\"worker_id\":\"no spaces\"}",
        "{\"cpu_m\":1,\"memory_mb\":1,\"labels\":[\"a\"]}",
        "{\"cpu_m\":1,\"memory_mb\":1,\"labels\":{\"a\":1}}",
        "{\"cpu_m\":1,\"memory_mb\":1,\"labels\":{\"bad key\":\"v\"}}",
        "{\"cpu_m\":1,\"memory_mb\":1,\"running\":\"17\"}",
        "{\"cpu_m\":1,\"memory_mb\":1,\"running\":[17]}",
        "{\"cpu_m\":1,\"memory_mb\":1,\"running\":[\"0\"]}",
        "{\"cpu_m\":1,\"memory_mb\":1,\"running\":[\"x\"]}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        j = parse(bad[i]);
        assert_int_equal(req_worker_spec(j, &spec, &err), -1);
        json_decref(j);
    }
    /* 17 labels, and a 129-byte value */
    json_t *many = json_pack("{s:i, s:i, s:{}}", "cpu_m", 1, "memory_mb", 1, "labels");
    for (int i = 0; i < 17; i++) {
        char k[8];
        snprintf(k, sizeof k, "k%d", i);
        json_object_set_new(json_object_get(many, "labels"), k, json_string("v"));
    }
    assert_int_equal(req_worker_spec(many, &spec, &err), -1);
    json_decref(many);
    /* more running jobs than any worker can list */
    json_t *lots = json_pack("{s:i, s:i, s:[]}", "cpu_m", 1, "memory_mb", 1, "running");
    for (int i = 0; i <= SCHED_RUNNING_MAX; i++)
        json_array_append_new(json_object_get(lots, "running"), json_string("1"));
    assert_int_equal(req_worker_spec(lots, &spec, &err), -1);
    json_decref(lots);
    char long_value[HODEI_LABEL_VALUE_MAX + 2];
    memset(long_value, 'v', sizeof long_value - 1);
    long_value[sizeof long_value - 1] = '\0';
    json_t *big = json_pack("{s:i, s:i, s:{s:s}}", "cpu_m", 1, "memory_mb", 1, "labels", "k",
                            long_value);
    assert_int_equal(req_worker_spec(big, &spec, &err), -1);
    json_decref(big);
}

static void test_reports(void **state)
{
    struct req_report r;
    struct req_error err;
    json_t *j = parse("{\"worker_id\":\"w1\",\"error_type\":\"timeout\",\"exit_code\":-9}");
    assert_int_equal(req_report(j, REQ_FAIL, &r, &err), 0);
    assert_int_equal(r.error_type, HODEI_ERR_TIMEOUT);
    assert_int_equal(r.exit_code, -9);
    assert_true(r.has_exit_code);
    assert_int_equal(req_report(j, REQ_START, &r, &err), -1);   /* fields start has not */
    json_decref(j);
    j = parse("{\"worker_id\":\"w1\",\"error_type\":\"crashed\"}");
    assert_int_equal(req_report(j, REQ_FAIL, &r, &err), -1);
    json_decref(j);
    j = parse("{\"worker_id\":\"w1\"}");
    assert_int_equal(req_report(j, REQ_SUCCEED, &r, &err), 0);
    assert_int_equal(r.exit_code, 0);
    assert_false(r.has_output);
    json_decref(j);
    /* the worker may be left out (its session token says it) */
    j = parse("{}");
    assert_int_equal(req_report(j, REQ_START, &r, &err), 0);
    assert_string_equal(r.worker_id, "");
    json_decref(j);
}

/* The output's tail: base64 of at most HODEI_OUTPUT_TAIL bytes, with the whole size. */
static void test_report_output(void **state)
{
    struct req_report r;
    struct req_error err;
    /* "hi\n\0\xff" */
    json_t *j = parse("{\"exit_code\":0,\"output\":\"aGkKAP8=\",\"output_bytes\":9000}");
    assert_int_equal(req_report(j, REQ_SUCCEED, &r, &err), 0);
    assert_true(r.has_output);
    assert_int_equal(r.output.len, 5);
    assert_memory_equal(r.output.tail, "hi\n\0\xff", 5);
    assert_int_equal(r.output.total, 9000);
    req_report_free(&r);
    json_decref(j);
    static const char *const bad[] = {
        "{\"output\":\"aGk\",\"output_bytes\":2}",          /* not a multiple of 4 */
        "{\"output\":\"a=Gk\",\"output_bytes\":2}",         /* padding inside */
        "{\"output\":\"aG!k\",\"output_bytes\":2}",         /* not base64 */
        "{\"output\":\"aGkK\"}",                             /* no output_bytes */
        "{\"output\":\"aGkK\",\"output_bytes\":2}",         /* fewer than the tail */
        "{\"output_bytes\":2}",                               /* bytes without output */
        "{\"output\":7,\"output_bytes\":2}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        j = parse(bad[i]);
        assert_int_equal(req_report(j, REQ_FAIL, &r, &err), -1);
        assert_string_equal(err.code, "bad_field");
        req_report_free(&r);
        json_decref(j);
    }
    /* exactly the tail limit passes, one byte more does not */
    for (int extra = 0; extra <= 1; extra++) {
        size_t n = HODEI_OUTPUT_TAIL + (size_t) extra;
        unsigned char *raw = calloc(n, 1);
        char *b64 = calloc(4 * (n + 2) / 3 + 8, 1);
        EVP_EncodeBlock((unsigned char *) b64, raw, (int) n);
        json_t *body = json_pack("{s:s, s:I, s:s}", "output", b64, "output_bytes",
                                 (json_int_t) n, "error_type", "exit_code");
        assert_int_equal(req_report(body, REQ_FAIL, &r, &err), extra ? -1 : 0);
        req_report_free(&r);
        json_decref(body);
        free(raw);
        free(b64);
    }
    double cpu, mem;
    j = parse("{\"cpu_usage_percent\":12.5,\"memory_usage_mb\":800}");
    assert_int_equal(req_heartbeat(j, &cpu, &mem, &err), 0);
    assert_true(cpu == 12.5 && mem == 800);
    json_decref(j);
    j = parse("{\"cpu_usage_percent\":-1,\"memory_usage_mb\":800}");
    assert_int_equal(req_heartbeat(j, &cpu, &mem, &err), -1);
    json_decref(j);
}

/* The snapshot holds every daemon family, validates, and folds overflowed tenants. */
static void test_metrics_snapshot(void **state)
{
    rcu_register_thread();
    struct sched s;
    struct sched_config cfg = { .max_tenants = 2, .max_workers = 3, .max_jobs = 100,
                                .job_retention = 10, .heartbeat_timeout = 10,
                                .worker_timeout = 30 };
    assert_int_equal(sched_init(&s, &cfg, 100, 1.7e9, NULL, NULL), 0);
    struct worker_spec ws = { .id = "w1", .cpu_m = 1000, .memory_mb = 1000 };
    assert_int_equal(sched_register(&s, &ws, 100, NULL), SCHED_OK);
    sched_heartbeat(&s, "w1", 42.5, 512, 100, NULL);
    for (int i = 0; i < 4; i++) {
        struct job_spec js = { .cpu_m = 1, .memory_mb = 1, .command = "x" };
        snprintf(js.tenant_id, sizeof js.tenant_id, "t%d", i);
        assert_int_equal(sched_submit(&s, &js, 100, NULL), SCHED_OK);
    }
    sched_round(&s, 100.5);
    sched_commit(&s, 1);

    uint32_t caps[HODEI_F_COUNT];
    metrics_caps(caps, cfg.max_tenants, cfg.max_workers);
    assert_int_equal(caps[HODEI_F_JOBS_SCHEDULED_TOTAL], 3);
    assert_int_equal(caps[HODEI_F_JOBS_FAILED_TOTAL], 3 * HODEI_ERR_COUNT);
    assert_int_equal(caps[HODEI_F_CPU_USAGE_PERCENT], 3);
    assert_int_equal(caps[HODEI_F_HTTP_REQUESTS_TOTAL], 0);
    size_t cap = hodei_payload_bound(caps);
    void *buf = aligned_alloc(64, (cap + 63) & ~(size_t) 63);
    static struct metrics_copies copies;
    metrics_copies_init(&copies);
    size_t len = metrics_build(&s, 1, "9.9.9", &copies, buf, cap, 1.7e9 + 1);
    assert_true(len > 0);
    struct hodei_snapshot snap;
    const char *why = NULL;
    assert_int_equal(hodei_snapshot_validate(buf, len, &snap, &why), 0);
    for (int f = 0; f < HODEI_F_COUNT; f++) {
        enum hodei_source src = hodei_families[f].source;
        if (src == HODEI_SRC_DAEMON || src == HODEI_SRC_BOTH)
            assert_non_null(snap.family[f]);
        else
            assert_null(snap.family[f]);
        if (hodei_families[f].nlabels == 0 && snap.family[f])
            assert_int_equal(snap.family[f]->nseries, 1);
    }
    /* t0, t1 and __overflow__ */
    assert_int_equal(snap.family[HODEI_F_JOBS_SUBMITTED_TOTAL]->nseries, 3);
    const unsigned char *rec = hodei_series_at(&snap, snap.family[HODEI_F_JOBS_SUBMITTED_TOTAL], 2);
    size_t l;
    const char *label = hodei_series_label(&snap, rec, 0, &l);
    assert_int_equal(l, strlen(HODEI_OVERFLOW_LABEL));
    assert_memory_equal(label, HODEI_OVERFLOW_LABEL, l);
    double v;
    memcpy(&v, rec + hodei_series_values_off(1) + 8, sizeof v);
    assert_true(v == 2);
    /* overflow counted for submitted and scheduled */
    assert_int_equal(snap.family[HODEI_F_METRICS_LABEL_OVERFLOW_TOTAL]->nseries, 2);
    /* the worker gauge */
    rec = hodei_series_at(&snap, snap.family[HODEI_F_CPU_USAGE_PERCENT], 0);
    memcpy(&v, rec + hodei_series_values_off(1) + 8, sizeof v);
    assert_true(v == 42.5);
    assert_int_equal(snap.family[HODEI_F_SCHEDULING_DECISIONS_TOTAL]->nseries,
                     HODEI_DECISION_COUNT);
    /* every histogram of the daemon's has its native part, of what the scheduler observed */
    const enum hodei_family_id hists[] = { HODEI_F_SCHEDULING_LATENCY_SECONDS,
        HODEI_F_QUEUE_WAIT_TIME_SECONDS, HODEI_F_JOB_DURATION_SECONDS };
    const struct hodei_histogram *live[] = { &s.m.h[SH_SCHEDULING_LATENCY], &s.m.h[SH_QUEUE_WAIT],
                                             &s.m.h[SH_JOB_DURATION] };
    uint64_t decisions = 0;
    for (int d = 0; d < HODEI_DECISION_COUNT; d++)
        decisions += s.m.decisions[d];
    assert_true(decisions > 0);
    assert_int_equal(live[0]->native.count, decisions);
    for (unsigned i = 0; i < 3; i++) {
        const struct hodei_snap_family *fam = snap.family[hists[i]];
        struct hodei_native_view native;
        assert_int_equal(hodei_series_native(&snap, fam, hodei_series_at(&snap, fam, 0),
                                             &native), 1);
        assert_int_equal(native.count, live[i]->native.count);
    }
    assert_int_equal(snap.family[HODEI_F_EVENTS_DROPPED_TOTAL]->nseries, HODEI_EV_COUNT);
    free(buf);
    sched_destroy(&s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ids),
        cmocka_unit_test(test_job_spec),
        cmocka_unit_test(test_worker_labels),
        cmocka_unit_test(test_reports),
        cmocka_unit_test(test_report_output),
        cmocka_unit_test(test_metrics_snapshot),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
