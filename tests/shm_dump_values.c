/*
 * shm_dump_values [--created | --exemplars] PATH — prints every sample of a segment's snapshot
 * straight from the validated binary view, not through the renderer, one per line:
 *     SAMPLE_NAME<TAB>label=value,...<TAB>%.17g
 * (histograms as _bucket/_count/_sum lines with cumulative counts; with --created also the
 * _created time of every counter and histogram), so a test can compare what a parser reads
 * back from the exposition against what was written.  --exemplars prints instead the
 * exemplar of every classic bucket that has one:
 *     SAMPLE_NAME<TAB>label=value,...,le=...<TAB>name=value,...<TAB>%.17g value<TAB>%.17g time
 */
#include <stdio.h>
#include <string.h>

#include "hodei_segment.h"
#include "hodei_snapshot.h"

static void print_labels(const struct hodei_snapshot *s, const struct hodei_family *f,
                         const unsigned char *rec, const char *extra)
{
    for (unsigned l = 0; l < f->nlabels; l++) {
        size_t len;
        const char *v = hodei_series_label(s, rec, l, &len);
        printf("%s%s=%.*s", l ? "," : "", hodei_label_name(f, l), (int) len, v);
    }
    if (extra)
        printf("%s%s", f->nlabels ? "," : "", extra);
}

static void sample(const struct hodei_snapshot *s, const struct hodei_family *f,
                   const unsigned char *rec, const char *suffix, const char *extra, double v)
{
    printf("%.*s%s\t", (int) f->name_len, f->name, suffix);
    print_labels(s, f, rec, extra);
    printf("\t%.17g\n", v);
}

int main(int argc, char **argv)
{
    struct hodei_seg_reader r;
    struct hodei_snapshot s;
    const char *why;
    int created = argc == 3 && strcmp(argv[1], "--created") == 0;
    int exemplars = argc == 3 && strcmp(argv[1], "--exemplars") == 0;
    if (created || exemplars) {
        argv++;
        argc--;
    }
    hodei_seg_reader_init(&r);
    if (argc != 2 || hodei_seg_load(&r, argv[1], &s, NULL, &why) != HODEI_SEG_OK)
        return 1;
    for (int id = 0; id < HODEI_F_COUNT; id++) {
        const struct hodei_snap_family *fam = s.family[id];
        const struct hodei_family *f = &hodei_families[id];
        if (fam == NULL)
            continue;
        size_t voff = hodei_series_values_off(fam->nlabels);
        for (uint32_t i = 0; i < fam->nseries; i++) {
            const unsigned char *rec = hodei_series_at(&s, fam, i);
            double v[2];
            memcpy(v, rec + voff, sizeof(v));
            if (exemplars && f->type != HODEI_HISTOGRAM)
                continue;
            if (created && f->type != HODEI_GAUGE)
                sample(&s, f, rec, "_created", NULL, v[0]);
            if (f->type != HODEI_HISTOGRAM) {
                sample(&s, f, rec, "", NULL, v[1]);
                continue;
            }
            uint64_t cumulative = 0;
            for (unsigned k = 0; k <= fam->nbuckets; k++) {
                uint64_t c;
                double le;
                char extra[64];
                memcpy(&c, rec + voff + 16 + 8 * k, 8);
                cumulative += c;
                if (k < fam->nbuckets) {
                    memcpy(&le, s.base + fam->bounds_off + 8 * k, 8);
                    snprintf(extra, sizeof(extra), "le=%.17g", le);
                } else {
                    snprintf(extra, sizeof(extra), "le=inf");
                }
                struct hodei_exemplar e;
                if (!exemplars) {
                    sample(&s, f, rec, "_bucket", extra, (double) cumulative);
                } else if (hodei_series_exemplar(&s, fam, rec, k, &e)) {
                    printf("%.*s_bucket\t", (int) f->name_len, f->name);
                    print_labels(&s, f, rec, extra);
                    for (unsigned l = 0; l < e.nlabels; l++)
                        printf("%s%.*s=%.*s", l ? "," : "\t", (int) e.label[l].name_len,
                               e.label[l].name, (int) e.label[l].value_len, e.label[l].value);
                    printf("\t%.17g\t%.17g\n", e.value, e.timestamp);
                }
            }
            if (exemplars)
                continue;
            sample(&s, f, rec, "_count", NULL, (double) cumulative);
            sample(&s, f, rec, "_sum", NULL, v[1]);
        }
    }
    return 0;
}
