#!/usr/bin/perl
# hodei-worker and hodeictl against a real hodei-scheduler with tokens: jobs that succeed, exit 3
# and time out; listing, workers, errors, cancel, the event stream, re-registration with a new
# session, and a clean agent shutdown.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use HodeiTest;
use Test::More;
use Time::HiRes qw(sleep time);

my $port_base = $ENV{HODEI_CLI_TEST_PORT} || 18250;
my $scheduler = $ENV{HODEI_SCHEDULER} || 'build/hodei-scheduler';
my $api = "http://127.0.0.1:$port_base";
my @ctl = ('build/hodeictl', '--api', $api);
my $tenant = 'cli-t';

plan skip_all => "$scheduler is not built" unless -x $scheduler;
plan tests => 39;

sub start {
    my ($name, @cmd) = @_;
    return spawn({ out => "$TMP/$name.out", err => "$TMP/$name.err" }, @cmd);
}

sub ctl_json {
    my ($rc, $out, $err) = run(@ctl, '--json', @_);
    my $doc = $rc == 0 ? eval { from_json($out) } : undef;
    return ($rc, $doc, $err);
}

sub wait_for_state {
    my ($id, $seconds, @states) = @_;
    my $deadline = time + $seconds;
    my %want = map { $_ => 1 } @states;
    while (time < $deadline) {
        my ($rc, $job) = ctl_json('get', $id);
        return $job if $rc == 0 && $want{ $job->{state} };
        sleep 0.1;
    }
    my (undef, $job) = ctl_json('get', $id);
    return $job;
}

sub show { my ($v) = @_; return defined $v ? to_json($v) : 'undef' }

# The process group the agent ran a job in (its log names the leader), 0 if not found.
sub job_group {
    my ($id) = @_;
    return slurp("$TMP/worker.err") =~ /job $id: running \(pid (\d+)/ ? $1 : 0;
}

# True once no process is left in the job's group (waits up to 5 s).
sub job_group_gone {
    my ($id) = @_;
    my $pgid = job_group($id) or return 0;
    for (1 .. 50) {
        return 1 unless kill 0, -$pgid;
        sleep 0.1;
    }
    return 0;
}

# --- the scheduler ------------------------------------------------------------------------
# Short health timeouts so the re-registration case below takes seconds.  hodeictl is the
# admin here (HODEI_TOKEN); the agent has a worker token in a file.
my $tokens = make_tokens("$TMP/tokens", [admin => 'admin'], [worker => 'worker']);
$ENV{HODEI_TOKEN} = $tokens->{admin};
my $sched = start('scheduler', $scheduler, '--listen', "127.0.0.1:$port_base", '--segment', "$TMP/segment",
                  '--tokens', "$TMP/tokens", '--heartbeat-timeout-s', '2', '--worker-timeout-s', '3');
my $up = 0;
for (1 .. 100) {
    my ($rc) = run(@ctl, 'workers');
    if ($rc == 0) { $up = 1; last }
    last if defined wait_exit($sched, 0.1);
}
ok($up, 'hodei-scheduler answers') or do { diag(slurp("$TMP/scheduler.err")); exit 1 };

# Followers subscribe before anything happens: worker registration + 4 events for each of 3 jobs.
my $events_json = start('events-json', @ctl, '--json', 'events', '--count', '13');
my $events_text = start('events-text', @ctl, 'events', '--count', '4');
sleep 1;

my $worker = start('worker', 'build/hodei-worker', '--api', $api, '--token-file',
                   token_file($tokens->{worker}), '--id', 'cli-w1', '--cpu-m', '2000',
                   '--memory-mb', '2048', '--poll-wait', '2', '--heartbeat-ms', '200');
my $registered = 0;
for (1 .. 100) {
    my ($rc, $doc) = ctl_json('workers');
    last if ($registered = grep { $_->{id} eq 'cli-w1' } @{ $doc->{workers} // [] });
    sleep 0.1;
}
ok($registered, 'hodei-worker registers')
    or diag(slurp("$TMP/worker.err"));

# --- three jobs: success, exit 3, timeout ----------------------------------------------------
my %submitted;
for my $job ([ 'ok', '--timeout', '20', '--', 'echo', 'hello' ],
             [ 'exit3', '--', 'sh', '-c', 'exit 3' ],
             [ 'slow', '--timeout', '1', '--', 'sleep', '30' ]) {
    my ($name, @args) = @$job;
    my ($rc, $doc, $err) = ctl_json('submit', '--tenant', $tenant, '--name', $name, @args);
    $submitted{$name} = $doc;
    ok($rc == 0 && $doc->{id} =~ /^\d+$/ && $doc->{tenant_id} eq $tenant && $doc->{name} eq $name,
       "submit $name returns the new job")
        or diag("rc=$rc $err " . show($doc));
}
is_command('exit3', q{sh -c 'exit 3'});

sub is_command {
    my ($name, $want) = @_;
    ok(($submitted{$name}{command} // '') eq $want, "submit quotes the words of ${name}'s command")
        or diag(show($submitted{$name}));
}

my $ok = wait_for_state($submitted{ok}{id}, 20, qw(succeeded failed cancelled));
ok($ok->{state} eq 'succeeded' && defined $ok->{exit_code} && $ok->{exit_code} == 0
   && !defined $ok->{error_type}, 'the succeeding job succeeded with exit code 0')
    or diag(show($ok));
ok(($ok->{worker_id} // '') eq 'cli-w1' && $ok->{attempts} == 1, 'it ran once on cli-w1')
    or diag(show($ok));

my $exit3 = wait_for_state($submitted{exit3}{id}, 20, qw(succeeded failed cancelled));
ok($exit3->{state} eq 'failed' && ($exit3->{error_type} // '') eq 'exit_code' && $exit3->{exit_code} == 3,
   'the exit-3 job failed with error_type exit_code and exit code 3')
    or diag(show($exit3));

my $slow = wait_for_state($submitted{slow}{id}, 20, qw(succeeded failed cancelled));
ok($slow->{state} eq 'failed' && ($slow->{error_type} // '') eq 'timeout',
   'the sleeping job failed with error_type timeout')
    or diag(show($slow));
my $ran = ($slow->{finished_at} // 0) - ($slow->{started_at} // 0);
ok($ran >= 0.9 && $ran < 10, "it was stopped after its 1 s timeout (ran ${ran}s)")
    or diag(show($slow));
ok(job_group_gone($slow->{id}), 'its processes are gone')
    or diag(slurp("$TMP/worker.err"));

# --- listing and workers ------------------------------------------------------------------------
{
    my ($rc, $doc) = ctl_json('list', '--tenant', $tenant);
    my @ids = map { $_->{id} } @{ $doc->{jobs} // [] };
    ok($rc == 0 && "@ids" eq join(' ', map { $submitted{$_}{id} } qw(ok exit3 slow)),
       'list --tenant returns the three jobs in id order')
        or diag(show($doc));
    ($rc, $doc) = ctl_json('list', '--tenant', $tenant, '--state', 'failed');
    @ids = map { $_->{id} } @{ $doc->{jobs} // [] };
    ok($rc == 0 && "@ids" eq "$submitted{exit3}{id} $submitted{slow}{id}", 'list --state failed filters')
        or diag(show($doc));
    ($rc, $doc) = ctl_json('list', '--limit', '2');
    ok($rc == 0 && @{ $doc->{jobs} } == 2, 'list --limit 2 stops at two jobs')
        or diag(show($doc));
    my ($trc, $table) = run(@ctl, 'list', '--tenant', $tenant);
    ok($trc == 0 && $table =~ /^ID\s+TENANT\s+NAME\s+STATE/ && $table =~ /^\Q$submitted{exit3}{id}\E\s+cli-t\s+exit3\s+failed\s+cli-w1\s+1\s+exit_code 3\s/m,
       'list prints a table by default')
        or diag($table);
}
{
    my ($rc, $doc) = ctl_json('workers');
    my ($w) = grep { $_->{id} eq 'cli-w1' } @{ $doc->{workers} // [] };
    ok($w && $w->{cpu_m} == 2000 && $w->{memory_mb} == 2048 && $w->{state} eq 'healthy',
       'workers lists the agent with its capacity')
        or diag(show($doc));
    ok($w && $w->{cpu_usage_percent} >= 0 && $w->{cpu_usage_percent} <= 100 && $w->{memory_usage_mb} > 0,
       'the agent heartbeats real CPU and memory use')
        or diag(show($w));
    my ($trc, $table) = run(@ctl, 'workers');
    ok($trc == 0 && $table =~ /^cli-w1\s+healthy\s+\d+\/2000\s+\d+\/2048\s/m, 'workers prints a table')
        or diag($table);
}
{
    my ($rc, $out) = run(@ctl, 'get', $submitted{exit3}{id});
    ok($rc == 0 && $out =~ /^state\s+failed$/m && $out =~ /^exit_code\s+3$/m && $out =~ /^started_at\s+\d{4}-\d\d-\d\dT[\d:.]+Z$/m,
       'get prints the job as key/value lines')
        or diag($out);
}

# --- errors -------------------------------------------------------------------------------------
{
    my ($rc, $out, $err) = run(@ctl, 'get', '987654');
    ok($rc == 1 && $out eq '' && $err =~ /^hodeictl: [a-z_]+: \S/, 'an unknown job is the server\'s error, exit 1')
        or diag("rc=$rc $err");
    ($rc, $out, $err) = run(@ctl, 'submit', '--tenant', 'bad tenant!', '--', 'true');
    ok($rc == 1 && $err =~ /^hodeictl: [a-z_]+: \S/, 'an invalid tenant is refused by the server, exit 1')
        or diag("rc=$rc $err");
}

# --- cancel ---------------------------------------------------------------------------------------
{
    my ($rc, $job) = ctl_json('submit', '--tenant', $tenant, '--name', 'long', '--', 'sleep', '300');
    my $running = wait_for_state($job->{id}, 20, qw(running));
    ok($running->{state} eq 'running', 'a long job runs')
        or diag(show($running));
    my ($crc, $cancelled, $err) = ctl_json('cancel', $job->{id});
    ok($crc == 0 && $cancelled->{state} eq 'cancelled', 'cancel returns the cancelled job')
        or diag("$err " . show($cancelled));
    my ($rc2, $out2, $err2) = run(@ctl, 'cancel', $job->{id});
    ok($rc2 == 1 && $err2 =~ /^hodeictl: [a-z_]+: \S/, 'cancelling it again is refused, exit 1')
        or diag("rc=$rc2 $err2");
    ok(job_group_gone($job->{id}) && slurp("$TMP/worker.err") =~ /job $job->{id}: the scheduler dropped it/,
       'the agent stops the cancelled job\'s process')
        or diag(slurp("$TMP/worker.err"));
}

# --- the event stream ---------------------------------------------------------------------------
{
    my $rc = wait_exit($events_json, 10);
    my @lines = split /\n/, slurp("$TMP/events-json.out");
    my @events = grep { defined } map { eval { from_json($_) } } @lines;
    ok(defined $rc && $rc == 0 && @lines == 13 && @events == 13, 'events --json --count 13 prints 13 JSON lines and exits 0')
        or diag('rc=' . ($rc // 'running') . "\n" . join("\n", @lines) . slurp("$TMP/events-json.err"));
    my %types;
    $types{ $_->{type} }++ for @events;
    my %want = (worker_registered => 1, job_submitted => 3, job_assigned => 3, job_started => 3,
                job_succeeded => 1, job_failed => 2);
    my $got = join ',', map { "$_=" . ($types{$_} // 0) } sort keys %types;
    ok($got eq join(',', map { "$_=$want{$_}" } sort keys %want), 'the events are the registration and each job\'s life')
        or diag($got);
    my ($failed_exit3) = grep { $_->{type} eq 'job_failed' && $_->{job}{id} eq $submitted{exit3}{id} } @events;
    ok($failed_exit3 && $failed_exit3->{job}{exit_code} == 3, 'a job event carries the job')
        or diag(show($failed_exit3));

    $rc = wait_exit($events_text, 5);
    my $text = slurp("$TMP/events-text.out");
    my @text_lines = split /\n/, $text;
    ok(defined $rc && $rc == 0 && @text_lines == 4
       && $text_lines[0] =~ /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z worker_registered\s+worker=cli-w1$/
       && $text_lines[1] =~ /^\S+Z job_submitted\s+job=$submitted{ok}{id} tenant=cli-t state=queued$/,
       'events prints one readable line per event')
        or diag($text);
}

# --- removal and re-registration -----------------------------------------------------------
{
    # The first attempt sleeps; once the scheduler has removed the (frozen) agent and requeued the
    # job, the agent re-registers, stops that attempt and runs the job again, which then exits 0.
    my $marker = "$TMP/first-attempt";
    my ($src, $job) = ctl_json('submit', '--tenant', $tenant, '--name', 'requeued', '--retries', '1', '--',
                               "test -e $marker && exit 0; touch $marker; sleep 300");
    my $first = wait_for_state($job->{id}, 20, qw(running));
    my $first_group = job_group($job->{id});
    kill 'STOP', $worker;
    my $removed = 0;
    for (1 .. 150) {
        my ($rc, $doc) = ctl_json('workers');
        last if ($removed = $rc == 0 && !grep { $_->{id} eq 'cli-w1' } @{ $doc->{workers} });
        sleep 0.1;
    }
    kill 'CONT', $worker;
    ok($first->{state} eq 'running' && $removed, 'the scheduler removes a silent agent')
        or diag(show($first));
    my $done = wait_for_state($job->{id}, 20, qw(succeeded failed cancelled));
    ok($done->{state} eq 'succeeded' && $done->{attempts} == 2 && $done->{worker_id} eq 'cli-w1',
       'the agent re-registers and runs the requeued job again')
        or diag(show($done));
    my $log = slurp("$TMP/worker.err");
    ok($log =~ /re-registered as cli-w1/ && $log =~ /job $job->{id}: the scheduler dropped it/,
       'it stopped the attempt the scheduler had taken back')
        or diag($log);
    my $gone = 0;
    for (1 .. 50) { last if ($gone = !kill 0, -$first_group); sleep 0.1 }
    ok($first_group && $gone, 'no process of that attempt is left');
}

# --- shutdown -----------------------------------------------------------------------------------
{
    # A job that ignores SIGTERM still running when the agent is told to stop: grace, then killed.
    my ($src, $job) = ctl_json('submit', '--tenant', $tenant, '--name', 'stubborn', '--',
                               'trap "" TERM; sleep 300');
    my $running = wait_for_state($job->{id}, 20, qw(running));
    kill 'TERM', $worker;
    my $rc = wait_exit($worker, 15);
    my $log = slurp("$TMP/worker.err");
    ok(defined $rc && $rc == 0, 'hodei-worker exits 0 on SIGTERM')
        or diag("rc=" . ($rc // 'running') . "\n$log");
    ok($log =~ /registered as cli-w1/ && $log =~ /stopping: waiting for 1 running job/ && $log =~ /stopped$/m,
       'its log tells what it did')
        or diag($log);
    my (undef, $lost) = ctl_json('get', $job->{id});
    ok($running->{state} eq 'running' && $lost->{state} eq 'failed' && ($lost->{error_type} // '') eq 'worker_lost',
       'a job outliving the shutdown grace is killed and reported worker_lost')
        or diag(show($lost));
    ok(job_group_gone($job->{id}), 'no job process outlives the agent')
        or diag($log);
    kill 'TERM', $sched;
    $rc = wait_exit($sched, 15);
    ok(defined $rc && $rc == 0, 'hodei-scheduler stops cleanly')
        or diag("rc=" . ($rc // 'running') . "\n" . slurp("$TMP/scheduler.err"));
}
