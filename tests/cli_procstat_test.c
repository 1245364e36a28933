/*
 * cli_procstat_test — the agent's /proc parsers against fixture text.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "procstat.h"

static const char meminfo_fixture[] =
    "MemTotal:       16318480 kB\n"
    "MemFree:         1040308 kB\n"
    "MemAvailable:   10485760 kB\n"
    "Buffers:          421484 kB\n"
    "Cached:          8611804 kB\n"
    "SwapCached:            0 kB\n";

static void meminfo_reads_total_and_available(void **state)
{
    struct meminfo m;
    assert_int_equal(meminfo_parse(meminfo_fixture, &m), 0);
    assert_int_equal(m.total_kb, 16318480);
    assert_int_equal(m.available_kb, 10485760);
    /* (16318480 - 10485760) / 1024 */
    assert_float_equal(meminfo_used_mb(&m), 5696.015625, 1e-9);
}

static void meminfo_needs_both_fields(void **state)
{
    struct meminfo m;
    assert_int_equal(meminfo_parse("MemTotal:       16318480 kB\nMemFree: 1 kB\n", &m), -1);
    assert_int_equal(meminfo_parse("", &m), -1);
    /* a key that merely starts like another one is not it */
    assert_int_equal(meminfo_parse("MemTotalX: 5 kB\nMemAvailable: 1 kB\n", &m), -1);
    assert_int_equal(meminfo_parse("MemTotal: lots\nMemAvailable: 1 kB\n", &m), -1);
}

static void meminfo_used_never_negative(void **state)
{
    struct meminfo m = { .total_kb = 1024, .available_kb = 4096 };
    assert_float_equal(meminfo_used_mb(&m), 0.0, 0.0);
}

static void cpu_line_with_all_fields(void **state)
{
    /* user nice system idle iowait irq softirq steal guest guest_nice */
    static const char stat[] = "cpu  100 20 30 800 50 5 5 10 7 0\n"
                               "cpu0 50 10 15 400 25 2 3 5 3 0\n"
                               "intr 12345\n";
    struct cpu_times t;
    assert_int_equal(cpu_times_parse(stat, &t), 0);
    assert_int_equal(t.total, 1020);       /* guest is inside user already */
    assert_int_equal(t.busy, 1020 - 800 - 50);
}

static void cpu_line_with_four_fields(void **state)
{
    struct cpu_times t;
    assert_int_equal(cpu_times_parse("cpu 10 0 10 80\n", &t), 0);
    assert_int_equal(t.total, 100);
    assert_int_equal(t.busy, 20);
}

static void cpu_line_malformed(void **state)
{
    struct cpu_times t;
    assert_int_equal(cpu_times_parse("cpu0 1 2 3 4\n", &t), -1);
    assert_int_equal(cpu_times_parse("intr 1 2 3 4\n", &t), -1);
    assert_int_equal(cpu_times_parse("cpu 1 2\n", &t), -1);
    assert_int_equal(cpu_times_parse("", &t), -1);
}

static void cpu_percent_from_deltas(void **state)
{
    struct cpu_times a = { .busy = 1000, .total = 5000 };
    struct cpu_times b = { .busy = 1250, .total = 6000 };
    assert_float_equal(cpu_percent_between(&a, &b), 25.0, 1e-9);
    struct cpu_times c = { .busy = 2250, .total = 7000 };
    assert_float_equal(cpu_percent_between(&b, &c), 100.0, 1e-9);
}

static void cpu_percent_without_progress_is_zero(void **state)
{
    struct cpu_times a = { .busy = 1000, .total = 5000 };
    struct cpu_times reset = { .busy = 10, .total = 50 };
    assert_float_equal(cpu_percent_between(&a, &a), 0.0, 0.0);
    assert_float_equal(cpu_percent_between(&a, &reset), 0.0, 0.0);
}

static void this_machine_is_readable(void **state)
{
    struct meminfo m;
    struct cpu_times t;
    assert_int_equal(meminfo_read(&m), 0);
    assert_true(m.total_kb > 0 && m.available_kb <= m.total_kb);
    assert_int_equal(cpu_times_read(&t), 0);
    assert_true(t.total > 0 && t.busy <= t.total);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(meminfo_reads_total_and_available),
        cmocka_unit_test(meminfo_needs_both_fields),
        cmocka_unit_test(meminfo_used_never_negative),
        cmocka_unit_test(cpu_line_with_all_fields),
        cmocka_unit_test(cpu_line_with_four_fields),
        cmocka_unit_test(cpu_line_malformed),
        cmocka_unit_test(cpu_percent_from_deltas),
        cmocka_unit_test(cpu_percent_without_progress_is_zero),
        cmocka_unit_test(this_machine_is_readable),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
