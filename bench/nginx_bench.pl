#!/usr/bin/perl
# nginx-side benchmarks, each a ratio measured in the same run with interleaved repetitions:
#  (a) scrape requests/s of /api/v1/metrics against nginx serving the byte-identical
#      exposition as a static file, for ~150 and ~25,000 samples, the HTTP zone at 4m;
#  (z) the same ~150-sample scrape with a 64k and a 16m HTTP zone side by side: a scrape
#      touches only the zone's live series, so its cost must not follow the zone's size;
#  (b) requests/s of a `return 204` location with the HTTP metrics on vs off, plus the log
#      handler's instructions per request under callgrind (the steady measure);
#  (c) what an exemplar of the HTTP histogram would cost: the instructions a request spends
#      to evaluate $request_id (nginx draws it from OpenSSL's RAND_bytes), beside (b)'s.
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

# Interleaves the URLs, returns their medians in the same order.
sub interleaved {
    my (@urls) = @_;
    my @runs = map { [] } @urls;
    for (1 .. $reps) {
        push @{ $runs[$_] }, wrk($urls[$_]) for 0 .. $#urls;
    }
    return map { median(@$_) } @runs;
}

# b's requests/s over a's, as the median of back-to-back pairs (in alternating order, so
# that the machine's drift cancels): (median a, median b, median ratio).
sub paired {
    my ($a, $b, $pairs) = @_;
    my (@ra, @rb, @ratio);
    for my $i (1 .. $pairs) {
        my ($x, $y) = $i % 2 ? (wrk($a), wrk($b)) : reverse(wrk($b), wrk($a));
        push @ra, $x;
        push @rb, $y;
        push @ratio, $y / $x;
    }
    return (median(@ra), median(@rb), median(@ratio));
}

# Instructions per request of $function (inclusive) and of the whole event loop, under
# callgrind, for $n keep-alive requests to $path of an nginx with this http{} body.
sub callgrind {
    my ($name, $http, $path, $n, $function) = @_;
    my $cg = "$dir/callgrind-$name";
    make_path($cg);
    my $conf = nginx_conf(dir => $cg, master => 0, worker_connections => 64, http => $http);
    my $vg = spawn("$cg/valgrind.log", 'valgrind', '--tool=callgrind',
                   "--callgrind-out-file=$cg/out", '/usr/sbin/nginx', '-p', $cg, '-c', $conf);
    wait_port($port, 60) or die "nginx under callgrind did not start";
    my $agent = HTTP::Tiny->new(keep_alive => 1);
    $agent->get("http://127.0.0.1:$port$path") for 1 .. $n;
    undef $agent;
    # nginx exits normally on TERM and callgrind writes its profile.  Under valgrind the
    # signal may wait for nginx's epoll_wait to return: connections wake it until it is gone.
    kill 'TERM', $vg;
    my $gone;
    for (1 .. 600) {
        last if defined($gone = wait_exit($vg, 0.1));
        IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port, Timeout => 1);
    }
    stop($vg, 'KILL', 10) unless defined $gone;
    my $ann = `callgrind_annotate --inclusive=yes --threshold=100 $cg/out 2>/dev/null`;
    my ($fn) = $ann =~ /^\s*([\d,]+)\s.*\b\Q$function\E\b/m;
    my ($loop) = $ann =~ /^\s*([\d,]+)\s.*ngx_process_events_and_timers/m;
    die "callgrind: could not read the profile:\n" . `tail -5 $cg/valgrind.log` unless $fn && $loop;
    s/,//g for $fn, $loop;
    return ($fn / $n, $loop / $n);
}

# One nginx, one worker, serving the segment's scrape (HTTP zone of $zone, nothing counted
# into it) and $dir/static/; returns (pid, metrics URL, static URL of the same bytes, samples,
# bytes).
sub scrape_nginx {
    my ($name, $seg, $zone, $p) = @_;
    make_path("$dir/static-$name");
    my $pid = start_nginx(dir => "$dir/nginx-$name", port => $p, http => <<"HTTP");
    hodei_segment $seg;
    hodei_http_zone hodei_http $zone;
    hodei_stale_after 1h;
    hodei_http_metrics off;
    server {
        listen 127.0.0.1:$p;
        location = /api/v1/metrics { hodei_metrics; }
        location /static-$name/ { root $dir; }
    }
HTTP
    my $body = http_get("http://127.0.0.1:$p/api/v1/metrics")->{content};
    open(my $fh, '>', "$dir/static-$name/metrics.txt") or die;
    print $fh $body;
    close $fh;
    my $samples = grep { !/^#/ } split /\n/, $body;
    return ($pid, "http://127.0.0.1:$p/api/v1/metrics",
            "http://127.0.0.1:$p/static-$name/metrics.txt", $samples, length $body);
}

sub fill {
    my ($seg, $tenants, $workers) = @_;
    system('build/hodei-shm-fill', '--tenants', $tenants, '--workers', $workers, $seg) == 0
        or die "fill failed";
}

printf "nginx: 1 worker process each, wrk -t1 -c8, %d interleaved runs of %d s, medians\n",
    $reps, $secs;

# (a) and (z): ~150 samples, zones of 4m, 64k and 16m; one nginx each, measured interleaved
my $small = "$dir/segment-small";
fill($small, 5, 2);
my (@pids, %url);
for my $z (['4m', '4m'], ['64k', '64k'], ['16m', '16m']) {
    my ($name, $size) = @$z;
    my ($pid, $metrics, $static, $samples, $bytes) =
        scrape_nginx($name, $small, $size, $port + @pids);
    push @pids, $pid;
    $url{$name} = { metrics => $metrics, static => $static, samples => $samples, bytes => $bytes };
}
my ($static, $s4m) = interleaved($url{'4m'}{static}, $url{'4m'}{metrics});
printf "(a) %6d samples, %8d bytes, zone 4m: static %9.0f req/s | /api/v1/metrics %9.0f req/s | "
     . "ratio %.2f (goal >= 0.5)\n", $url{'4m'}{samples}, $url{'4m'}{bytes}, $static, $s4m,
     $s4m / $static;
my ($s64k, $s16m, $zone_ratio) = paired($url{'64k'}{metrics}, $url{'16m'}{metrics}, 2 * $reps + 1);
printf "(z) the same scrape, empty zone of 64k %9.0f req/s | of 16m %9.0f req/s | 16m / 64k %.2f "
     . "(median of %d back-to-back pairs; goal 0.9 .. 1.1)\n", $s64k, $s16m, $zone_ratio,
     2 * $reps + 1;
stop($_) // die "nginx did not stop" for @pids;

# (z) the steady measure: instructions per scrape, under callgrind, for each zone size
my %ir;
for my $size (qw(64k 16m)) {
    my $http = <<"HTTP";
    hodei_segment $small;
    hodei_http_zone hodei_http $size;
    hodei_stale_after 1h;
    hodei_http_metrics off;
    server {
        listen 127.0.0.1:$port;
        location = /api/v1/metrics { hodei_metrics; }
    }
HTTP
    ($ir{$size}) = callgrind("zone-$size", $http, '/api/v1/metrics', 200,
                             'ngx_http_hodei_scrape_handler');
}
printf "(z) callgrind, 200 scrapes: %.0f instructions per scrape with a 64k zone, %.0f with 16m: "
     . "16m / 64k %.3f\n", $ir{'64k'}, $ir{'16m'}, $ir{'16m'} / $ir{'64k'};

# (a) ~25,000 samples
my $large = "$dir/segment-large";
fill($large, 500, 10000);
my ($pid, $metrics, $static_url, $samples, $bytes) = scrape_nginx('large', $large, '4m', $port);
my ($st, $sc) = interleaved($static_url, $metrics);
printf "(a) %6d samples, %8d bytes, zone 4m: static %9.0f req/s | /api/v1/metrics %9.0f req/s | "
     . "ratio %.2f (goal >= 0.3)\n", $samples, $bytes, $st, $sc, $sc / $st;
stop($pid) // die "nginx did not stop";

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
my $n = 2000;
my ($handler, $loop) = callgrind('204', $http_b, '/on', $n, 'ngx_http_hodei_log_handler');
printf "(b) callgrind, %d keep-alive requests to /on: log handler %.0f instructions/request, "
     . "whole request %.0f instructions/request: overhead %.2f%% (goal <= 1%%)\n",
    $n, $handler, $loop, 100 * $handler / $loop;

# (c) the same 204 with $request_id evaluated (as an exemplar of each request would need)
my $http_c = $http_b =~ s/location = \/on \{/location = \/id { set \$request_id_copy \$request_id;/r;
my ($rand, $loop_id) = callgrind('request-id', $http_c, '/id', $n, 'RAND_bytes');
printf "(c) callgrind, %d requests to /id (\$request_id evaluated): %.0f instructions/request more "
     . "than /on (RAND_bytes %.0f): %.0fx the log handler, %.0f%% of the whole request\n",
    $n, $loop_id - $loop, $rand, ($loop_id - $loop) / $handler, 100 * ($loop_id - $loop) / $loop;
