#!/usr/bin/perl
# Job submissions per second, each answered only once it committed, and the restart of a daemon
# holding 100,000 unfinished jobs.  Every figure is a ratio to a baseline of the same run:
#
#   direct        wrk → hodei-scheduler, state on this disk (every answer waits for its fsync),
#                 against the same daemon with its state on tmpfs (/dev/shm), where fsync
#                 costs nothing: what durability costs, all else equal
#   through nginx nginx → hodei-scheduler (disk), against the same nginx proxying the same
#                 requests to a trivial upstream (an nginx `return 201` with a job-sized body);
#                 one nginx, one configuration shape (keepalive upstream, the hodei module's
#                 log phase on)
#
# The repetitions are interleaved.  Commit latency (p50/p99, interpolated within the buckets
# of hodei_store_commit_duration_seconds, as histogram_quantile does) and jobs per commit come
# from the disk daemon's own metrics over its direct runs.
use strict;
use warnings;
use File::Temp qw(tempdir);
use FindBin;
use lib "$FindBin::Bin/../tests/lib";
use HodeiTest;
use Time::HiRes qw(time);

my $base = $ENV{HODEI_CORE_BENCH_PORT} || 18180;
my ($daemon_port, $proxy_port, $trivial_port, $tmpfs_port, $restart_port) =
    map { $base + $_ } 0 .. 4;
my $reps = $ENV{REPS} || 3;
my $duration = $ENV{DURATION} || 3;
my $conns = $ENV{CONNS} || 32;
my $restart_jobs = $ENV{RESTART_JOBS} || 100_000;

my @limits = ('--max-queued-jobs', 5000000, '--max-jobs-per-tenant', 5000000,
              '--job-retention', 1000);
my $d = start_daemon($daemon_port, @limits, '--log-level', 'warn');
my $shm = tempdir('hodei-bench-XXXXXX', DIR => '/dev/shm', CLEANUP => 1);
my $m = start_daemon($tmpfs_port, @limits, '--log-level', 'warn', '--tokens', $d->{tokens_file},
                     '--state-dir', $shm);

my $job = '{"id":"1","tenant_id":"bench","name":"","command":"true","cpu_m":100,"memory_mb":64,'
        . '"priority":0,"timeout_s":0,"max_retries":0,"attempts":0,"state":"queued",'
        . '"worker_id":null,"error_type":null,"exit_code":null,"submitted_at":1764441600.123,'
        . '"assigned_at":null,"started_at":null,"finished_at":null}';
start_nginx(port => $proxy_port, worker_connections => 4096, http => <<"HTTP");
    hodei_segment $d->{segment};
    hodei_http_zone hodei_http 1m;
    upstream scheduler { server 127.0.0.1:$daemon_port; keepalive 64; }
    upstream trivial { server 127.0.0.1:$trivial_port; keepalive 64; }
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    server {
        listen 127.0.0.1:$proxy_port;
        location /api/v1/ { proxy_pass http://scheduler; }
        location /trivial/ { proxy_pass http://trivial/api/v1/; }
    }
    server {
        listen 127.0.0.1:$trivial_port;
        location /api/v1/ { default_type application/json; return 201 '$job'; }
    }
HTTP
wait_port($trivial_port) or die "nothing listens on $trivial_port\n";

open my $lua, '>', "$TMP/post.lua" or die;
print $lua <<'LUA';
wrk.method = "POST"
wrk.body = '{"tenant_id":"bench","command":"true"}'
wrk.headers["Content-Type"] = "application/json"
LUA
print $lua qq{wrk.headers["Authorization"] = "Bearer $d->{token}"\n};   # the daemons check it
close $lua;

sub run_wrk {
    my ($port, $path, $seconds) = @_;
    $seconds //= $duration;
    my $out = `wrk -t2 -c$conns -d${seconds}s -s $TMP/post.lua http://127.0.0.1:$port$path 2>&1`;
    my ($rps) = $out =~ /Requests\/sec:\s+([\d.]+)/ or die "wrk: $out";
    my ($bad) = $out =~ /Non-2xx or 3xx responses:\s+(\d+)/;
    die "non-2xx answers from $port$path: $bad\n$out" if $bad;
    return $rps;
}

# The store's figures from a daemon's segment: commit-latency buckets (cumulative, by le),
# commits, and jobs submitted.
sub store_figures {
    my ($daemon) = @_;
    settle($daemon);
    my $text = metrics($daemon);
    my (%le, $commits, $jobs);
    while ($text =~ /^hodei_store_commit_duration_seconds_bucket\{le="([^"]+)"\} (\S+)$/mg) {
        $le{$1} = $2;
    }
    ($commits) = $text =~ /^hodei_store_commit_duration_seconds_count (\S+)$/m;
    ($jobs) = $text =~ /^hodei_jobs_submitted_total\{tenant_id="bench"\} (\S+)$/m;
    die "no store figures in the daemon's metrics:\n$text" unless %le && defined $commits;
    return { le => \%le, commits => $commits, jobs => $jobs // 0 };
}

# The q-quantile of the commits between two store_figures, interpolated within its bucket.
sub quantile {
    my ($q, $from, $to) = @_;
    my @bounds = sort { $a <=> $b } grep { $_ ne '+Inf' } keys %{ $to->{le} };
    my $total = $to->{commits} - $from->{commits};
    return 'n/a' unless $total > 0;
    my ($lower, $below) = (0, 0);
    for my $b (@bounds) {
        my $n = $to->{le}{$b} - $from->{le}{$b};
        if ($n >= $q * $total) {
            my $in = $n - $below;
            return $lower + ($b - $lower) * ($in ? ($q * $total - $below) / $in : 1);
        }
        ($lower, $below) = ($b, $n);
    }
    return "> $bounds[-1]";
}

sub ms { my ($s) = @_; $s =~ /^[\d.e+-]+$/ ? sprintf('%.2f ms', $s * 1000) : $s }

# ---- submissions -------------------------------------------------------------------------
run_wrk($_->[0], $_->[1]) for [$daemon_port, '/api/v1/jobs'], [$tmpfs_port, '/api/v1/jobs'],
                              [$proxy_port, '/api/v1/jobs'], [$proxy_port, '/trivial/jobs'];
my (@direct, @ratio_direct, @proxied, @ratio_proxied);
my ($first, $last);
for my $rep (1 .. $reps) {
    my $before = store_figures($d);
    $first //= $before;
    my $disk = run_wrk($daemon_port, '/api/v1/jobs');
    $last = store_figures($d);
    my $tmpfs = run_wrk($tmpfs_port, '/api/v1/jobs');
    my $via = run_wrk($proxy_port, '/api/v1/jobs');
    my $trivial = run_wrk($proxy_port, '/trivial/jobs');
    push @direct, $disk;
    push @ratio_direct, $disk / $tmpfs;
    push @proxied, $via;
    push @ratio_proxied, $via / $trivial;
    printf "api-submit rep %d: direct %.0f durable/s vs %.0f on tmpfs (%.2f); nginx→hodei-scheduler "
         . "%.0f/s vs nginx→trivial %.0f/s (%.2f); %.1f jobs per commit\n",
           $rep, $disk, $tmpfs, $disk / $tmpfs, $via, $trivial, $via / $trivial,
           ($last->{jobs} - $before->{jobs}) / (($last->{commits} - $before->{commits}) || 1);
}
sub median { my @s = sort { $a <=> $b } @_; $s[$#s / 2] }
printf "api-submit: direct %.0f durable submissions/s (goal >= 10000), %.2f of the same daemon "
     . "on tmpfs\n", median(@direct), median(@ratio_direct);
printf "api-submit: through nginx %.0f/s, ratio %.2f to nginx→trivial upstream\n",
       median(@proxied), median(@ratio_proxied);
# the direct runs only: the tmpfs daemon keeps its own metrics, the proxied runs come after
my $spent = $last->{commits} - $first->{commits};
printf "api-submit: commit p50 %s, p99 %s, %.1f jobs per commit (%d commits over %d direct "
     . "runs of %ds, %d connections)\n", ms(quantile(0.5, $first, $last)),
       ms(quantile(0.99, $first, $last)), ($last->{jobs} - $first->{jobs}) / ($spent || 1),
       $spent, $reps, $duration, $conns;

# ---- a restart with 100,000 unfinished jobs ------------------------------------------------
# A fresh daemon, no worker: every job stays queued.  wrk runs until that many were accepted.
my $r = start_daemon($restart_port, @limits, '--tokens', $d->{tokens_file});
my $accepted = 0;
while ($accepted < $restart_jobs) {
    run_wrk($restart_port, '/api/v1/jobs', 2);
    ($accepted) = metrics($r) =~ /^hodei_jobs_queued (\d+)$/m;
    $accepted //= 0;
}
stop($r->{pid}, 'KILL', 30);
my $t0 = time;
$r->{pid} = spawn($r->{log}, @{ $r->{cmd} });
wait_port($restart_port, 120) or die "no restart:\n" . slurp($r->{log});
my $ready = time - $t0;
my @loads = slurp($r->{log}) =~ /state loaded from \S+ in (\d+) ms: .*? (\d+) unfinished/g;
die "the daemon did not say what it loaded:\n" . slurp($r->{log}) unless @loads == 4;
my ($loaded_ms, $unfinished) = @loads[2, 3];            # the second start's
die "the restart lost jobs: $unfinished of $accepted\n" if $unfinished < $accepted;
printf "restart: %d unfinished jobs after kill -9, serving again in %.2f s (goal < 1 s), "
     . "state loaded in %d ms\n", $unfinished, $ready, $loaded_ms;
