#!/usr/bin/perl
# Debian's Prometheus 2.42, with native histograms and exemplar storage on and Hodei's rules
# loaded (conf/hodei.rules.yml and conf/hodei.native.rules.yml), scrapes nginx serving a
# segment whose histograms hold known observations (hodei-shm-fill --observations): first a
# set S, then S twice, so that over the scrapes the histograms grow by exactly S.
#  * At a location with hodei_native_histograms on it asks for protobuf first, gets it, and
#    keeps the native histograms: histogram_quantile over them lands within the schema's error
#    of the true quantiles, 1-10 us included, and so do the recording rules over their rates;
#    the classic buckets are not kept (2.42 ingests only the native part of a histogram that
#    has both).  The native alerts evaluate: the one that sees S's slow decisions is pending,
#    the one that says native histograms are missing is not.
#  * At a location with it off it gets OpenMetrics: the classic buckets, and from
#    /api/v1/query_exemplars each bucket's latest exemplar, the job observed there last.
# A configuration that misuses the directive is refused by nginx -t.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use HodeiTest;
use POSIX qw(ceil);
use Test::More;
use Time::HiRes qw(sleep time);

my $port = $ENV{HODEI_TEST_NATIVE_PORT} || 18431;
my $prom_port = $ENV{HODEI_TEST_NATIVE_PROM_PORT} || 18432;

# ---- the directive's configuration errors --------------------------------------------------

my $n = 0;
for my $case (['hodei_native_histograms maybe;', qr/invalid value "maybe"/],
              ['hodei_native_histograms;', qr/invalid number of arguments/],
              ['hodei_native_histograms on; hodei_native_histograms off;', qr/is duplicate/]) {
    my ($directive, $why) = @$case;
    my $dir = "$TMP/conf-" . $n++;
    my $conf = nginx_conf(dir => $dir, http => <<"HTTP");
    server {
        listen 127.0.0.1:$port;
        location = /api/v1/metrics { hodei_metrics; $directive }
    }
HTTP
    my ($status, $out, $err) = run('/usr/sbin/nginx', '-t', '-p', $dir, '-c', $conf);
    ok($status != 0 && $err =~ $why, "nginx -t refuses '$directive'") or diag($err);
}

# ---- known observations ----------------------------------------------------------------------

# S, deterministic: log-uniform scheduling latencies 1 us .. 20 ms (a tenth of them below
# 3 us), queue waits 10 us .. 10^4 s (too wide for schema 3: the histogram reduces its
# resolution).  Observation i is an exemplar of job i+1 of one of three tenants.
my $now = int(time);
my ($x, @s) = (88172645463325252);
sub uniform {
    $x ^= ($x << 13) & ~0;
    $x ^= $x >> 7;
    $x ^= ($x << 17) & ~0;
    return ($x >> 11) / 9007199254740992;
}
my $lat = 'hodei_scheduling_latency_seconds';
my $wait = 'hodei_queue_wait_time_seconds';
my $dur = 'hodei_job_duration_seconds';
push @s, [$lat, 1e-6 * 2e4 ** uniform()] for 1 .. 5000;
push @s, [$wait, 1e-5 * 1e9 ** uniform()] for 1 .. 1000;

# Writes the segment of @obs (their exemplars a few minutes old, in order).
my $seg = "$TMP/segment";
sub fill {
    my (@obs) = @_;
    open(my $fh, '>', "$TMP/observations") or die;
    print $fh "# FAMILY SECONDS JOB_ID TENANT_ID UNIX_SECONDS\n$dur\n";   # no job finished yet
    for my $i (0 .. $#obs) {
        my ($family, $v) = @{ $obs[$i] };
        printf $fh "%s %.17g %d tenant-%d %.3f\n", $family, $v, $i + 1, $i % 3 + 1,
            $now - 300 + $i * 0.01;
    }
    close $fh;
    system('build/hodei-shm-fill', '--observations', "$TMP/observations", $seg) == 0
        or BAIL_OUT('hodei-shm-fill --observations failed');
}
fill(@s);

# ---- nginx: protobuf at one location, OpenMetrics at the other; Prometheus -------------------

my $nginx = start_nginx(port => $port, http => <<"HTTP");
    hodei_segment $seg;
    hodei_stale_after 1h;
    log_format accept '\$uri \$http_accept';
    server {
        listen 127.0.0.1:$port;
        access_log $TMP/access.log accept;
        location = /api/v1/metrics { hodei_metrics; hodei_native_histograms on; }
        location = /classic { hodei_metrics; }
    }
HTTP

my $root = root();
open(my $cfg, '>', "$TMP/prometheus.yml") or die;
print $cfg <<"YML";
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - $root/conf/hodei.rules.yml
  - $root/conf/hodei.native.rules.yml
scrape_configs:
  - job_name: native
    metrics_path: /api/v1/metrics
    static_configs:
      - targets: ['127.0.0.1:$port']
  - job_name: classic
    metrics_path: /classic
    static_configs:
      - targets: ['127.0.0.1:$port']
YML
close $cfg;
spawn("$TMP/prometheus.log", 'prometheus', "--config.file=$TMP/prometheus.yml",
      "--storage.tsdb.path=$TMP/data", "--web.listen-address=127.0.0.1:$prom_port",
      '--enable-feature=native-histograms,exemplar-storage');
ok(wait_port($prom_port, 30), 'Prometheus listens on loopback')
    or BAIL_OUT(slurp("$TMP/prometheus.log"));

my $api = "http://127.0.0.1:$prom_port/api/v1";
sub query {
    (my $q = shift) =~ s/([^A-Za-z0-9_.~-])/sprintf('%%%02X', ord $1)/ge;
    my $r = http_get("$api/query?query=$q");
    my $res = $r->{success} ? from_json($r->{content})->{data}{result} : undef;
    return $res && @$res ? $res->[0]{value}[1] : undef;
}

# two scrapes of S, then S twice: the histograms grow by exactly S
sub scrapes { query("min(count_over_time(up[1h]))") // 0 }
ok(wait_for(90, sub { scrapes() >= 2 }), 'Prometheus scraped S at both locations twice');
my $before = scrapes();
fill(@s, @s);
ok(wait_for(90, sub { scrapes() >= $before + 3 }), '... and S twice, three times');
is(query('min(up)'), '1', 'up is 1 for both: each stream parsed')
    or diag(`grep -i error $TMP/prometheus.log | tail -5`);
my ($first) = grep { m{^/api/v1/metrics } } split /\n/, slurp("$TMP/access.log");
my $protobuf = 'application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;'
               . 'encoding=delimited,';
like($first // '', qr{^/api/v1/metrics \Q$protobuf\E},
     'Prometheus asks for the delimited protobuf format first');

# ---- native: counts, sums, quantiles -------------------------------------------------------------

my (%values, %sum);
for (@s) {
    push @{ $values{ $_->[0] } }, $_->[1];
    $sum{ $_->[0] } += $_->[1];
}
is(query("histogram_count($lat\{job=\"native\"})"), 2 * @{ $values{$lat} },
   'native count of scheduling latency');
is(query("histogram_count($wait\{job=\"native\"})"), 2 * @{ $values{$wait} },
   'native count of queue wait');
is(query("histogram_count($dur\{job=\"native\"})"), '0', 'an empty native histogram');
my $got_sum = query("histogram_sum($lat\{job=\"native\"})") // 0;
cmp_ok(abs($got_sum - 2 * $sum{$lat}), '<=', 1e-9 * $sum{$lat}, "native sum ($got_sum)");
is(query("count(${lat}_bucket{job=\"native\"})"), undef,
   'Prometheus 2.42 keeps only the native part of a histogram that has both');
is(query("count(${lat}_bucket{job=\"classic\"})"), 13,
   'the location with the directive off serves the classic buckets');

# The true q-quantile of S (S twice has the same).
sub truth {
    my ($family, $q) = @_;
    my @sorted = sort { $a <=> $b } @{ $values{$family} };
    return $sorted[ceil($q * @sorted) - 1];
}
my @errors;
sub within {
    my ($what, $est, $truth, $bound) = @_;
    my $err = !defined $est || $est eq 'NaN' ? 1 : abs($est - $truth) / $truth;
    push @errors, sprintf('%s %.3g%%', $what, 100 * $err);
    cmp_ok($err, '<=', $bound, sprintf('%s: %.4g s, true %.4g s (%.2f%%)', $what, $est // 'NaN',
                                        $truth, 100 * $err));
}

# within 4.5% at schema 3 (quantiles 0.02 .. 0.2 lie between 1 and 10 us); the reduced
# histogram (schema 2, a bucket twice as wide) within 9.1%
for my $case ([$lat, 0.045, [0.02, 0.05, 0.1, 0.2, 0.5, 0.9, 0.99]],
              [$wait, 0.091, [0.1, 0.5, 0.9]]) {
    my ($family, $bound, $qs) = @$case;
    within("$family q$_", query("histogram_quantile($_,$family\{job=\"native\"})"),
           truth($family, $_), $bound) for @$qs;
}
ok(grep({ $_ < 1e-5 } @{ $values{$lat} }) > 500,
   'more than 500 of the latencies lie below 10 us');

# ---- the rules, over the rates --------------------------------------------------------------

my $rules = eval { from_json(http_get("$api/rules")->{content}) } || {};
my @loaded = map { @{ $_->{rules} } } @{ $rules->{data}{groups} || [] };
my @unhealthy = map { "$_->{name}: $_->{lastError}" } grep { $_->{health} ne 'ok' } @loaded;
cmp_ok(scalar(@loaded), '>=', 27, 'Prometheus loaded both rule files (' . @loaded . ' rules)');
is_deeply(\@unhealthy, [], 'every rule evaluates without error');
for my $rule (['hodei:scheduling_latency_seconds:p50_1m', $lat, 0.5, 0.045],
              ['hodei:scheduling_latency_seconds:p95_1m', $lat, 0.95, 0.045],
              ['hodei:scheduling_latency_seconds:p99_1m', $lat, 0.99, 0.045],
              ['hodei:scheduling_latency_seconds:p95_5m', $lat, 0.95, 0.045],
              ['hodei:queue_wait_time_seconds:p50_1m', $wait, 0.5, 0.091]) {
    my ($record, $family, $q, $bound) = @$rule;
    my $v;
    wait_for(30, sub { $v = query($record); defined $v && $v ne 'NaN' });
    within("rule $record", $v, truth($family, $q), $bound);
}
my $slower = grep { $_ > 1e-4 } @{ $values{$lat} };
my $share;
wait_for(30, sub { $share = query('hodei:scheduling_latency_seconds:slower_than_100us_5m');
                   defined $share && $share ne 'NaN' });
cmp_ok(abs(($share // 1) - $slower / @{ $values{$lat} }), '<=', 0.01,
       sprintf('rule slower_than_100us_5m: %.4f, true %.4f', $share // -1,
               $slower / @{ $values{$lat} }));
my %alerts;
wait_for(30, sub {
    my $r = eval { from_json(http_get("$api/alerts")->{content}) } || {};
    %alerts = map { ($_->{labels}{alertname} => $_->{state}) } @{ $r->{data}{alerts} || [] };
    $alerts{HodeiSchedulingDecisionsSlow};
});
is($alerts{HodeiSchedulingDecisionsSlow}, 'pending',
   'HodeiSchedulingDecisionsSlow sees S\'s p99 over 1 ms (pending for its 10 minutes)');
is($alerts{HodeiNativeHistogramsMissing}, undef, 'HodeiNativeHistogramsMissing stays silent');
is($alerts{HighSchedulingLatency}, undef, 'HighSchedulingLatency stays silent (p95 < 100 ms)');
# ... and it would fire where there is no native histogram: its expression, with another name
my ($missing) = grep { $_->{name} eq 'HodeiNativeHistogramsMissing' } @loaded;
(my $elsewhere = $missing->{query} // '') =~ s/\b$lat\b/hodei_no_such_histogram_seconds/;
is(query($elsewhere), '1', 'its expression is 1 without native histograms: ' . $elsewhere);
diag("quantile errors: @errors");

# ---- OpenMetrics: each bucket's latest exemplar is its last observation --------------------------

sub le_key { $_[0] eq '+Inf' ? '+Inf' : $_[0] + 0 }
my @obs = (@s, @s);
for my $family ($lat, $wait) {
    my ($def) = grep { $_->{name} eq $family } @{ schema()->{families} };
    my @le = (@{ $def->{buckets} }, '+Inf');
    my %want;    # le => job id of the last observation in that bucket
    for my $i (0 .. $#obs) {
        my ($name, $v) = @{ $obs[$i] };
        next unless $name eq $family;
        my ($le) = grep { $_ eq '+Inf' || $v <= $_ } @le;
        $want{ le_key($le) } = "" . ($i + 1);
    }
    my %got;
    wait_for(30, sub {
        my $r = http_get("$api/query_exemplars?query=${family}_bucket{job=\"classic\"}"
                         . '&start=' . ($now - 3600) . '&end=' . ($now + 3600));
        my $data = $r->{success} ? from_json($r->{content})->{data} : [];
        for my $series (@$data) {
            my ($latest) = sort { $b->{timestamp} <=> $a->{timestamp} } @{ $series->{exemplars} };
            $got{ le_key($series->{seriesLabels}{le}) } = $latest->{labels}{job_id} if $latest;
        }
        keys %got >= keys %want && !grep { $got{$_} ne $want{$_} } keys %want;
    });
    is_deeply(\%got, \%want, "query_exemplars of $family: every bucket's latest exemplar is the "
                             . 'job observed there last (' . scalar(keys %want) . ' buckets)');
}

done_testing();
