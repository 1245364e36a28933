#!/usr/bin/perl
# nginx-side benchmarks, each a ratio measured in the same run with interleaved repetitions:
#  (a) scrape requests/s of /api/v1/metrics vs nginx serving the byte-identical exposition as
#      a static file, for ~200 and ~25,000 samples;
#  (b) requests/s of a `return 204` location with the HTTP metrics on vs off, plus the log
#      handler's instructions per request under callgrind (the steady measure).
use strict;
use IO::Socket::INET;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../tests/lib";
use File::Path qw(make_path);
use File::Temp qw(tempdir);
use HodeiTest;

my $port = $ENV{HODEI_BENCH_PORT} || 18410;
my $reps = $ENV{HODEI_BENCH_REPS} || 5;
my $secs = $ENV{HODEI_BENCH_SECONDS} || 2;
my $dir = $ENV{HODEI_BENCH_KEEP} ? tempdir('hodei-nginx-bench-XXXXXX', TMPDIR => 1) : $TMP;

sub median { my @s = sort { $a <=> $b } @_; return $s[@s / 2] }

sub wrk {
    my ($url) = @_;
    my $out = `wrk -t1 -c8 -d${secs}s $url 2>&1`;
    my ($rps) = $out =~ /Requests\/sec:\s+([\d.]+)/;
    die "wrk failed: $out" unless $rps;
    return $rps;
}

# Interleaves a and b, returns (median a, median b).
sub interleaved {
    my ($a, $b) = @_;
    my (@ra, @rb);
    for (1 .. $reps) {
        push @ra, wrk($a);
        push @rb, wrk($b);
    }
    return (median(@ra), median(@rb));
}

printf "nginx: 1 worker process, wrk -t1 -c8, %d interleaved runs of %d s, medians\n", $reps, $secs;

# (a) scrape vs static file
for my $size ([200, 5, 20], [25000, 500, 10000]) {
    my ($target, $tenants, $workers) = @$size;
    my $seg = "$dir/segment-$target";
    system('build/hodei-shm-fill', '--tenants', $tenants, '--workers', $workers, $seg) == 0
        or die "fill failed";
    make_path("$dir/static");
    my $nginx = start_nginx(dir => "$dir/nginx-$target", port => $port, http => <<"HTTP");
    hodei_segment $seg;
    hodei_http_zone hodei_http 1m;
    hodei_stale_after 1h;
    hodei_http_metrics off;
    server {
        listen 127.0.0.1:$port;
        location = /api/v1/metrics { hodei_metrics; }
        location /static/ { root $dir; }
    }
HTTP
    my $body = http_get("http://127.0.0.1:$port/api/v1/metrics")->{content};
    open(my $fh, '>', "$dir/static/metrics.txt") or die;
    print $fh $body;
    close $fh;
    my $samples = grep { !/^#/ } split /\n/, $body;
    my ($static, $scrape) = interleaved("http://127.0.0.1:$port/static/metrics.txt",
                                        "http://127.0.0.1:$port/api/v1/metrics");
    printf "(a) %6d samples, %8d bytes: static %9.0f req/s | /api/v1/metrics %9.0f req/s | "
         . "ratio %.2f (goal >= %.1f)\n", $samples, length($body), $static, $scrape,
         $scrape / $static, $target < 1000 ? 0.5 : 0.3;
    stop($nginx) // die "nginx did not stop";
}

# (b) log-phase overhead
my $http_b = <<"HTTP";
    hodei_http_zone hodei_http 1m;
    server {
        listen 127.0.0.1:$port;
        location = /on { return 204; }
        location = /off { hodei_http_metrics off; return 204; }
    }
HTTP
my $nginx = start_nginx(dir => "$dir/nginx-204", port => $port, http => $http_b);
my ($off, $on) = interleaved("http://127.0.0.1:$port/off", "http://127.0.0.1:$port/on");
printf "(b) return 204: metrics off %9.0f req/s | on %9.0f req/s | ratio %.3f (wrk swings +-10%%)\n",
    $off, $on, $on / $off;
stop($nginx) // die "nginx did not stop";

# callgrind: instructions of the log handler per request vs of the whole request
my $cg = "$dir/callgrind";
make_path($cg);
my $conf = nginx_conf(dir => $cg, master => 0, worker_connections => 64, http => $http_b);
my $vg = spawn("$cg/valgrind.log", 'valgrind', '--tool=callgrind', "--callgrind-out-file=$cg/out",
               '/usr/sbin/nginx', '-p', $cg, '-c', $conf);
wait_port($port, 60) or die "nginx under callgrind did not start";
my $n = 2000;
my $agent = HTTP::Tiny->new(keep_alive => 1);
$agent->get("http://127.0.0.1:$port/on") for 1 .. $n;
undef $agent;
# nginx exits normally on TERM and callgrind writes its profile.  Under valgrind the signal may
# wait for nginx's epoll_wait to return: one connection wakes it.
kill 'TERM', $vg;
sleep 1;
IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port, Timeout => 1);
stop($vg, 'TERM', 60);
my $ann = `callgrind_annotate --inclusive=yes --threshold=100 $cg/out 2>/dev/null`;
my ($handler) = $ann =~ /^\s*([\d,]+)\s.*ngx_http_hodei_log_handler/m;
my ($loop) = $ann =~ /^\s*([\d,]+)\s.*ngx_process_events_and_timers/m;
if ($handler && $loop) {
    s/,//g for $handler, $loop;
    printf "(b) callgrind, %d keep-alive requests to /on: log handler %.0f instructions/request, "
         . "whole request %.0f instructions/request: overhead %.2f%% (goal <= 1%%)\n",
        $n, $handler / $n, $loop / $n, 100 * $handler / $loop;
} else {
    print "(b) callgrind: could not read the profile:\n", `tail -5 $cg/valgrind.log`;
}
