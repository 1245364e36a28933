#!/usr/bin/perl
# Conformance of the renderer against the real consumers: promtool's linter on text 0.0.4, and
# python3-prometheus-client's OpenMetrics parser reading back exactly the values written.
use strict;
use warnings;
use File::Temp qw(tempdir);
use Test::More;

my $build = 'build';
my $dir = tempdir(CLEANUP => 1);
my $seg = "$dir/segment";

system("$build/hodei-shm-fill", '--tenants', 60, '--workers', 200, $seg) == 0
    or BAIL_OUT("hodei-shm-fill failed");

my $text = `$build/hodei-metrics $seg`;
is($?, 0, 'hodei-metrics renders the populated segment');
my @samples = grep { !/^#/ } split /\n/, $text;
cmp_ok(scalar @samples, '>', 1000, 'the rendering carries every sample (' . @samples . ')');

# promtool: exactly the findings the seed's own names force, nothing else.
open(my $in, '|-', "promtool check metrics > $dir/lint 2>&1") or die;
print $in $text;
close $in;
my $rc = $? >> 8;
my @findings = sort split /\n/, do { local (@ARGV, $/) = "$dir/lint"; <> };
is_deeply(\@findings, [
    'hodei_memory_usage_mb metric names should not contain abbreviated units',
    'hodei_workers_total non-counter metrics should not have "_total" suffix',
], 'promtool finds only the two names the seed forces') or diag(join "\n", @findings);
is($rc, 3, 'promtool reports them as lint findings (exit 3), not as a parse error');

# A parse error would be a different promtool exit: prove the check can fail.
open($in, '|-', "promtool check metrics > /dev/null 2>&1") or die;
print $in "# TYPE x counter\nx{a=\"b} 1\n";
close $in;
isnt($? >> 8, 0, 'promtool rejects a broken exposition (the check above can fail)');

# OpenMetrics: parse with the reference parser and compare against the binary snapshot.
system("$build/hodei-metrics --openmetrics $seg > $dir/om.txt") == 0 or die;
system("$build/tests/shm_dump_values $seg > $dir/written.tsv") == 0 or die;
my $py = <<'PY';
import math, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
written = {}
for line in open(sys.argv[2]):
    name, labels, value = line.rstrip("\n").split("\t")
    key = (name, tuple(sorted(tuple(kv.split("=", 1)) for kv in labels.split(",") if kv)))
    written[key] = float(value)
parsed = {}
families = 0
header_up = None
for fam in text_string_to_metric_families(open(sys.argv[1]).read()):
    families += 1
    for s in fam.samples:
        if s.name.endswith("_created"):
            continue
        if s.name == "hodei_scheduler_up":          # from the segment header, not the snapshot
            header_up = s.value
            continue
        if s.name == "hodei_metrics_snapshot_age_seconds":
            continue
        labels = dict(s.labels)
        if "le" in labels:
            labels["le"] = "inf" if labels["le"] == "+Inf" else repr(float(labels["le"]))
        parsed[(s.name, tuple(sorted(labels.items())))] = float(s.value)
def norm(d):
    out = {}
    for (name, labels), v in d.items():
        out[(name, tuple((k, repr(float(x)) if k == "le" and x != "inf" else x) for k, x in labels))] = v
    return out
w, p = norm(written), norm(parsed)
missing = [k for k in w if k not in p]
extra = [k for k in p if k not in w]
wrong = [k for k in w if k in p and not (w[k] == p[k] or (math.isnan(w[k]) and math.isnan(p[k])))]
print(families, len(w), len(missing), len(extra), len(wrong), header_up)
for k in (missing + extra + wrong)[:5]:
    print("diff", k, w.get(k), p.get(k), file=sys.stderr)
PY
my $out = `/usr/bin/python3 -c '$py' $dir/om.txt $dir/written.tsv`;
is($?, 0, 'the OpenMetrics parser accepts the rendering');
my ($families, $n, $missing, $extra, $wrong, $up) = split ' ', $out // '';
is($families, 27, 'it sees every family');
cmp_ok($n, '>', 1000, "$n samples written");
is("$missing $extra $wrong", '0 0 0', 'every value parsed back equals the value written');
cmp_ok($up // -1, '==', 1, 'hodei_scheduler_up is 1 for a fresh segment');
like(`tail -c 6 $dir/om.txt`, qr/^# EOF\n\z/, 'the OpenMetrics rendering ends with # EOF');

done_testing();
