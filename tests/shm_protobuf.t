#!/usr/bin/perl
# The protobuf exposition read back by an independent decoder: a metrics.proto written here
# from client_model's published field numbers, compiled by protoc, parsed by Python's
# google.protobuf.  Every value must equal what was written: the samples of a hodei-shm-fill
# segment (read straight from the binary snapshot by shm_dump_values), and native histograms
# and exemplars built by shm_native_pb, whose buckets are recomputed here from the raw
# observations with exact rational arithmetic.
use strict;
use warnings;
use File::Temp qw(tempdir);
use Test::More;
use lib 'tests/lib';
use HodeiTest qw(families);

my $build = 'build';
my $dir = tempdir(CLEANUP => 1);
my $python = '/usr/bin/python3';

# ---- the schema, from client_model's io/prometheus/client/metrics.proto ---------------------
# google.protobuf.Timestamp is declared locally with its field numbers (Debian's protoc comes
# without the well-known types); on the wire it is the same message.
open(my $proto, '>', "$dir/metrics.proto") or die;
print $proto <<'PROTO';
syntax = "proto2";
package io.prometheus.client;

message Timestamp { optional int64 seconds = 1; optional int32 nanos = 2; }
message LabelPair { optional string name = 1; optional string value = 2; }
enum MetricType {
  COUNTER = 0; GAUGE = 1; SUMMARY = 2; UNTYPED = 3; HISTOGRAM = 4; GAUGE_HISTOGRAM = 5;
}
message Gauge { optional double value = 1; }
message Counter {
  optional double value = 1;
  optional Exemplar exemplar = 2;
  optional Timestamp created_timestamp = 3;
}
message Quantile { optional double quantile = 1; optional double value = 2; }
message Summary {
  optional uint64 sample_count = 1;
  optional double sample_sum = 2;
  repeated Quantile quantile = 3;
  optional Timestamp created_timestamp = 4;
}
message Untyped { optional double value = 1; }
message Histogram {
  optional uint64 sample_count = 1;
  optional double sample_count_float = 4;
  optional double sample_sum = 2;
  repeated Bucket bucket = 3;
  optional Timestamp created_timestamp = 15;
  optional sint32 schema = 5;
  optional double zero_threshold = 6;
  optional uint64 zero_count = 7;
  optional double zero_count_float = 8;
  repeated BucketSpan negative_span = 9;
  repeated sint64 negative_delta = 10;
  repeated double negative_count = 11;
  repeated BucketSpan positive_span = 12;
  repeated sint64 positive_delta = 13;
  repeated double positive_count = 14;
  repeated Exemplar exemplars = 16;
}
message Bucket {
  optional uint64 cumulative_count = 1;
  optional double cumulative_count_float = 4;
  optional double upper_bound = 2;
  optional Exemplar exemplar = 3;
}
message BucketSpan { optional sint32 offset = 1; optional uint32 length = 2; }
message Exemplar {
  repeated LabelPair label = 1;
  optional double value = 2;
  optional Timestamp timestamp = 3;
}
message Metric {
  repeated LabelPair label = 1;
  optional Gauge gauge = 2;
  optional Counter counter = 3;
  optional Summary summary = 4;
  optional Untyped untyped = 5;
  optional Histogram histogram = 7;
  optional int64 timestamp_ms = 6;
}
message MetricFamily {
  optional string name = 1;
  optional string help = 2;
  optional MetricType type = 3;
  repeated Metric metric = 4;
  optional string unit = 5;
}
PROTO
close $proto;
is(system("protoc --proto_path=$dir --python_out=$dir $dir/metrics.proto"), 0,
   'protoc compiles the schema written from the published field numbers');

# Shared by both checks: splits a delimited stream into MetricFamily messages.
my $decode = <<'PY';
import math, sys
sys.path.insert(0, sys.argv[1])
import metrics_pb2
from google.protobuf.internal.decoder import _DecodeVarint32

def families(path):
    data = open(path, "rb").read()
    pos, out = 0, []
    while pos < len(data):
        n, pos = _DecodeVarint32(data, pos)
        if pos + n > len(data):
            sys.exit("a length prefix runs past the end of the stream")
        mf = metrics_pb2.MetricFamily()
        mf.ParseFromString(data[pos:pos + n])
        pos += n
        out.append(mf)
    return out

def seconds(ts):
    return ts.seconds + ts.nanos / 1e9
PY

# ---- every sample of a populated segment ---------------------------------------------------
my $seg = "$dir/segment";
system("$build/hodei-shm-fill", '--tenants', 60, '--workers', 200, $seg) == 0
    or BAIL_OUT('hodei-shm-fill failed');
is(system("$build/hodei-metrics --protobuf --stale-after 1e9 $seg > $dir/fill.pb"), 0,
   'hodei-metrics --protobuf renders the segment');
system("$build/tests/shm_dump_values --created $seg > $dir/written.tsv") == 0 or die;
system("$build/tests/shm_dump_values --exemplars $seg > $dir/exemplars.tsv") == 0 or die;
system("$build/hodei-metrics $seg > $dir/text.txt") == 0 or die;

# the schema's families, with the HELP the text exposition carries (unescaped)
open(my $meta, '>', "$dir/families.tsv") or die;
my %help;
for (split /\n/, HodeiTest::slurp("$dir/text.txt")) {
    next unless /^# HELP (\S+) (.*)$/;
    (my $h = $2) =~ s/\\(.)/$1 eq 'n' ? "\n" : $1/ge;
    $help{$1} = $h;
}
print $meta join("\t", $_->[0], $_->[1], $help{$_->[0]} // '') . "\n" for families();
close $meta;

my $compare_fill = $decode . <<'PY';
types = {0: "counter", 1: "gauge", 4: "histogram"}
written = {}
for line in open(sys.argv[3]):
    name, labels, value = line.rstrip("\n").split("\t")
    key = (name, tuple(sorted(tuple(kv.split("=", 1)) for kv in labels.split(",") if kv)))
    written[key] = float(value)
schema = [line.rstrip("\n").split("\t") for line in open(sys.argv[4])]
fams = families(sys.argv[2])
meta_wrong = [mf.name for mf, (name, typ, hlp) in zip(fams, schema)
              if (mf.name, types.get(mf.type), mf.help) != (name, typ, hlp)]
parsed, up, exemplars = {}, None, []
def le(x):
    return "inf" if math.isinf(x) else repr(float(x))
for mf in fams:
    for m in mf.metric:
        labels = tuple(sorted((l.name, l.value) for l in m.label))
        if mf.name == "hodei_scheduler_up":
            up = m.gauge.value
            continue
        if mf.name == "hodei_metrics_snapshot_age_seconds":
            continue
        if mf.type == metrics_pb2.COUNTER:
            parsed[(mf.name, labels)] = m.counter.value
            if m.counter.HasField("created_timestamp"):
                parsed[(mf.name + "_created", labels)] = seconds(m.counter.created_timestamp)
        elif mf.type == metrics_pb2.GAUGE:
            parsed[(mf.name, labels)] = m.gauge.value
        else:
            h = m.histogram
            def bucket(bound):
                return (mf.name + "_bucket", tuple(sorted(labels + (("le", bound),))))
            for b in h.bucket:
                parsed[bucket(le(b.upper_bound))] = b.cumulative_count
            parsed.setdefault(bucket("inf"), h.sample_count)
            parsed[(mf.name + "_count", labels)] = h.sample_count
            parsed[(mf.name + "_sum", labels)] = h.sample_sum
            if h.HasField("created_timestamp"):
                parsed[(mf.name + "_created", labels)] = seconds(h.created_timestamp)
            # the fill records the daemon's histograms as the daemon does: a native part
            # describing the same observations as the classic buckets
            counts, c = [], 0
            for d in h.positive_delta:
                c += d
                counts.append(c)
            if not h.HasField("schema") or h.zero_count + sum(counts) != h.sample_count:
                meta_wrong.append(mf.name + " has no native part of its sample count")
            for b in h.bucket:
                if b.HasField("exemplar"):
                    exemplars.append((mf.name, le(b.upper_bound),
                                      ",".join(f"{l.name}={l.value}" for l in b.exemplar.label),
                                      b.exemplar.value, seconds(b.exemplar.timestamp)))
def norm(d):
    return {(n, tuple((k, le(float(v)) if k == "le" and v != "inf" else v) for k, v in l)): x
            for (n, l), x in d.items()}
w, p = norm(written), norm(parsed)
missing = [k for k in w if k not in p]
extra = [k for k in p if k not in w]
wrong = [k for k in w if k in p and w[k] != p[k]]
# every exemplar the binary snapshot holds, and no other
want_ex = []
for line in open(sys.argv[5]):
    name, labels, ex, value, ts = line.rstrip("\n").split("\t")
    bound = labels.split("le=")[1]
    want_ex.append((name[:-len("_bucket")], "inf" if bound == "inf" else le(float(bound)), ex,
                    float(value), float(ts)))
ex_wrong = len(set(want_ex) ^ set(exemplars)) if len(want_ex) > 30 else -1
print(len(fams), len(schema), len(w), len(missing), len(extra), len(wrong), len(meta_wrong), up,
      ex_wrong, len(want_ex))
for k in (missing + extra + wrong)[:5]:
    print("diff", k, w.get(k), p.get(k), file=sys.stderr)
for k in meta_wrong[:5]:
    print("metadata", k, file=sys.stderr)
PY
open(my $py, '>', "$dir/compare_fill.py") or die;
print $py $compare_fill;
close $py;
my $written = "$dir/written.tsv $dir/families.tsv $dir/exemplars.tsv";
my $out = `$python $dir/compare_fill.py $dir $dir/fill.pb $written`;
is($?, 0, 'google.protobuf parses every MetricFamily of the stream');
my ($nfam, $nschema, $n, $missing, $extra, $wrong, $meta_wrong, $up, $ex_wrong, $nex) =
    split ' ', $out // '';
is($nfam, $nschema, "one MetricFamily per family of the schema ($nschema)");
cmp_ok($n, '>', 1000, "$n samples written");
is("$missing $extra $wrong", '0 0 0',
   'every value, bucket and _created time decoded equals the value written');
is($meta_wrong, 0, 'names, types and HELP texts are the schema\'s, in its order; every '
                  . 'histogram has a native part of its sample count');
is($ex_wrong, 0, "every exemplar decoded ($nex) is the binary snapshot's, labels, value and time");
cmp_ok($up // -1, '==', 1, 'hodei_scheduler_up is 1');

# The comparison can fail: change one counter's value in the stream.
my $bytes = HodeiTest::slurp("$dir/fill.pb");
my $at = index($bytes, "tenant-0007");                 # a label value, then its counter
my $value_at = index($bytes, "\x09", $at + 11) + 1;    # the double after the Counter's tag
substr($bytes, $value_at + 7, 1) = chr(ord(substr($bytes, $value_at + 7, 1)) ^ 0x01);
open(my $bad, '>', "$dir/bad.pb") or die;
print $bad $bytes;
close $bad;
$out = `$python $dir/compare_fill.py $dir $dir/bad.pb $written 2>/dev/null`;
is((split ' ', $out // '')[5], 1,
   'one changed byte in the stream is one wrong value (the check can fail)');

is(system("$build/hodei-metrics --protobuf $dir/missing > /dev/null 2>&1") >> 8, 1,
   'a missing segment exits 1');

# ---- native histograms and exemplars -------------------------------------------------------
is(system("$build/tests/shm_native_pb $dir/native.pb $dir/native.tsv"), 0,
   'shm_native_pb renders native histograms and exemplars');

my $compare_native = $decode . <<'PY';
from fractions import Fraction
WINDOW = 160

def key(v, s):
    """The smallest k with v <= 2^(k / 2^s), in exact rational arithmetic."""
    f = Fraction(v)
    def within(k):
        return f ** (2 ** s) <= Fraction(2) ** k if s >= 0 else f <= Fraction(2) ** (k << -s)
    k = math.ceil(math.log2(v) * 2.0 ** s)
    while within(k - 1):
        k -= 1
    while not within(k):
        k += 1
    return k

obs, threshold, exemplar_of, refused = {}, {}, {}, {}
for line in open(sys.argv[3]):
    f = line.rstrip("\n").split("\t")
    if f[0] == "observe":
        obs.setdefault(f[1], []).append(float(f[2]))
        # the exemplar of an observation, or None when it has none or it must be dropped
        ex = None
        if len(f) > 3 and f[3] == "ex":
            ex = ({"job_id": f[4], "tenant_id": f[5]}, float(f[2]), int(f[6]), int(f[7]))
        elif len(f) > 3:
            refused.setdefault(f[1], 0)
            refused[f[1]] += 1
        exemplar_of.setdefault(f[1], []).append(ex)
    elif f[0] == "threshold":
        threshold[f[1]] = float(f[2])

errors, checked, buckets_checked, exemplars_checked = [], 0, 0, 0
fams = {mf.name: mf for mf in families(sys.argv[2])}
for name, zt in threshold.items():
    h = fams[name].metric[0].histogram
    values = obs.get(name, [])
    positive = [v for v in values if v > zt]
    # the finest schema whose window of 160 buckets holds every value
    for s in range(3, -5, -1):
        keys = [key(v, s) for v in positive]
        if not keys or max(keys) - min(keys) + 1 <= WINDOW:
            break
    want = {}
    for k in keys:
        want[k] = want.get(k, 0) + 1
    total = 0.0
    for v in values:
        total += v
    got, k, i, run = {}, 0, 0, 0
    for n, span in enumerate(h.positive_span):
        k = span.offset if n == 0 else k + span.offset
        if n > 0 and span.offset <= 2:
            errors.append(f"{name}: span {n} after a gap of only {span.offset}")
        count = 0
        for j in range(span.length):
            count += h.positive_delta[i]
            i += 1
            got[k] = count
            k += 1
    if i != len(h.positive_delta):
        errors.append(f"{name}: {len(h.positive_delta)} deltas, spans hold {i}")
    populated = {k: c for k, c in got.items() if c != 0}
    if any(c < 0 for c in got.values()):
        errors.append(f"{name}: a negative bucket count")
    for what, have, expect in (("schema", h.schema, s), ("zero_threshold", h.zero_threshold, zt),
                               ("zero_count", h.zero_count, len(values) - len(positive)),
                               ("sample_count", h.sample_count, len(values)),
                               ("sample_sum", h.sample_sum, total)):
        if have != expect:
            errors.append(f"{name}: {what} is {have}, want {expect}")
    for k in sorted(set(populated) | set(want)):
        if populated.get(k) != want.get(k):
            errors.append(f"{name}: bucket {k} holds {populated.get(k)}, "
                          f"the observations put {want.get(k)} there")
            break
    buckets_checked += len(want)
    # exemplars: each classic bucket's is its last observation that had one it could carry
    bounds = [b.upper_bound for b in h.bucket] + [math.inf]
    want_ex = {}
    for v, ex in zip(values, exemplar_of.get(name, [])):
        if ex is not None:
            want_ex[next(b for b in bounds if v <= b)] = ex
    seen = {}
    for b in h.bucket:
        if b.HasField("exemplar"):
            e = b.exemplar
            seen[b.upper_bound] = ({l.name: l.value for l in e.label}, e.value,
                                   e.timestamp.seconds, e.timestamp.nanos)
    if seen != want_ex:
        errors.append(f"{name}: exemplars {sorted(seen.items())[:2]} "
                      f"want {sorted(want_ex.items())[:2]}")
    exemplars_checked += len(want_ex)
    checked += 1
def schema_of(name):
    return fams[name].metric[0].histogram.schema
print(checked, buckets_checked, len(errors), schema_of("hodei_scheduling_latency_seconds"),
      schema_of("hodei_queue_wait_time_seconds"), exemplars_checked, sum(refused.values()))
for e in errors[:10]:
    print(e, file=sys.stderr)
PY
open($py, '>', "$dir/compare_native.py") or die;
print $py $compare_native;
close $py;
$out = `$python $dir/compare_native.py $dir $dir/native.pb $dir/native.tsv`;
is($?, 0, 'the stream with native histograms parses');
my ($hists, $nbuckets, $errors, $lat_schema, $wait_schema, $nexemplars, $nrefused) =
    split ' ', $out // '';
is($hists, 3, 'three native histograms checked');
cmp_ok($nbuckets, '>', 100, "$nbuckets populated buckets recomputed from the observations");
is($errors, 0, 'schema, zero bucket, count, sum, every bucket and every exemplar are as written');
cmp_ok($nexemplars, q(>=), 12,
       "$nexemplars exemplars checked: each bucket's last observation that had one");
cmp_ok($nrefused, '>=', 50, "$nrefused exemplars over 128 characters or not UTF-8 were dropped");
is($lat_schema, 3, 'scheduling latency keeps schema 3');
cmp_ok($wait_schema // 3, '<', 3,
       "queue wait, 10 us .. 10^4 s, was reduced to schema $wait_schema");

done_testing();
