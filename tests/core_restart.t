#!/usr/bin/perl
# Restarts (DESIGN §10), through the API of a real hodei-scheduler killed with SIGKILL, with
# workers played by this script (their registrations, starts and reports are requests it
# sends, so every interleaving is the one it chooses):
#   - job ids continue and are never reused; queued jobs keep their order; an assigned job
#     that was not started goes back to the queue at no cost to it; a running job stays
#     running on its worker; a finished job keeps its outcome and its output;
#   - every counter continues (none lower than before the crash) with the same _created;
#   - a worker that registers again gets back the running jobs it lists, loses those it does
#     not list (worker_lost: requeued while it has retries), and is not given what it lists
#     that is not its own; a worker that never comes back loses its jobs after
#     --worker-timeout-s;
#   - a report sent again after its answer was lost is acknowledged and counted once;
#   - --job-retention prunes finished jobs from the store too;
#   - a damaged database, a newer schema and a second daemon on the same directory are
#     refused at start, saying which file and why.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use HodeiTest;
use MIME::Base64 qw(encode_base64);
use Test::More;

my $port = $ENV{HODEI_TEST_RESTART_PORT} || 18600;
my $d = start_daemon($port, qw(--publish-interval-ms 50 --heartbeat-timeout-s 600
                               --worker-timeout-s 1200 --assignment-lease-s 600
                               --job-retention 1000));
sub show { my ($v) = @_; ref $v ? to_json($v) : ($v // 'undef') }

sub job { my (undef, $j) = call($d, 'GET', "/jobs/$_[0]"); ref $j ? $j : {} }

sub submit {
    my (%spec) = @_;
    my ($s, $j) = call($d, 'POST', '/jobs', { tenant_id => 'acme', command => 'true', %spec });
    die 'submit: ' . show($j) unless $s == 201;
    return $j->{id};
}

# A worker played by the script: registers with the worker token, acts with its session.
sub register {
    my ($id, %o) = @_;
    my ($s, $w) = call($d, 'POST', '/workers', { worker_id => $id, cpu_m => $o{cpu_m},
                                                 memory_mb => $o{memory_mb},
                                                 %{ $o{extra} // {} } },
                       token => $d->{tokens}{worker});
    die "register $id: $s " . show($w) unless $s == 201;
    return { id => $id, token => $w->{session_token}, reply => $w };
}

sub as_worker {
    my ($w, $method, $path, $body) = @_;
    return call($d, $method, $path, $body // {}, token => $w->{token});
}

sub assigned_to {
    my ($w) = @_;
    my (undef, $r) = call($d, 'GET', "/workers/$w->{id}/assignments?wait=0",
                          undef, token => $w->{token});
    return map { $_->{id} } @{ $r->{jobs} // [] };
}

# What OpenMetrics shows of every counter and histogram series: value, and _created.
my @monotonic = map { $_->[0] =~ s/_total$//r } grep { $_->[1] ne 'gauge' } families();
sub counter_samples {
    my $text = `build/hodei-metrics --openmetrics $d->{segment} 2>&1`;
    my %v;
    for (split /\n/, $text) {
        my ($series, $value) = /^(\S+) (\S+)/ or next;
        my ($name) = $series =~ /^([a-z_]+)/;
        $v{$series} = $value if grep { $name =~ /^\Q$_\E_(total|created|bucket|count|sum)$/ } @monotonic;
    }
    return \%v;
}

# ---- before the crash ---------------------------------------------------------------------
# best fit: the least memory first, so w1 fills up first, then w2; w3 comes later
my $w1 = register('w1', cpu_m => 200, memory_mb => 500);
my $w2 = register('w2', cpu_m => 100, memory_mb => 1000);
my $running = submit(cpu_m => 100);                   # placed on w1, started
my $assigned = submit(cpu_m => 100, max_retries => 1); # placed on w1 too, never started
my @w1_jobs = assigned_to($w1);
is_deeply([sort @w1_jobs], [sort $running, $assigned], 'w1 holds two assigned jobs')
    or diag(show(\@w1_jobs));
my ($s) = as_worker($w1, 'POST', "/jobs/$running/start");
is($s, 200, 'w1 starts one of them');
my $lost = submit(cpu_m => 100, max_retries => 1);    # w1 is full: w2, started
is(job($lost)->{worker_id}, 'w2', 'a third job on w2');
as_worker($w2, 'POST', "/jobs/$lost/start");
my $w3 = register('w3', cpu_m => 100, memory_mb => 2000);
my $done = submit(cpu_m => 100);                      # w3: runs, succeeds with output
as_worker($w3, 'POST', "/jobs/$done/start");
($s) = as_worker($w3, 'POST', "/jobs/$done/succeed",
                 { exit_code => 0, output => encode_base64("hello\n", ''), output_bytes => 6 });
is($s, 200, 'a job on w3 succeeds, with output');
my $orphan = submit(cpu_m => 100);                    # w3 again: started, w3 never returns
as_worker($w3, 'POST', "/jobs/$orphan/start");
# no capacity anywhere now: these stay queued, in this order (priority, then FIFO)
my @queued = (submit(priority => 5), submit(), submit(tenant_id => 'beta'), submit());
my (undef, $list) = call($d, 'GET', '/jobs?state=queued');
is_deeply([map { $_->{id} } @{ $list->{jobs} }], \@queued, 'four jobs queued') or diag(show($list));
settle($d);
my $counters = counter_samples();
my $last_id = $queued[-1];
my @created = grep { /_created/ } keys %$counters;
ok(keys %$counters > 150 && @created > 50, sprintf('%d counter and histogram series, %d _created, '
   . 'before the crash', scalar keys %$counters, scalar @created));

# ---- SIGKILL, and start again --------------------------------------------------------------
restart_daemon($d, 'KILL');
like(slurp($d->{log}), qr/state loaded from \S+hodei\.db in \d+ ms: next job id @{[$last_id + 1]}, 8 unfinished and 1 finished jobs/,
     'the restart loaded the state and says so');
is(job($running)->{state}, 'running', 'the running job is still running');
is(job($running)->{worker_id}, 'w1', '... on its worker');
my $back = job($assigned);
is($back->{state}, 'queued', 'the assigned job that was not started is queued again');
is($back->{attempts}, 0, '... at no cost to it');
is(job($done)->{state}, 'succeeded', 'the finished job keeps its outcome');
my $r;
call($d, 'GET', "/jobs/$done/output", undef, response => \$r);
is($r->{content}, "hello\n", '... and its output');
(undef, $list) = call($d, 'GET', '/jobs?state=queued');
is_deeply([map { $_->{id} } @{ $list->{jobs} }], [sort { $a <=> $b } @queued, $assigned],
          'the queue is as it was, with the assigned job back') or diag(show($list));
my $next = submit();
is($next, $last_id + 1, "the next id continues where the last one was ($next)");
settle($d);
my $after = counter_samples();
my @lower = grep { !defined $after->{$_} || $after->{$_} < $counters->{$_} } sort keys %$counters;
is_deeply(\@lower, [], 'no counter or histogram series is lower than before the crash')
    or diag(join "\n", map { "$_: $counters->{$_} -> " . ($after->{$_} // 'gone') } @lower);
my @moved = grep { /_created/ && $after->{$_} != $counters->{$_} } sort keys %$counters;
is_deeply(\@moved, [], '_created stays');
is($after->{'hodei_jobs_submitted_total{tenant_id="acme"}'}, $counters->{'hodei_jobs_submitted_total{tenant_id="acme"}'} + 1,
   'submissions go on counting from there');
is($after->{'hodei_scheduling_decisions_total{decision_type="requeued"}'},
   $counters->{'hodei_scheduling_decisions_total{decision_type="requeued"}'} + 1,
   'taking the assigned job back is a requeued decision');

# ---- the workers come back ------------------------------------------------------------------
($s) = as_worker($w1, 'POST', '/workers/w1/heartbeat', { cpu_usage_percent => 1, memory_usage_mb => 1 });
is($s, 401, 'the old session is gone with the old process');
# (just room for what they run: nothing queued is placed on them meanwhile)
$w1 = register('w1', cpu_m => 100, memory_mb => 64,
               extra => { running => ["$running", "$done", "$queued[0]", "999999"] });
is_deeply($w1->{reply}{jobs}, ["$running"],
          'w1 lists four jobs: it gets back the one that is its own, and nothing else (it stops the others)')
    or diag(show($w1->{reply}));
is(job($running)->{state}, 'running', 'that job runs on');
is($w1->{reply}{free_cpu_m}, 0, 'and holds its share of w1 again');
$w2 = register('w2', cpu_m => 1, memory_mb => 1, extra => { running => [] });
is_deeply($w2->{reply}{jobs}, [], 'w2 does not list its job');
my $l = job($lost);
is($l->{state}, 'queued', 'that job is lost: queued again, having a retry left');
is($l->{attempts}, 1, '... the lost attempt counted');
($s) = as_worker($w2, 'POST', "/jobs/$lost/succeed", { exit_code => 0 });
is($s, 409, "w2's late report of it is refused");

# ---- a report sent again ------------------------------------------------------------------------
my ($s1, $j1) = as_worker($w1, 'POST', "/jobs/$running/succeed", { exit_code => 0 });
my ($s2, $j2) = as_worker($w1, 'POST', "/jobs/$running/succeed", { exit_code => 0 });
is("$s1 $s2", '200 200', 'a success reported twice (the first answer lost) is acknowledged twice');
is($j2->{state}, 'succeeded', '... as the same outcome');
settle($d);
my $m = metrics($d);
is(sample($m, 'hodei_jobs_completed_total{tenant_id="acme"}'),
   $counters->{'hodei_jobs_completed_total{tenant_id="acme"}'} + 1, '... and counted once');
($s) = as_worker($w1, 'POST', "/jobs/$running/fail", { error_type => 'exit_code', exit_code => 1 });
is($s, 409, 'another outcome for it is refused');

# ---- a worker that does not come back --------------------------------------------------------
is(job($orphan)->{state}, 'running', 'w3\'s job waits for w3');
$d->{cmd} = [map { $_ eq '1200' ? '3' : $_ } @{ $d->{cmd} }];    # --worker-timeout-s
$d->{cmd} = [map { $_ eq '600' ? '2' : $_ } @{ $d->{cmd} }];     # --heartbeat-timeout-s too
restart_daemon($d, 'KILL');
ok(wait_for(30, sub { job($orphan)->{state} eq 'failed' }),
   'w3 does not come back within --worker-timeout-s: its job failed') or diag(show(job($orphan)));
is(job($orphan)->{error_type}, 'worker_lost', '... worker_lost');
is(stop($d->{pid}, 'TERM'), 0, 'SIGTERM: exit 0');

# ---- retention, in the store too --------------------------------------------------------------
{
    my $p = start_daemon($port + 1, qw(--job-retention 3));
    my @ids = map { my (undef, $j) = call($p, 'POST', '/jobs', { tenant_id => 'acme', command => 'x' });
                    call($p, 'POST', "/jobs/$j->{id}/cancel"); $j->{id} } 1 .. 8;
    my (undef, $left) = call($p, 'GET', '/jobs');
    is_deeply([map { $_->{id} } @{ $left->{jobs} }], [@ids[5 .. 7]], 'three finished jobs kept');
    restart_daemon($p, 'KILL');
    (undef, $left) = call($p, 'GET', '/jobs');
    is_deeply([map { $_->{id} } @{ $left->{jobs} }], [@ids[5 .. 7]], '... also after a restart');
    my $rows = `sqlite3 $p->{state_dir}/hodei.db 'SELECT count(*) FROM jobs; SELECT count(DISTINCT job_id) FROM transitions'`;
    is($rows, "3\n3\n", 'the store holds three jobs and their transitions, no more');
    is(stop($p->{pid}, 'TERM'), 0, 'that daemon stops');

    # ---- refusals at start ----
    my $state = $p->{state_dir};
    my @cmd = grep { $_ ne '--listen' && !/^127\.0\.0\.1:/ } @{ $p->{cmd} };
    my $second = start_daemon($port + 2, '--state-dir', $state);
    my ($rc, undef, $err) = run(@cmd, '--listen', '127.0.0.1:' . ($port + 3));
    isnt($rc, 0, 'a second daemon on the same state directory is refused');
    like($err, qr/\Q$state\E: state directory in use by another process \(pid $second->{pid}\)/,
         '... naming the directory and the holder') or diag($err);
    is(stop($second->{pid}, 'TERM'), 0, 'the first one stops');
    push @cmd, '--listen', '127.0.0.1:' . ($port + 3);
    system('sqlite3', "$state/hodei.db", 'PRAGMA user_version = 99') == 0 or die;
    ($rc, undef, $err) = run(@cmd);
    isnt($rc, 0, 'a database of a newer schema is refused');
    like($err, qr/\Q$state\E\/hodei\.db: schema version 99 is newer than this program's \(2\)/,
         '... saying so') or diag($err);
    system('sqlite3', "$state/hodei.db", 'PRAGMA user_version = 2') == 0 or die;
    open(my $fh, '+<', "$state/hodei.db") or die;
    binmode $fh;
    seek($fh, 0, 0);
    print $fh 'this is not an SQLite file at all' x 8;
    close $fh;
    ($rc, undef, $err) = run(@cmd);
    isnt($rc, 0, 'a damaged database is refused: the daemon does not start empty');
    like($err, qr/cannot open the state store: \Q$state\E\/hodei\.db: .*(not a database|malformed)/,
         '... with the path and SQLite\'s message') or diag($err);
}
done_testing();
