#!/usr/bin/perl
# End to end: hodei-scheduler + nginx with ngx_http_hodei_module + two real hodei-worker
# agents.  50 jobs across three tenants — successes, non-zero exits, a timeout, one larger than
# any worker, one worker SIGKILLed with two jobs on it — then every family read through
# nginx's /api/v1/metrics must agree exactly with what happened.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use HodeiTest;
use Test::More;
use Time::HiRes qw(sleep time);

for my $need (qw(build/hodei-scheduler build/hodei-worker build/ngx_http_hodei_module.so)) {
    plan skip_all => "$need not built" unless -e $need;
}

my $port_base = $ENV{HODEI_CORE_TEST_PORT} || 18100;
my $daemon_port = $port_base + 10;
my $nginx_port = $port_base + 11;
my $d = start_daemon($daemon_port, qw(--publish-interval-ms 50 --heartbeat-timeout-s 1.5
                                      --worker-timeout-s 3));

# nginx in front, as deployed
my $nginx = start_nginx_in_front($d, $nginx_port, workers => 2);
# everything goes through nginx, with the daemon's tokens (the admin's for this script)
my $api = { url => "http://127.0.0.1:$nginx_port/api/v1", token => $d->{token} };
my $worker_token = token_file($d->{tokens}{worker});

sub scrape { http_get("$api->{url}/metrics")->{content} }

sub await {
    my ($what, $cond, $seconds) = @_;
    my $deadline = time + ($seconds // 20);
    while (time < $deadline) {
        return 1 if $cond->();
        sleep 0.05;
    }
    ok(0, "timed out waiting for $what");
    return 0;
}

sub job { my (undef, $j) = call($api, 'GET', "/jobs/$_[0]"); return ref $j ? $j : {} }

# two agents of equal size
my %agent;
for my $id (qw(agent-a agent-b)) {
    $agent{$id} = spawn("$TMP/$id.log", 'build/hodei-worker', '--api', "http://127.0.0.1:$nginx_port",
                        '--token-file', $worker_token, '--id', $id, '--cpu-m', 2000, '--memory-mb', 2048, '--heartbeat-ms', 200,
                        '--poll-wait', 1);
}
await('two workers', sub { my (undef, $w) = call($api, 'GET', '/workers');
                              ref $w && @{ $w->{workers} } == 2 });

my (%submitted, %expect_state);
sub submit {
    my ($tenant, $spec, $outcome) = @_;
    my ($st, $j) = call($api, 'POST', '/jobs', { tenant_id => $tenant, cpu_m => 10,
                                                  memory_mb => 10, %$spec });
    die "submit: $st " . to_json($j) unless $st == 201;
    $submitted{$tenant}++;
    $expect_state{$j->{id}} = $outcome;
    return $j->{id};
}

# Two jobs that will be on the same agent when it is killed: the victim has no retry left
# (fails worker_lost), the survivor one retry (requeued, then runs on the other agent).
my $pidfile = "$TMP/victim.pid";
my $victim = submit('alpha', { command => "echo \$\$ > $pidfile; exec sleep 60", cpu_m => 1500 },
                    'failed');
await('the victim running', sub { job($victim)->{state} eq 'running' });
my $doomed = job($victim)->{worker_id};
my ($other) = grep { $_ ne $doomed } keys %agent;
my $survivor = submit('beta', { command => 'sleep 2', cpu_m => 400, max_retries => 1 },
                      'succeeded');
await('the survivor running', sub { job($survivor)->{state} eq 'running' });
is(job($survivor)->{worker_id}, $doomed, 'best fit put both jobs on the same agent');
is(stop($agent{$doomed}, 'KILL'), 128 + 9, "SIGKILL $doomed mid-job");
await('the agent removed', sub { job($victim)->{state} eq 'failed' }, 10);
is(job($victim)->{error_type}, 'worker_lost', 'the victim failed with worker_lost');

# 48 more, all on the remaining agent
for my $tenant (qw(alpha beta gamma)) {
    for my $i (1 .. 13) {
        submit($tenant, { command => $i % 2 ? 'true' : 'sleep 0.1', name => "ok-$i" },
               'succeeded');
    }
    submit($tenant, { command => 'exit 3' }, 'failed') for 1 .. 2;
}
submit('gamma', { command => 'sleep 30', timeout_s => 1 }, 'failed');              # timeout
submit('alpha', { command => 'true', cpu_m => 100000 }, 'failed');                 # rejected
my $cancelled = submit('beta', { command => 'sleep 30' }, 'cancelled');
await('the job to cancel running', sub { job($cancelled)->{state} eq 'running' });
my ($cst, $cj) = call($api, 'POST', "/jobs/$cancelled/cancel");
is($cj->{state}, 'cancelled', 'a running job cancelled');
my $total = keys %expect_state;
is($total, 50, '50 jobs submitted');

await('every job finished', sub {
    for my $id (keys %expect_state) {
        return 0 unless job($id)->{state} =~ /^(succeeded|failed|cancelled)$/;
    }
    return 1;
}, 60);
my %states;
$states{ job($_)->{state} eq $expect_state{$_} ? 'as expected' : "job $_ unexpected" }++
    for keys %expect_state;
is(join(',', sort keys %states), 'as expected', 'every job ended as planned');
is(job($survivor)->{worker_id}, $other, 'the survivor ran again on the other agent');
is(job($survivor)->{attempts}, 2, 'in its second attempt');

# quiescent: two scrapes, each after a whole publish cycle, agree but for what moves by itself
# (the age, nginx's own counters, the agent's reported usage)
my $moving = qr/^hodei_(metrics_snapshot_age_seconds|http_\w+|cpu_usage_percent|memory_usage_mb)[ {].*\n/m;
my ($m, $m2, $a1, $a2);
ok(wait_for(60, sub {
    settle($d);
    ($a1 = $m = scrape()) =~ s/$moving//g;
    settle($d);
    ($a2 = $m2 = scrape()) =~ s/$moving//g;
    $a1 eq $a2 }), 'quiescent: two scrapes agree') or diag("$a1\n----\n$a2");

sub expect {
    my ($series, $want) = @_;
    is(sample($m, $series), $want, "$series = $want");
}

# per tenant: alpha = victim + 15 + rejected, beta = survivor + 15 + cancelled,
# gamma = 15 + timeout
my %sub = (alpha => 17, beta => 17, gamma => 16);
my %sched = (alpha => 16, beta => 18, gamma => 16);      # the survivor placed twice
my %done = (alpha => 13, beta => 14, gamma => 13);
expect("hodei_jobs_submitted_total{tenant_id=\"$_\"}", $sub{$_}) for sort keys %sub;
expect("hodei_jobs_scheduled_total{tenant_id=\"$_\"}", $sched{$_}) for sort keys %sched;
expect("hodei_jobs_completed_total{tenant_id=\"$_\"}", $done{$_}) for sort keys %done;
my %failed = (
    alpha => { exit_code => 2, worker_lost => 1, other => 1 },
    beta  => { exit_code => 2, cancelled => 1 },
    gamma => { exit_code => 2, timeout => 1 },
);
for my $tenant (sort keys %failed) {
    for my $type (qw(exit_code timeout worker_lost spawn_error cancelled other)) {
        expect("hodei_jobs_failed_total{tenant_id=\"$tenant\",error_type=\"$type\"}",
               $failed{$tenant}{$type} // 0);
    }
}
expect('hodei_scheduling_decisions_total{decision_type="assigned"}', 50);
expect('hodei_scheduling_decisions_total{decision_type="no_capacity"}', 0);
expect('hodei_scheduling_decisions_total{decision_type="rejected"}', 1);
expect('hodei_scheduling_decisions_total{decision_type="requeued"}', 1);
expect('hodei_scheduling_latency_seconds_count', 52);
expect('hodei_scheduling_latency_seconds_bucket{le="+Inf"}', 52);
expect('hodei_queue_wait_time_seconds_count', 50);
expect('hodei_job_duration_seconds_count', 50);   # every placement ran and ended
expect('hodei_jobs_queued', 0);
expect('hodei_queue_size', 0);
expect('hodei_jobs_running', 0);
expect('hodei_workers_registered_total', 2);
expect('hodei_workers_total', 1);
expect('hodei_workers_healthy', 1);
ok(defined sample($m, "hodei_cpu_usage_percent{worker_id=\"$other\"}"), 'the live agent has its cpu series');
ok(defined sample($m, "hodei_memory_usage_mb{worker_id=\"$other\"}"), 'and its memory series');
ok($m !~ /worker_id="\Q$doomed\E"/, "the killed agent's series are gone");
my %events = (job_submitted => 50, job_assigned => 50, job_started => 50, job_succeeded => 40,
              job_failed => 8, job_cancelled => 1, job_requeued => 1, job_rejected => 1,
              worker_registered => 2, worker_unhealthy => 1, worker_recovered => 0,
              worker_removed => 1);
for my $type (sort keys %events) {
    expect("hodei_events_published_total{event_type=\"$type\"}", $events{$type});
    expect("hodei_events_received_total{event_type=\"$type\"}", $events{$type});  # one subscriber
    expect("hodei_events_dropped_total{event_type=\"$type\"}", 0);
}
expect('hodei_event_bus_subscribers', 1);
expect('hodei_scheduler_up', 1);
(my $version = slurp('VERSION')) =~ s/\s+//g;
expect("hodei_build_info{version=\"$version\"}", 1);
ok($m !~ /^hodei_metrics_label_overflow_total\{/m, 'no label overflow');
cmp_ok(sample($m, 'hodei_http_requests_total{method="POST",endpoint="/api/v1/",status_code="201"}') // 0,
       '>=', 50, 'nginx counted the submissions');

# clean stop
is(stop($agent{$other}, 'TERM'), 0, 'agent stops on SIGTERM');
is(stop($d->{pid}, 'TERM'), 0, 'daemon stops on SIGTERM with exit 0');
my $after = scrape();
ok($after =~ /^hodei_jobs_submitted_total\{tenant_id="alpha"\} 17$/m,
   'nginx still serves the last snapshot after the daemon exited');
is(stop($nginx, 'QUIT'), 0, 'nginx stops');
kill 'KILL', $1 if slurp($pidfile) =~ /^(\d+)$/m;
done_testing();
