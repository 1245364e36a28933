#!/usr/bin/perl
# The agent survives the scheduler (DESIGN §10), with a real hodei-worker and a real daemon
# killed with SIGKILL:
#   - a job running `sleep 5` goes on through a restart in its middle and ends succeeded,
#     once, counted once;
#   - a job that ends while the scheduler is down has its outcome reported once it is back
#     (the agent retried until acknowledged);
#   - a job the scheduler does not give back when the agent registers again (here: the store
#     says another worker runs it) is stopped, and only that one.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use HodeiTest;
use Test::More;

for my $need (qw(build/hodei-scheduler build/hodei-worker)) {
    plan skip_all => "$need not built" unless -e $need;
}

my $port = $ENV{HODEI_TEST_AGENT_RESTART_PORT} || 18620;
my $d = start_daemon($port, qw(--publish-interval-ms 50 --heartbeat-timeout-s 2
                               --worker-timeout-s 4));
my $agent_log = "$TMP/agent.log";
my $agent = spawn($agent_log, 'build/hodei-worker', '--api', "http://127.0.0.1:$port",
                  '--token-file', token_file($d->{tokens}{worker}), '--id', 'agent',
                  '--cpu-m', 1000, '--memory-mb', 1000, '--heartbeat-ms', 200, '--poll-wait', 1);
sub show { my ($v) = @_; ref $v ? to_json($v) : ($v // 'undef') }
sub job { my (undef, $j) = call($d, 'GET', "/jobs/$_[0]"); ref $j ? $j : {} }
sub lines { my ($re) = @_; scalar(() = slurp($agent_log) =~ /$re/mg) }

# A job that writes a line when it starts and one when it ends, into $TMP/runs-<id>.
sub submit {
    my ($sleep) = @_;
    my $cmd = "echo start >> $TMP/runs-\$HODEI_JOB_ID; sleep $sleep; echo end >> $TMP/runs-\$HODEI_JOB_ID";
    my ($s, $j) = call($d, 'POST', '/jobs', { tenant_id => 'acme', command => $cmd,
                                              cpu_m => 100, memory_mb => 10 });
    die 'submit: ' . show($j) unless $s == 201;
    return $j->{id};
}

sub completed {
    settle($d);
    return sample(metrics($d), 'hodei_jobs_completed_total{tenant_id="acme"}') // 0;
}

ok(wait_for(30, sub { lines(qr/registered as agent/) == 1 }), 'the agent registered');

# ---- a restart in the middle of a job ----------------------------------------------------------
my $long = submit(5);
ok(wait_for(30, sub { -s "$TMP/runs-$long" && job($long)->{state} eq 'running' }),
   'sleep 5 is running');
restart_daemon($d, 'KILL');
ok(wait_for(30, sub { lines(qr/re-registered as agent .*1 running job\(s\) kept/) == 1 }),
   'the agent registers again, and gets its running job back') or diag(slurp($agent_log));
ok(wait_for(60, sub { job($long)->{state} eq 'succeeded' }), 'the job ends succeeded')
    or diag(show(job($long)), slurp($agent_log));
is(slurp("$TMP/runs-$long"), "start\nend\n", 'it ran once, to its end');
is(job($long)->{attempts}, 1, 'one attempt');
is(completed(), 1, 'one outcome counted');

# ---- the job ends while the scheduler is down --------------------------------------------------
my $short = submit(1);
ok(wait_for(30, sub { job($short)->{state} eq 'running' }), 'a one-second job is running');
is(stop($d->{pid}, 'KILL'), 128 + 9, 'the scheduler is killed');
ok(wait_for(30, sub { lines(qr/job $short: reporting succeed failed/) >= 1 }),
   'the job ends, its report finds no scheduler') or diag(slurp($agent_log));
$d->{pid} = spawn($d->{log}, @{ $d->{cmd} });
wait_port($port, 30) or die slurp($d->{log});
ok(wait_for(60, sub { job($short)->{state} eq 'succeeded' }), 'once it is back, the report gets through')
    or diag(show(job($short)), slurp($agent_log));
like(slurp($agent_log), qr/job $short: reported succeed \(exit code 0.*after retrying/,
     'the agent says it retried');
is(slurp("$TMP/runs-$short"), "start\nend\n", 'it ran once');
is(completed(), 2, 'its outcome is counted once');

# ---- a job the scheduler does not give back ------------------------------------------------------
my $kept = submit(30);
my $taken = submit(30);
ok(wait_for(30, sub { -s "$TMP/runs-$kept" && -s "$TMP/runs-$taken" }), 'two long jobs run');
stop($d->{pid}, 'KILL');
# while it is down, its store says one of them runs elsewhere (as after a crash that came
# between that job's loss and its start on another worker)
system('sqlite3', "$d->{state_dir}/hodei.db",
       "UPDATE jobs SET worker_id = 'elsewhere' WHERE id = $taken") == 0 or die;
$d->{pid} = spawn($d->{log}, @{ $d->{cmd} });
wait_port($port, 30) or die slurp($d->{log});
ok(wait_for(30, sub { lines(qr/job $taken: the scheduler dropped it/) == 1 }),
   'the agent stops the job the scheduler does not give back') or diag(slurp($agent_log));
is(lines(qr/job $kept: the scheduler dropped it/), 0, '... and only that one');
is(job($kept)->{state}, 'running', 'the other one runs on');
ok(wait_for(30, sub { job($taken)->{state} eq 'failed' }),
   'the worker named for it never comes: worker_lost') or diag(show(job($taken)));
is(slurp("$TMP/runs-$taken"), "start\n", 'it was stopped before its end');
call($d, 'POST', "/jobs/$kept/cancel");
ok(wait_for(30, sub { lines(qr/job $kept: the scheduler dropped it/) == 1 }),
   'a cancellation stops the other one');
is(stop($agent, 'TERM'), 0, 'the agent stops');
is(stop($d->{pid}, 'TERM'), 0, 'the daemon stops');
done_testing();
