#!/usr/bin/perl
# Debian's Prometheus 2.42, with its native-histograms feature on, scrapes the protobuf
# exposition that shm_native_pb renders (served as it is by a plain HTTP server, with the
# protobuf content type): it asks for protobuf first, ingests the native histograms, and its
# histogram_quantile over them lands within the schema's error of the true quantiles of the
# observations, microseconds included.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use HodeiTest;
use POSIX qw(ceil);
use Test::More;
use Time::HiRes qw(sleep time);

my $port = $ENV{HODEI_TEST_PB_PORT} || 18431;
my $prom_port = $ENV{HODEI_TEST_PB_PROM_PORT} || 18432;

system('build/tests/shm_native_pb', "$TMP/metrics.pb", "$TMP/written.tsv") == 0
    or BAIL_OUT('shm_native_pb failed');

# a static file server that logs each Accept header it is sent
open(my $srv, '>', "$TMP/serve.py") or die;
print $srv <<'PY';
import http.server, sys
body = open(sys.argv[1], "rb").read()
log = open(sys.argv[3], "a", buffering=1)
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        log.write(self.headers.get("Accept", "") + "\n")
        self.send_response(200)
        self.send_header("Content-Type", "application/vnd.google.protobuf; "
                         "proto=io.prometheus.client.MetricFamily; encoding=delimited")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[2])), Handler).serve_forever()
PY
close $srv;
spawn("$TMP/serve.log", '/usr/bin/python3', "$TMP/serve.py", "$TMP/metrics.pb", $port,
      "$TMP/accept.log");
ok(wait_port($port, 30), 'the exposition is served') or BAIL_OUT(slurp("$TMP/serve.log"));

open(my $cfg, '>', "$TMP/prometheus.yml") or die;
print $cfg <<"YML";
global:
  scrape_interval: 1s
scrape_configs:
  - job_name: hodei-server
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

my ($scrapes, $deadline) = (0, time + 60);
while (time < $deadline) {
    $scrapes = query('count_over_time(up{job="hodei-server"}[1m])') // 0;
    last if $scrapes >= 2;
    sleep 0.25;
}
cmp_ok($scrapes, '>=', 2, "Prometheus scraped at least twice ($scrapes)");
is(query('up{job="hodei-server"}'), '1', 'up is 1: the stream parsed')
    or diag(`grep -i error $TMP/prometheus.log | tail -5`);
my $protobuf = 'application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;'
               . 'encoding=delimited,';
like((split /\n/, slurp("$TMP/accept.log"))[0] // '', qr{^\Q$protobuf\E},
     'Prometheus asks for the delimited protobuf format first');

# what went in
my (%obs, %sum);
for (split /\n/, slurp("$TMP/written.tsv")) {
    my ($kind, $family, $v) = split /\t/;
    next unless $kind eq 'observe';
    push @{ $obs{$family} }, $v;
    $sum{$family} += $v;
}
my $lat = 'hodei_scheduling_latency_seconds';
my $wait = 'hodei_queue_wait_time_seconds';
is(query("histogram_count($lat)"), scalar @{ $obs{$lat} }, 'native count of scheduling latency');
is(query("histogram_count($wait)"), scalar @{ $obs{$wait} }, 'native count of queue wait');
is(query('histogram_count(hodei_job_duration_seconds)'), '0', 'an empty native histogram');
my $got_sum = query("histogram_sum($lat)") // 0;
cmp_ok(abs($got_sum - $sum{$lat}), '<=', 1e-12 * $sum{$lat}, "native sum ($got_sum)");
is(query("count(${lat}_bucket)"), undef,
   'Prometheus 2.42 keeps only the native part of a histogram that has both');

# quantiles: within 4.5% at schema 3, 1 us .. 10 us included; the reduced one within 9.1%
for my $case ([$lat, 0.045, [0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.9, 0.99]],
              [$wait, 0.091, [0.1, 0.5, 0.9]]) {
    my ($family, $bound, $qs) = @$case;
    my @sorted = sort { $a <=> $b } @{ $obs{$family} };
    for my $q (@$qs) {
        my $truth = $sorted[ceil($q * @sorted) - 1];
        my $est = query("histogram_quantile($q,$family)") // 'NaN';
        my $err = $est eq 'NaN' ? 1 : abs($est - $truth) / $truth;
        cmp_ok($err, '<=', $bound, sprintf('%s q%s: %.4g, true %.4g (%.2f%%)', $family, $q,
                                            $est, $truth, 100 * $err));
    }
}

my $r = http_get("$api/query_exemplars?query=$lat&start=0&end=4000000000");
my $ex = $r->{success} ? from_json($r->{content})->{data} : [];
my @labels = map { my $l = $_->{labels}; "$l->{job_id}/$l->{tenant_id}" }
             map { @{ $_->{exemplars} } } @$ex;
ok(scalar(grep { m{^\d+/tenant-\d{4}$} } @labels),
   'exemplars with job_id and tenant_id reach the exemplar storage (' . join(' ', @labels) . ')');

done_testing();
