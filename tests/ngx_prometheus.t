#!/usr/bin/perl
# Debian's real Prometheus scrapes nginx with the module and a populated segment; every
# family reaches it, `up` is 1, and promtool's linter finds nothing but the seed's names.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use HodeiTest;
use Test::More;
use Time::HiRes qw(sleep time);

my $port = $ENV{HODEI_TEST_NGINX_PORT} || 18401;
my $prom_port = $ENV{HODEI_TEST_PROM_PORT} || 18402;
my $seg = "$TMP/segment";

system('build/hodei-shm-fill', '--tenants', 5, '--workers', 8, $seg) == 0
    or BAIL_OUT('hodei-shm-fill failed');
# The fill tool's snapshot is not refreshed: allow it to be old rather than stale.
start_nginx(port => $port, http => <<"HTTP");
    hodei_segment $seg;
    hodei_http_zone hodei_http 1m;
    hodei_stale_after 1h;
    server {
        listen 127.0.0.1:$port;
        location = /api/v1/metrics { hodei_metrics; }
        location / { return 204; }
    }
HTTP

open(my $cfg, '>', "$TMP/prometheus.yml") or die;
print $cfg <<"YML";
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: hodei-server
    metrics_path: /api/v1/metrics
    static_configs:
      - targets: ['127.0.0.1:$port']
YML
close $cfg;
spawn("$TMP/prometheus.log", 'prometheus', "--config.file=$TMP/prometheus.yml",
      "--storage.tsdb.path=$TMP/data", "--web.listen-address=127.0.0.1:$prom_port");
ok(wait_port($prom_port, 30), 'Prometheus listens on loopback') or BAIL_OUT(`tail $TMP/prometheus.log`);

my $api = "http://127.0.0.1:$prom_port/api/v1";
sub query {
    my $r = http_get("$api/query?query=" . shift);
    return $r->{success} ? from_json($r->{content})->{data}{result} : undef;
}

# two completed scrapes
my $scrapes = 0;
my $deadline = time + 30;
while (time < $deadline) {
    my $res = query('count_over_time(up{job="hodei-server"}[1m])');
    $scrapes = $res && @$res ? $res->[0]{value}[1] : 0;
    last if $scrapes >= 2;
    sleep 0.25;
}
cmp_ok($scrapes, '>=', 2, "Prometheus scraped nginx at least twice ($scrapes)");

my $up = query('up{job="hodei-server"}');
is($up && @$up ? $up->[0]{value}[1] : undef, '1', 'up is 1');

my $r = http_get("$api/label/__name__/values");
my %names = map { $_ => 1 } @{ from_json($r->{content})->{data} };
my @families = families();
is(scalar @families, 27, 'the schema defines 27 families');
for my $f (@families) {
    my ($name, $type) = @$f;
    my @want = $type eq 'histogram' ? map { "$name$_" } qw(_bucket _sum _count) : ($name);
    ok(!grep({ !$names{$_} } @want), "Prometheus stored $name ($type)");
}
my $sched_up = query('hodei_scheduler_up');
is($sched_up && @$sched_up ? $sched_up->[0]{value}[1] : undef, '1', 'hodei_scheduler_up is 1 in Prometheus');

# Prometheus negotiates OpenMetrics; promtool lints the text format of a live scrape.
my $scrape = http_get("http://127.0.0.1:$port/api/v1/metrics");
is($scrape->{status}, 200, 'live scrape');
like($scrape->{headers}{'content-type'}, qr{^text/plain; version=0\.0\.4}, 'text 0.0.4 by default');
open(my $lint, '|-', "promtool check metrics > $TMP/lint 2>&1") or die;
print $lint $scrape->{content};
close $lint;
my @findings = sort grep { length } split /\n/, slurp("$TMP/lint");
is_deeply(\@findings, [
    'hodei_memory_usage_mb metric names should not contain abbreviated units',
    'hodei_workers_total non-counter metrics should not have "_total" suffix',
], 'promtool on the live scrape: only the findings the seed names force') or diag explain \@findings;

done_testing();
