#!/usr/bin/perl
# Each client's share is bounded, against a real hodei-scheduler:
#   - the assignment lease: a fake worker that registers (small: best fit prefers it) and never
#     starts its jobs loses them after the lease (a requeued decision that costs the job no
#     retry), is kept from new jobs, and a real agent runs them;
#   - the per-tenant limit of unfinished jobs: 429 for that tenant only, others unaffected, and
#     room again once a job ends.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use HodeiTest;
use Test::More;
use Time::HiRes qw(sleep time);

my $port = ($ENV{HODEI_CORE_TEST_PORT} || 18100) + 70;

sub show { ref $_[0] ? to_json($_[0]) : $_[0] // 'undef' }

# ---- the lease -----------------------------------------------------------------------------
{
    my $d = start_daemon($port, qw(--assignment-lease-s 1 --publish-interval-ms 20
                                   --heartbeat-timeout-s 600 --worker-timeout-s 1200));
    my ($st, $fake) = call($d, 'POST', '/workers', { worker_id => 'fake', cpu_m => 100, memory_mb => 64 },
                           token => $d->{tokens}{worker});
    is($st, 201, 'a fake worker registers (with a real worker token)');
    my $session = $fake->{session_token};

    my @jobs;
    for my $n (1 .. 3) {
        my ($s, $j) = call($d, 'POST', '/jobs', { command => "echo job-$n", cpu_m => 100 },
                           token => $d->{tokens}{acme});
        push @jobs, $j->{id};
    }
    my (undef, $first) = call($d, 'GET', "/jobs/$jobs[0]");
    is($first->{worker_id}, 'fake', 'the first job is assigned to the fake worker');
    my (undef, $a) = call($d, 'GET', '/workers/fake/assignments', undef, token => $session);
    is(scalar @{ $a->{jobs} }, 1, 'its assignments list the job; it never starts it');

    # the lease ends: the job is taken back and the fake worker gets no more jobs
    ok(wait_for(10, sub { my (undef, $j) = call($d, 'GET', "/jobs/$jobs[0]"); $j->{state} eq 'queued' }),
       'after the 1 s lease the job is queued again');
    my (undef, $w) = call($d, 'GET', '/workers');
    my ($fw) = grep { $_->{id} eq 'fake' } @{ $w->{workers} };
    is($fw->{state}, 'unhealthy', 'the fake worker is kept from new jobs (unhealthy)');
    ($st) = call($d, 'POST', "/jobs/$jobs[0]/start", {}, token => $session);
    is($st, 409, 'and can no longer start the job it lost');
    settle();
    my $m = metrics($d);
    is(sample($m, 'hodei_scheduling_decisions_total{decision_type="requeued"}'), 1,
       'counted as decision_type="requeued"');
    is(sample($m, 'hodei_events_published_total{event_type="worker_unhealthy"}'), 1,
       'a worker_unhealthy event');

    # a real agent comes and runs every job
    my $agent = spawn("$TMP/agent.log", 'build/hodei-worker', '--api', "http://127.0.0.1:$port",
                      '--token-file', token_file($d->{tokens}{worker}), '--id', 'real',
                      '--cpu-m', 4000, '--memory-mb', 4096, '--poll-wait', 2);
    my %done;
    ok(wait_for(30, sub {
        for my $id (@jobs) {
            my (undef, $j) = call($d, 'GET', "/jobs/$id");
            $done{$id} = $j if $j->{state} =~ /^(succeeded|failed|cancelled)$/;
        }
        keys %done == @jobs }), 'every job finished') or diag(slurp("$TMP/agent.log"));
    ok(!grep({ $_->{state} ne 'succeeded' || $_->{worker_id} ne 'real' } values %done),
       'each on the real agent') or diag(show([values %done]));
    is($done{ $jobs[0] }{attempts}, 1, 'the lost lease cost the job no attempt');
    my $r;
    call($d, 'GET', "/jobs/$jobs[0]/output", undef, token => $d->{tokens}{acme}, response => \$r);
    is($r->{content}, "job-1\n", 'and its output is the real run\'s');
    is(stop($agent, 'TERM'), 0, 'the agent stops');
    is(stop($d->{pid}, 'TERM'), 0, 'the daemon stops');
}

# ---- unfinished jobs per tenant -----------------------------------------------------------------
{
    my $d = start_daemon($port + 1, qw(--max-jobs-per-tenant 3 --max-queued-jobs 100));
    my @ids;
    for (1 .. 3) {
        my ($s, $j) = call($d, 'POST', '/jobs', { command => 'true' }, token => $d->{tokens}{acme});
        push @ids, $j->{id} if $s == 201;
    }
    is(scalar @ids, 3, 'acme submits its 3 jobs (no worker: they stay queued)');
    my (undef, $before) = call($d, 'GET', '/jobs?limit=1000');
    my ($s, $e) = call($d, 'POST', '/jobs', { command => 'true' }, token => $d->{tokens}{acme});
    is($s, 429, 'the 4th unfinished job of acme: 429');
    is($e->{error}, 'tenant_queue_full', 'tenant_queue_full') or diag(show($e));
    ($s) = call($d, 'POST', '/jobs', { tenant_id => 'acme', command => 'true' });
    is($s, 429, 'also when an admin submits it for acme');
    my (undef, $after) = call($d, 'GET', '/jobs?limit=1000');
    is(to_json($after), to_json($before), 'the refusals changed nothing');
    ($s) = call($d, 'POST', '/jobs', { command => 'true' }, token => $d->{tokens}{beta});
    is($s, 201, 'beta is unaffected');
    call($d, 'POST', "/jobs/$ids[0]/cancel", undef, token => $d->{tokens}{acme});
    ($s) = call($d, 'POST', '/jobs', { command => 'true' }, token => $d->{tokens}{acme});
    is($s, 201, 'a job of acme ends: room for one more');
    is(stop($d->{pid}, 'TERM'), 0, 'the daemon stops');
}
done_testing();
