#!/usr/bin/perl
# hodei-scheduler API: every error status, each leaving the state unchanged (jobs, workers,
# health and the metrics segment compared before and after); the event stream; bounded memory
# and exact overflow counts under 10,000 distinct tenant and worker ids.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use HodeiTest;
use Test::More;
use Time::HiRes qw(sleep time);

my $port_base = $ENV{HODEI_CORE_TEST_PORT} || 18100;
my $d = start_daemon($port_base, qw(--publish-interval-ms 20 --max-tenants 5 --max-workers 3
                                    --max-queued-jobs 6 --heartbeat-timeout-s 600
                                    --worker-timeout-s 1200));

# A small world: one worker with a job on it, one queued job that does not fit right now.
my ($st, $body) = call($d, 'POST', '/workers', { worker_id => 'w1', cpu_m => 1000, memory_mb => 1000 });
is($st, 201, 'worker registered');
($st, $body) = call($d, 'POST', '/jobs', { tenant_id => 'acme', command => 'true', cpu_m => 800 });
is($st, 201, 'job 1 submitted');
is($body->{state}, 'queued', 'a new job is queued');
($st) = call($d, 'POST', '/jobs', { tenant_id => 'beta', command => 'true', cpu_m => 800 });
is($st, 201, 'job 2 submitted');
settle();
($st, $body) = call($d, 'GET', '/jobs/1');
is($body->{state}, 'assigned', 'job 1 placed');
is($body->{worker_id}, 'w1', 'on w1');

sub state_of {
    my (undef, $jobs) = call($d, 'GET', '/jobs?limit=1000');
    my (undef, $workers) = call($d, 'GET', '/workers');
    my (undef, $health) = call($d, 'GET', '/health');
    settle();
    return { jobs => to_json($jobs), workers => to_json($workers),
             health => to_json($health), metrics => metrics($d) };
}

sub unchanged {
    my ($before, $name) = @_;
    my $after = state_of();
    for my $k (qw(jobs workers health metrics)) {
        is($after->{$k}, $before->{$k}, "$name: $k unchanged");
    }
}

sub refused {
    my ($want, $code, $name, $method, $path, $req, %opt) = @_;
    my $before = state_of();
    my ($status, $reply) = call($d, $method, $path, $req, %opt);
    is($status, $want, "$name → $want");
    ok(ref $reply eq 'HASH' && defined $reply->{error} && length($reply->{detail} // '') > 0
       && (!defined $code || $reply->{error} eq $code),
       "$name: JSON error body" . (defined $code ? " ($code)" : ''))
        or diag(show($reply));
    unchanged($before, $name);
}

sub show { my ($v) = @_; ref $v ? to_json($v) : ($v // 'undef') }

my $good_job = { tenant_id => 'acme', command => 'true' };
refused(400, 'bad_json', 'malformed JSON', 'POST', '/jobs', '{"tenant_id": "acme",');
refused(400, 'bad_json', 'JSON that is not an object', 'POST', '/jobs', '[1,2]');
refused(400, 'bad_field', 'missing command', 'POST', '/jobs', { tenant_id => 'acme' });
refused(400, 'bad_field', 'cpu_m of the wrong type', 'POST', '/jobs', { %$good_job, cpu_m => 'x' });
refused(400, 'bad_field', 'priority out of range', 'POST', '/jobs', { %$good_job, priority => 1000 });
refused(400, 'bad_field', 'unknown field', 'POST', '/jobs', { %$good_job, colour => 'red' });
refused(400, 'bad_id', 'bad tenant id', 'POST', '/jobs', { %$good_job, tenant_id => 'a/b' });
refused(400, 'bad_id', 'reserved tenant id', 'POST', '/jobs', { %$good_job, tenant_id => '__overflow__' });
refused(400, 'bad_content_type', 'form body', 'POST', '/jobs', 'tenant_id=acme',
        headers => { 'Content-Type' => 'application/x-www-form-urlencoded' });
refused(400, 'bad_id', 'bad job id', 'GET', '/jobs/abc');
refused(400, 'bad_id', 'job id 0', 'POST', '/jobs/0/cancel');
refused(400, 'bad_id', 'bad worker id', 'POST', '/workers/no%20pe/heartbeat',
        { cpu_usage_percent => 1, memory_usage_mb => 1 });
refused(400, 'bad_json', 'register without a body', 'POST', '/workers');
refused(400, 'bad_field', 'labels not strings', 'POST', '/workers',
        { worker_id => 'w9', cpu_m => 1, memory_mb => 1, labels => { a => 1 } });
refused(400, 'bad_field', 'unknown state filter', 'GET', '/jobs?state=sleeping');
refused(400, 'bad_field', 'limit 0', 'GET', '/jobs?limit=0');
refused(400, 'bad_field', 'fail with an unknown error_type', 'POST', '/jobs/1/fail',
        { worker_id => 'w1', error_type => 'crashed' });
refused(400, 'bad_field', 'heartbeat with negative cpu', 'POST', '/workers/w1/heartbeat',
        { cpu_usage_percent => -5, memory_usage_mb => 1 });
refused(404, 'not_found', 'unknown job', 'GET', '/jobs/999');
refused(404, 'not_found', 'cancel unknown job', 'POST', '/jobs/999/cancel');
refused(404, 'not_found', 'heartbeat of unknown worker', 'POST', '/workers/ghost/heartbeat',
        { cpu_usage_percent => 1, memory_usage_mb => 1 });
refused(404, 'not_found', 'assignments of unknown worker', 'GET', '/workers/ghost/assignments');
refused(404, 'not_found', 'unknown endpoint', 'GET', '/nothing');
refused(405, 'method_not_allowed', 'DELETE /jobs', 'DELETE', '/jobs');
refused(409, 'duplicate_worker', 'duplicate worker id', 'POST', '/workers',
        { worker_id => 'w1', cpu_m => 1, memory_mb => 1 });
refused(409, 'conflict', 'start by another worker', 'POST', '/jobs/1/start', { worker_id => 'w2' });
refused(409, 'conflict', 'succeed before start', 'POST', '/jobs/1/succeed', { worker_id => 'w1' });
refused(409, 'conflict', 'start a queued job', 'POST', '/jobs/2/start', { worker_id => 'w1' });
refused(413, 'too_large', '65 KiB body', 'POST', '/jobs',
        '{"tenant_id":"acme","command":"' . ('x' x (65 * 1024)) . '"}');

# terminal jobs refuse every transition
($st) = call($d, 'POST', '/jobs/1/start', { worker_id => 'w1' });
is($st, 200, 'job 1 started');
($st, $body) = call($d, 'POST', '/jobs/1/succeed', { worker_id => 'w1', exit_code => 0 });
is($body->{state}, 'succeeded', 'job 1 succeeded');
refused(409, 'conflict', 'cancel a finished job', 'POST', '/jobs/1/cancel');
refused(409, 'conflict', 'fail a finished job', 'POST', '/jobs/1/fail',
        { worker_id => 'w1', error_type => 'other' });

# queue full: 6 unfinished jobs at most
settle();
for (1 .. 5) {
    ($st) = call($d, 'POST', '/jobs', { tenant_id => 'acme', command => 'sleep 1', cpu_m => 999 });
}
is($st, 201, 'queue filled to its limit');
refused(429, 'queue_full', 'submit to a full queue', 'POST', '/jobs', $good_job);

# worker cap: 3 workers; a refused registration only counts its folded series
call($d, 'POST', '/workers', { worker_id => "w$_", cpu_m => 1, memory_mb => 1 }) for 2 .. 3;
my $before = state_of();
($st, $body) = call($d, 'POST', '/workers', { worker_id => 'w4', cpu_m => 1, memory_mb => 1 });
is($st, 429, 'registration past the worker cap → 429');
is($body->{error}, 'worker_cap', 'worker_cap error');
my $after = state_of();
is($after->{$_}, $before->{$_}, "worker cap: $_ unchanged") for qw(jobs workers health);
(my $expected = $before->{metrics}) =~ s/(# TYPE hodei_metrics_label_overflow_total counter\n)/$1hodei_metrics_label_overflow_total{family="hodei_cpu_usage_percent"} 1\nhodei_metrics_label_overflow_total{family="hodei_memory_usage_mb"} 1\n/;
is($after->{metrics}, $expected, 'worker cap: only the overflow counter moved');

# the event stream: one subscriber more while connected, every event delivered
settle();
my $m0 = metrics($d);
is(sample($m0, 'hodei_event_bus_subscribers'), 1, 'one subscriber: the aggregator');
my $sse_out = "$TMP/sse.txt";
my $sse = spawn({ out => $sse_out, err => "$TMP/sse.err" }, 'curl', '-sN', '-H',
                "Authorization: Bearer $d->{token}", "$d->{url}/events");
for (1 .. 100) { last if -s $sse_out; sleep 0.02 }
settle();
is(sample(metrics($d), 'hodei_event_bus_subscribers'), 2, 'an SSE client subscribes');
($st, $body) = call($d, 'POST', '/jobs/3/cancel');
is($body->{state}, 'cancelled', 'job 3 cancelled');
settle();
my $stream = slurp($sse_out);
my ($event) = $stream =~ /^event: job_cancelled\ndata: (\{.*\})\n\n/m;
ok(defined $event, 'the stream carries the event')
    or diag($stream);
my $ev = eval { from_json($event // '{}') } // {};
is($ev->{job}{id}, '3', 'with the job');
is($ev->{type}, 'job_cancelled', 'and its type');
stop($sse, 'TERM');
sleep 0.8;   # the stream notices a client that left within 0.5 s
settle();
is(sample(metrics($d), 'hodei_event_bus_subscribers'), 1, 'the client left the bus');

is(stop($d->{pid}, 'TERM'), 0, 'SIGTERM: exit 0');
ok(metrics($d) =~ /^hodei_jobs_submitted_total\{tenant_id="acme"\} 6$/m,
   'the segment stays readable after exit');

# ---- 10,000 distinct tenant and worker ids, small caps ----------------------------------
my $c = start_daemon($port_base + 1, qw(--publish-interval-ms 50 --max-tenants 10 --max-workers 10
                                        --job-retention 100));
my $n = 10_000;
my $rss_start;
for my $i (1 .. $n) {
    my ($s1, $job) = call($c, 'POST', '/jobs', { tenant_id => "tenant-$i", command => 'true' });
    my ($s2) = call($c, 'POST', "/jobs/$job->{id}/cancel");
    die "submit/cancel $i: $s1 $s2" unless $s1 == 201 && $s2 == 200;
    $rss_start = rss_kb($c->{pid}) if $i == 1000;
}
my $rss_tenants = rss_kb($c->{pid});
my $refused = 0;
for my $i (1 .. $n) {
    my ($s) = call($c, 'POST', '/workers', { worker_id => "worker-$i", cpu_m => 1, memory_mb => 1 });
    $refused++ if $s == 429;
}
my $rss_end = rss_kb($c->{pid});
settle(0.3);
my $m = metrics($c);
is($refused, $n - 10, '10 workers registered, the rest refused with 429');
my @tenant_series = $m =~ /^hodei_jobs_submitted_total\{/mg;
is(scalar @tenant_series, 11, '10 tenant series + __overflow__');
is(sample($m, 'hodei_jobs_submitted_total{tenant_id="__overflow__"}'), $n - 10, 'overflow series value');
is(sample($m, 'hodei_metrics_label_overflow_total{family="hodei_jobs_submitted_total"}'), $n - 10,
   'overflow counted for submitted');
is(sample($m, 'hodei_metrics_label_overflow_total{family="hodei_jobs_failed_total"}'), $n - 10,
   'overflow counted for failed (cancelled)');
is(sample($m, 'hodei_metrics_label_overflow_total{family="hodei_cpu_usage_percent"}'), $n - 10,
   'overflow counted for refused workers (cpu)');
is(sample($m, 'hodei_metrics_label_overflow_total{family="hodei_memory_usage_mb"}'), $n - 10,
   'overflow counted for refused workers (memory)');
my @worker_series = $m =~ /^hodei_cpu_usage_percent\{/mg;
is(scalar @worker_series, 10, '10 worker series');
my ($s_list, $list) = call($c, 'GET', '/jobs?limit=1000');
is(scalar @{ $list->{jobs} }, 100, 'finished jobs kept: the retention bound');
my $growth = $rss_end - $rss_start;
ok($growth < 4096, "RSS bounded: ${rss_start} kB after 1,000 tenants, ${rss_tenants} kB after "
   . "$n, ${rss_end} kB after $n workers (growth ${growth} kB < 4 MB)");
note("RSS kB: $rss_start → $rss_tenants → $rss_end");
is(stop($c->{pid}, 'TERM'), 0, 'second daemon exits 0');
done_testing();
