/* Helpers shared by the shm/ tests: a memory sink and an exposition checker. */
#ifndef SHM_TEST_UTIL_H
#define SHM_TEST_UTIL_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "hodei_render.h"

struct mem_sink {
    struct hodei_sink sink;
    char  *data;
    size_t len, cap;
};

/* Grows a heap buffer; the rendered text is data[0..len) after mem_sink_done(). */
static int mem_sink_flush(struct hodei_sink *s)
{
    struct mem_sink *m = (struct mem_sink *) s;
    m->len = (size_t) (s->pos - m->data);
    if (m->cap - m->len < HODEI_SINK_MIN) {
        m->cap = m->cap * 2 + 2 * HODEI_SINK_MIN;
        m->data = realloc(m->data, m->cap);
        if (m->data == NULL)
            return -1;
    }
    s->pos = m->data + m->len;
    s->end = m->data + m->cap;
    return 0;
}

static inline void mem_sink_init(struct mem_sink *m)
{
    memset(m, 0, sizeof(*m));
    m->sink.flush = mem_sink_flush;
    mem_sink_flush(&m->sink);
}

/* NUL-terminates and returns the text. */
static inline char *mem_sink_done(struct mem_sink *m)
{
    m->len = (size_t) (m->sink.pos - m->data);
    if (m->len == m->cap)
        m->data = realloc(m->data, ++m->cap);
    m->data[m->len] = '\0';
    return m->data;
}

/* ---- an exposition checker ---------------------------------------------------------- */

static char exposition_why[512];
#define EXPOSITION_PROBLEM(...)                                                   \
    do {                                                                          \
        snprintf(exposition_why, sizeof(exposition_why), __VA_ARGS__);           \
        return exposition_why;                                                    \
    } while (0)

/* Length of a family's name as its HELP and TYPE lines spell it in fmt. */
static size_t family_base_len(const struct hodei_family *f, enum hodei_format fmt)
{
    return fmt == HODEI_FMT_OPENMETRICS && f->type == HODEI_COUNTER ? f->name_len - 6 : f->name_len;
}

/* 1 when a sample of family f in fmt may carry suffix[0..n). */
static int suffix_allowed(const struct hodei_family *f, enum hodei_format fmt, const char *suffix,
                          size_t n)
{
#define IS(lit) (n == sizeof(lit) - 1 && memcmp(suffix, lit, n) == 0)
    int om = fmt == HODEI_FMT_OPENMETRICS;
    switch (f->type) {
    case HODEI_COUNTER:
        return om ? IS("_total") || IS("_created") : n == 0;
    case HODEI_GAUGE:
        return n == 0;
    default:
        return IS("_bucket") || IS("_count") || IS("_sum") || (om && IS("_created"));
    }
#undef IS
}

/* Checks `{name="value",...}` at *p against the expected label names; moves *p past it. */
static const char *check_labels(const char **p, const char *end, const char *const *names,
                                unsigned n)
{
    const char *q = *p;
    if (n == 0)
        return q < end && *q == '{' ? "labels on a sample that has none" : NULL;
    if (q >= end || *q != '{')
        return "labels missing";
    q++;
    for (unsigned i = 0; i < n; i++) {
        size_t len = strlen(names[i]);
        if ((size_t) (end - q) < len + 2 || memcmp(q, names[i], len) != 0 || q[len] != '='
            || q[len + 1] != '"')
            return "a label is missing, misnamed or out of order";
        q += len + 2;
        while (q < end && *q != '"') {
            if (*q == '\\') {
                if (q + 1 >= end || (q[1] != '\\' && q[1] != '"' && q[1] != 'n'))
                    return "a label value has a bad escape";
                q++;
            }
            q++;
        }
        if (q >= end)
            return "a label value is not closed";
        q++;
        if (q >= end || *q != (i + 1 < n ? ',' : '}'))
            return "labels not separated or closed";
        q++;
    }
    *p = q;
    return NULL;
}

/* An OpenMetrics exemplar at [p, end): `{name="value",...} number [number]`, names
 * [a-zA-Z_][a-zA-Z0-9_]*, values escaped, names and values together at most 128 bytes. */
static const char *check_exemplar(const char *p, const char *end)
{
    size_t bytes = 0;
    if (p >= end || *p++ != '{')
        return "an exemplar without labels";
    while (p < end && *p != '}') {
        const char *name = p;
        while (p < end && (*p == '_' || (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z')
                           || (p > name && *p >= '0' && *p <= '9')))
            p++;
        if (p == name || p + 1 >= end || p[0] != '=' || p[1] != '"')
            return "an exemplar label is not name=\"value\"";
        bytes += (size_t) (p - name);
        for (p += 2; p < end && *p != '"'; p++, bytes++)
            if (*p == '\\' && ++p >= end)
                return "an exemplar label value is not closed";
        if (p >= end)
            return "an exemplar label value is not closed";
        p++;
        if (p < end && *p == ',')
            p++;
    }
    if (bytes > 128)
        return "exemplar labels longer than 128 bytes";
    if (p >= end || *p++ != '}' || p >= end || *p++ != ' ')
        return "an exemplar's labels are not closed or not followed by its value";
    for (int i = 0; i < 2 && p < end; i++) {
        char *num_end;
        (void) strtod(p, &num_end);
        if (num_end == p || (num_end != end && *num_end != ' '))
            return "an exemplar's value or timestamp is not a number";
        p = num_end + (num_end != end);
    }
    return p == end ? NULL : "an exemplar has more than a value and a timestamp";
}

/* NULL when text is a well-formed exposition of the schema in fmt: every family exactly once,
 * in schema order, HELP then TYPE with the right type; every sample named after its family
 * with an allowed suffix, the family's labels in order (and le on buckets), label values
 * properly escaped, a value that parses as a number; OpenMetrics ends with # EOF.  Otherwise
 * what is wrong and on which line. */
static inline const char *exposition_problem(const char *text, enum hodei_format fmt)
{
    static const char *const types[] = { "counter", "gauge", "histogram" };
    int id = -1, line = 0;
    const char *p = text;
    while (*p) {
        const char *end = strchr(p, '\n');
        line++;
        if (end == NULL)
            EXPOSITION_PROBLEM("line %d is not terminated", line);
        size_t len = (size_t) (end - p);
        if (len == 5 && memcmp(p, "# EOF", 5) == 0) {
            if (fmt != HODEI_FMT_OPENMETRICS || end[1] != '\0')
                EXPOSITION_PROBLEM("line %d: # EOF out of place", line);
            break;
        }
        if (len >= 7 && memcmp(p, "# HELP ", 7) == 0) {
            if (++id >= HODEI_F_COUNT)
                EXPOSITION_PROBLEM("line %d: more families than the schema", line);
            const struct hodei_family *f = &hodei_families[id];
            size_t base = family_base_len(f, fmt);
            char type_line[160];
            int n = snprintf(type_line, sizeof(type_line), "# TYPE %.*s %s\n", (int) base,
                             f->name, types[f->type]);
            if (len < 8 + base || memcmp(p + 7, f->name, base) != 0 || p[7 + base] != ' ')
                EXPOSITION_PROBLEM("line %d: HELP of another family than %s", line, f->name);
            if (strncmp(end + 1, type_line, (size_t) n) != 0)
                EXPOSITION_PROBLEM("line %d: %s's TYPE line missing or wrong", line + 1, f->name);
            p = end + 1 + n;
            line++;
            continue;
        }
        if (*p == '#')
            EXPOSITION_PROBLEM("line %d: an unexpected comment", line);
        if (id < 0)
            EXPOSITION_PROBLEM("line %d: a sample before any family", line);
        const struct hodei_family *f = &hodei_families[id];
        size_t base = family_base_len(f, fmt);
        if (len < base || memcmp(p, f->name, base) != 0)
            EXPOSITION_PROBLEM("line %d: a sample not of family %s", line, f->name);
        const char *q = p + base, *name_end = q;
        while (name_end < end && *name_end != '{' && *name_end != ' ')
            name_end++;
        if (!suffix_allowed(f, fmt, q, (size_t) (name_end - q)))
            EXPOSITION_PROBLEM("line %d: suffix %.*s not allowed for %s", line,
                               (int) (name_end - q), q, f->name);
        const char *names[HODEI_LABELS_MAX + 1];
        unsigned nnames = 0;
        for (; nnames < f->nlabels; nnames++)
            names[nnames] = hodei_label_name(f, nnames);
        if (name_end - q == 7 && memcmp(q, "_bucket", 7) == 0)
            names[nnames++] = "le";
        q = name_end;
        const char *why = check_labels(&q, end, names, nnames);
        if (why)
            EXPOSITION_PROBLEM("line %d: %s", line, why);
        if (q >= end || *q != ' ')
            EXPOSITION_PROBLEM("line %d: no space before the value", line);
        q++;
        /* OpenMetrics: a bucket may carry an exemplar after its value */
        const char *value_end = end, *ex = NULL;
        if (fmt == HODEI_FMT_OPENMETRICS && nnames > f->nlabels) {
            ex = strstr(q, " # ");
            if (ex && ex < end)
                value_end = ex;
            else
                ex = NULL;
        }
        char *num_end;
        double v = strtod(q, &num_end);
        (void) v;
        if (q == value_end || num_end != value_end)
            EXPOSITION_PROBLEM("line %d: the value is not a number", line);
        if (ex && (why = check_exemplar(ex + 3, end)) != NULL)
            EXPOSITION_PROBLEM("line %d: %s", line, why);
        p = end + 1;
    }
    if (fmt == HODEI_FMT_OPENMETRICS && strstr(text, "# EOF\n") == NULL)
        EXPOSITION_PROBLEM("no # EOF");
    if (id != HODEI_F_COUNT - 1)
        EXPOSITION_PROBLEM("%d families of %d", id + 1, HODEI_F_COUNT);
    return NULL;
}

#endif
