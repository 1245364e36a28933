#!/usr/bin/perl
# Job submissions per second through nginx → hodei-scheduler, as a ratio to the same nginx
# proxying the same requests to a trivial upstream (an nginx `return 201` with a job-sized
# JSON body).  Both locations share one nginx, one configuration shape (keepalive upstream,
# the hodei module's log phase on), and the repetitions are interleaved.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../tests/lib";
use HodeiTest;

my $base = $ENV{HODEI_CORE_BENCH_PORT} || 18180;
my ($daemon_port, $proxy_port, $trivial_port) = ($base, $base + 1, $base + 2);
my $reps = $ENV{REPS} || 3;
my $duration = $ENV{DURATION} || 3;
my $conns = $ENV{CONNS} || 32;

my $d = start_daemon($daemon_port, '--max-queued-jobs', 5000000, '--max-jobs-per-tenant', 5000000,
                     '--job-retention', 1000,
                     '--log-level', 'warn');

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
print $lua qq{wrk.headers["Authorization"] = "Bearer $d->{token}"\n};   # the daemon checks it
close $lua;

sub run_wrk {
    my ($path) = @_;
    my $out = `wrk -t2 -c$conns -d${duration}s -s $TMP/post.lua http://127.0.0.1:$proxy_port$path 2>&1`;
    my ($rps) = $out =~ /Requests\/sec:\s+([\d.]+)/ or die "wrk: $out";
    my ($bad) = $out =~ /Non-2xx or 3xx responses:\s+(\d+)/;
    die "non-2xx answers from $path: $bad\n$out" if $bad;
    return $rps;
}

run_wrk($_) for '/api/v1/jobs', '/trivial/jobs';    # warm-up
my (@daemon, @trivial, @ratio);
for my $rep (1 .. $reps) {
    my $d = run_wrk('/api/v1/jobs');
    my $t = run_wrk('/trivial/jobs');
    push @daemon, $d;
    push @trivial, $t;
    push @ratio, $d / $t;
    printf "api-submit rep %d: nginx→hodei-scheduler %.0f req/s, nginx→trivial upstream %.0f req/s, "
         . "ratio %.2f\n", $rep, $d, $t, $d / $t;
}
my @sorted = sort { $a <=> $b } @ratio;
printf "api-submit: median ratio %.2f (goal >= 0.5) over %d interleaved runs of %ds, %d connections\n",
       $sorted[$#sorted / 2], $reps, $duration, $conns;
