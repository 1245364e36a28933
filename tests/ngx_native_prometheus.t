#!/usr/bin/perl
# Debian's Prometheus 2.42, with native histograms and exemplar storage on, scrapes nginx
# serving a segment whose histograms hold known observations (hodei-shm-fill --observations):
#  * at a location with hodei_native_histograms on it asks for protobuf first, gets it, and
#    keeps the native histograms; histogram_quantile over them lands within the schema's
#    error of the true quantiles, 1-10 us included; the classic buckets are not kept (2.42
#    ingests only the native part of a histogram that has both);
#  * at a location with it off it gets OpenMetrics: the classic buckets, and from
#    /api/v1/query_exemplars each bucket's exemplar, the job that was observed there last.
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

# Deterministic: log-uniform scheduling latencies 1 us .. 20 ms (a tenth of them below 3 us),
# queue waits 10 us .. 10^4 s (too wide for schema 3: the histogram reduces its resolution),
# each an exemplar of job i+1 of one of three tenants, at times a few minutes old.
my $now = int(time);
my ($x, @obs) = (88172645463325252);
sub uniform {
    $x ^= ($x << 13) & ~0;
    $x ^= $x >> 7;
    $x ^= ($x << 17) & ~0;
    return ($x >> 11) / 9007199254740992;
}
my $lat = 'hodei_scheduling_latency_seconds';
my $wait = 'hodei_queue_wait_time_seconds';
my $dur = 'hodei_job_duration_seconds';
push @obs, [$lat, 1e-6 * 2e4 ** uniform()] for 1 .. 5000;
push @obs, [$wait, 1e-5 * 1e9 ** uniform()] for 1 .. 1000;
open(my $fh, '>', "$TMP/observations") or die;
print $fh "# FAMILY SECONDS JOB_ID TENANT_ID UNIX_SECONDS\n$dur\n";   # no job finished yet
for my $i (0 .. $#obs) {
    my ($family, $v) = @{ $obs[$i] };
    printf $fh "%s %.17g %d tenant-%d %.3f\n", $family, $v, $i + 1, $i % 3 + 1,
        $now - 300 + $i * 0.01;
}
close $fh;
my $seg = "$TMP/segment";
system('build/hodei-shm-fill', '--observations', "$TMP/observations", $seg) == 0
    or BAIL_OUT('hodei-shm-fill --observations failed');

# ---- nginx: protobuf at one location, OpenMetrics at the other --------------------------------

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

open(my $cfg, '>', "$TMP/prometheus.yml") or die;
print $cfg <<"YML";
global:
  scrape_interval: 1s
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
    my $r = http_get("$api/query?query=" . shift);
    my $res = $r->{success} ? from_json($r->{content})->{data}{result} : undef;
    return $res && @$res ? $res->[0]{value}[1] : undef;
}

my ($scrapes, $deadline) = (0, time + 90);
while (time < $deadline) {
    $scrapes = query('min(count_over_time(up[1m]))') // 0;
    last if $scrapes >= 2;
    sleep 0.25;
}
cmp_ok($scrapes, '>=', 2, "Prometheus scraped both locations at least twice ($scrapes)");
is(query('min(up)'), '1', 'up is 1 for both: each stream parsed')
    or diag(`grep -i error $TMP/prometheus.log | tail -5`);
my ($first) = grep { m{^/api/v1/metrics } } split /\n/, slurp("$TMP/access.log");
my $protobuf = 'application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;'
               . 'encoding=delimited,';
like($first // '', qr{^/api/v1/metrics \Q$protobuf\E},
     'Prometheus asks for the delimited protobuf format first');

# ---- native: counts, sums, quantiles ------------------------------------------------------------

my (%values, %sum);
for (@obs) {
    push @{ $values{ $_->[0] } }, $_->[1];
    $sum{ $_->[0] } += $_->[1];
}
is(query("histogram_count($lat\{job=\"native\"})"), scalar @{ $values{$lat} },
   'native count of scheduling latency');
is(query("histogram_count($wait\{job=\"native\"})"), scalar @{ $values{$wait} },
   'native count of queue wait');
is(query("histogram_count($dur\{job=\"native\"})"), '0', 'an empty native histogram');
my $got_sum = query("histogram_sum($lat\{job=\"native\"})") // 0;
cmp_ok(abs($got_sum - $sum{$lat}), '<=', 1e-9 * $sum{$lat}, "native sum ($got_sum)");
is(query("count(${lat}_bucket{job=\"native\"})"), undef,
   'Prometheus 2.42 keeps only the native part of a histogram that has both');
is(query("count(${lat}_bucket{job=\"classic\"})"), 13,
   'the location with the directive off serves the classic buckets');

# within 4.5% at schema 3 (quantiles 0.02 .. 0.2 lie between 1 and 10 us); the reduced
# histogram (schema 2, a bucket twice as wide) within 9.1%
my @errors;
for my $case ([$lat, 0.045, [0.02, 0.05, 0.1, 0.2, 0.5, 0.9, 0.99]],
              [$wait, 0.091, [0.1, 0.5, 0.9]]) {
    my ($family, $bound, $qs) = @$case;
    my @sorted = sort { $a <=> $b } @{ $values{$family} };
    for my $q (@$qs) {
        my $truth = $sorted[ceil($q * @sorted) - 1];
        my $est = query("histogram_quantile($q,$family\{job=\"native\"})") // 'NaN';
        my $err = $est eq 'NaN' ? 1 : abs($est - $truth) / $truth;
        push @errors, sprintf('%s q%s %.3g%%', $family, $q, 100 * $err);
        cmp_ok($err, '<=', $bound, sprintf('%s q%s: %.4g s, true %.4g s (%.2f%%)', $family, $q,
                                            $est, $truth, 100 * $err));
    }
}
ok(grep({ $_ < 1e-5 } map { $_->[1] } grep { $_->[0] eq $lat } @obs) > 500,
   'more than 500 of the latencies lie below 10 us');
diag("quantile errors: @errors");

# ---- OpenMetrics: each bucket's exemplar is its last observation ---------------------------------

sub le_key { $_[0] eq '+Inf' ? '+Inf' : $_[0] + 0 }
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
    $deadline = time + 30;
    while (time < $deadline) {
        my $r = http_get("$api/query_exemplars?query=${family}_bucket{job=\"classic\"}"
                         . '&start=' . ($now - 3600) . '&end=' . ($now + 3600));
        my $data = $r->{success} ? from_json($r->{content})->{data} : [];
        for my $series (@$data) {
            my $le = le_key($series->{seriesLabels}{le});
            $got{$le} = $_->{labels}{job_id} for @{ $series->{exemplars} };
        }
        last if keys %got >= keys %want;
        sleep 0.5;
    }
    is_deeply(\%got, \%want, "query_exemplars of $family: every bucket's exemplar is the job "
                             . 'observed there last (' . scalar(keys %want) . ' buckets)');
}

done_testing();
