#!/usr/bin/perl
# Exemplars in OpenMetrics, read back by Debian's python3-prometheus-client parser: every
# exemplar of the binary snapshot (labels, value, timestamp) comes back as written, label
# values that need escaping and labels exactly at OpenMetrics' 128-character limit included;
# the parser does refuse one character more, so the check can fail.  Text 0.0.4 has none.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use HodeiTest;
use Test::More;

my $python = '/usr/bin/python3';
my $lat = 'hodei_scheduling_latency_seconds';

# a default fill (generated exemplars), and one whose exemplars are hostile or at the limit
my $fill = "$TMP/fill";
is(system("build/hodei-shm-fill --tenants 5 $fill"), 0, 'a populated segment');
open(my $fh, '>', "$TMP/observations") or die;
print $fh "$lat 0.0000021 17 te\"n\\a 1700000000.125\n";             # a quote, a backslash
print $fh "$lat 0.003 18 t\xc3\xa9nant-\xe2\x82\xac 1700000001\n";      # UTF-8
my $limit = 'x' x (128 - 6 - 9 - 4);                               # job_id, tenant_id, acme
print $fh "$lat 0.02 $limit acme 1700000002.5\n";
my $over = 'x' x (128 - 6 - 9 - 4 + 1);
print $fh "$lat 0.03 $over acme 1700000003\n";                     # dropped: 129 characters
print $fh "$lat 7 19 acme\n";                                      # the snapshot's own time
close $fh;
my $hostile = "$TMP/hostile";
is(system("build/hodei-shm-fill --observations $TMP/observations $hostile"), 0,
   'a segment with hostile exemplars');

my $py = <<'PY';
import sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
written = set()
for line in open(sys.argv[2], encoding="utf-8"):
    name, labels, ex, value, ts = line.rstrip("\n").split("\t")
    le = labels.split("le=")[1]
    le = "+Inf" if le == "inf" else repr(float(le))
    written.add((name, le, tuple(sorted(tuple(kv.split("=", 1)) for kv in ex.split(","))),
                 float(value), float(ts)))
parsed = set()
for fam in text_string_to_metric_families(open(sys.argv[1], encoding="utf-8").read()):
    for s in fam.samples:
        if s.exemplar is None:
            continue
        le = s.labels["le"]
        le = "+Inf" if le == "+Inf" else repr(float(le))
        parsed.add((s.name, le, tuple(sorted(s.exemplar.labels.items())), s.exemplar.value,
                    float(s.exemplar.timestamp)))
print(len(written), len(parsed), len(written ^ parsed))
for k in sorted(written ^ parsed, key=str)[:5]:
    print("diff", k, k in written, k in parsed, file=sys.stderr)
PY
open(my $pf, '>', "$TMP/compare.py") or die;
print $pf $py;
close $pf;

for my $case ([$fill, 30, 'populated'], [$hostile, 4, 'hostile']) {
    my ($seg, $want, $name) = @$case;
    system("build/hodei-metrics --openmetrics $seg > $seg.om") == 0 or die;
    system("build/tests/shm_dump_values --exemplars $seg > $seg.tsv") == 0 or die;
    my $out = `$python $TMP/compare.py $seg.om $seg.tsv 2>&1`;
    is($?, 0, "$name: the OpenMetrics parser accepts the rendering with its exemplars")
        or diag($out);
    my ($written, $parsed, $diff) = split ' ', $out;
    cmp_ok($written // 0, '>=', $want, "$name: $written exemplars written");
    is($diff, 0, "$name: every exemplar parsed back equals the one written") or diag($out);
}

my $om = slurp("$hostile.om");
like($om, qr/^${lat}_bucket\{le="0\.001"\} 1 # \{job_id="17",tenant_id="te\\"n\\\\a"\} 2\.1e-06 1700000000\.125$/m,
     'a label value is escaped as OpenMetrics says');
like($om, qr/^${lat}_bucket\{le="0\.025"\} 3 # \{job_id="x{109}",tenant_id="acme"\} 0\.02 1700000002\.5$/m,
     'labels of exactly 128 characters are kept');
like($om, qr/^${lat}_bucket\{le="0\.05"\} 4\n/m, 'one character more: counted, no exemplar');
like($om, qr/^${lat}_bucket\{le="10"\} 5 # \{job_id="19",tenant_id="acme"\} 7 1700000061$/m,
     'an exemplar without a time of its own has the snapshot\'s');
unlike(`build/hodei-metrics $hostile`, qr/ # \{/, 'text 0.0.4 carries no exemplar');

# The parser's own limit: one character over 128 is refused, so the check above can fail.
(my $bad = $om) =~ s/job_id="x{109}"/'job_id="' . ('x' x 110) . '"'/e;
open(my $bf, '>', "$TMP/bad.om") or die;
print $bf $bad;
close $bf;
my $out = `$python $TMP/compare.py $TMP/bad.om $hostile.tsv 2>&1`;
isnt($?, 0, 'the parser refuses an exemplar of 129 characters') or diag($out);

done_testing();
