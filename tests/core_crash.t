#!/usr/bin/perl
# Crashes (DESIGN §10): hodei-scheduler behind nginx with the module, two real agents, a client
# submitting continuously for three tenants through nginx, a scraper reading nginx's
# /api/v1/metrics (OpenMetrics) all along — and the daemon killed with SIGKILL at random
# moments, at least 30 times, and started again each time.  Afterwards:
#   - every job that was answered 201 exists, with the tenant and name it was submitted with
#     (so no id was given to two jobs), and every job ends finished;
#   - no job ran on two workers at once: each job's command takes a lock named after its id
#     (flock -n) and records a clash, and its start and end with $HODEI_JOB_ID and
#     $HODEI_WORKER_ID;
#   - each tenant's counters in the final scrape through nginx equal what the jobs say
#     (submitted, completed, failed by error_type; scheduled from the stored transitions);
#   - no counter or histogram series went down between any two scrapes, and no _created
#     moved.
# The randomness is seeded (HODEI_CRASH_SEED repeats a run's choices); the seed is printed.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use HodeiTest;
use HTTP::Tiny;
use JSON::PP ();
use POSIX ();
use Test::More;
use Time::HiRes qw(sleep time);

for my $need (qw(build/hodei-scheduler build/hodei-worker build/ngx_http_hodei_module.so)) {
    plan skip_all => "$need not built" unless -e $need;
}
plan skip_all => 'flock (util-linux) is missing' unless -x '/usr/bin/flock';

my $KILLS = $ENV{HODEI_CRASH_KILLS} || 30;
my $seed = $ENV{HODEI_CRASH_SEED} // (time() ^ $$) & 0xffffff;
srand($seed);
diag("crash test seed $seed (HODEI_CRASH_SEED=$seed repeats its choices)");

my $port = $ENV{HODEI_TEST_CRASH_PORT} || 18660;
my ($daemon_port, $nginx_port) = ($port, $port + 1);
my $d = start_daemon($daemon_port, qw(--publish-interval-ms 100 --job-retention 100000));
start_nginx_in_front($d, $nginx_port, workers => 2);
my $base = "http://127.0.0.1:$nginx_port/api/v1";
my $runs = "$TMP/runs";        # what the jobs record
mkdir $runs or die;

# ---- the client and the scraper: processes of their own, until $TMP/stop exists -----------
sub child {
    my ($name, $body) = @_;
    my $pid = fork // die "fork: $!";
    return $pid if $pid;
    eval { $body->(); 1 } or print STDERR "$name: $@";
    POSIX::_exit(0);
}

my @tenants = qw(acme beta gamma);
my $client = child('client', sub {
    my $http = HTTP::Tiny->new(timeout => 10, keep_alive => 1);
    open(my $log, '>>', "$TMP/accepted") or die;
    $log->autoflush(1);
    my ($n, %status) = (0);
    until (-e "$TMP/stop") {
        my $tenant = $tenants[$n % 3];
        my $name = 'c-' . ++$n;
        # a lock named after the job: a second run while one holds it is a clash
        my $cmd = "flock -n -E 99 $runs/lock-\$HODEI_JOB_ID sh -c '"
                . "echo start \$HODEI_JOB_ID \$HODEI_WORKER_ID >> $runs/log; sleep 0.1; "
                . "echo end \$HODEI_JOB_ID \$HODEI_WORKER_ID >> $runs/log'; r=\$?; "
                . "[ \$r -ne 99 ] || echo clash \$HODEI_JOB_ID \$HODEI_WORKER_ID >> $runs/clashes; "
                . ($n % 7 == 0 ? 'exit 3' : 'exit 0');
        my $r = $http->post("$base/jobs", {
            headers => { Authorization => "Bearer $d->{tokens}{$tenant}",
                         'Content-Type' => 'application/json' },
            content => to_json({ name => $name, command => $cmd, cpu_m => 100, memory_mb => 16,
                                 max_retries => $n % 3 }) });
        $status{ $r->{status} }++;
        if ($r->{status} == 201) {
            my $j = from_json($r->{content});
            print $log "$j->{id} $tenant $name\n";
        }
        sleep 0.04;                     # about 25 a second: what two agents keep up with
    }
    open(my $st, '>', "$TMP/client-status") or die;
    print $st join(' ', map { "$_:$status{$_}" } sort keys %status), "\n";
});

my @monotonic = map { $_->[0] =~ s/_total$//r } grep { $_->[1] ne 'gauge' } families();
my $scraper = child('scraper', sub {
    my $http = HTTP::Tiny->new(timeout => 10, keep_alive => 1);
    open(my $bad, '>>', "$TMP/decreases") or die;
    $bad->autoflush(1);
    my (%last, %created, $scrapes);
    until (-e "$TMP/stop") {
        my $r = $http->get("$base/metrics", { headers => { Accept => 'application/openmetrics-text' } });
        if ($r->{status} == 200 && $r->{content} =~ /^hodei_scheduler_up 1$/m) {
            $scrapes++;
            for (split /\n/, $r->{content}) {
                my ($series, $value) = /^(\S+) (\S+)/ or next;
                my ($name) = $series =~ /^([a-z_]+)/ or next;
                my ($family) = grep { $name =~ /^\Q$_\E_(total|created|bucket|count|sum)$/ } @monotonic;
                next unless $family;
                if ($name =~ /_created$/) {
                    $created{$series} //= $value;
                    print $bad "$series: _created $created{$series} -> $value (scrape $scrapes)\n"
                        if $value != $created{$series};
                } elsif (defined $last{$series} && $value < $last{$series}) {
                    print $bad "$series: $last{$series} -> $value (scrape $scrapes)\n";
                }
                $last{$series} = $value;
            }
        }
        sleep 0.05;
    }
    open(my $st, '>', "$TMP/scrapes") or die;
    print $st ($scrapes // 0), "\n";
});

# ---- two agents, through nginx -----------------------------------------------------------------
my $worker_token = token_file($d->{tokens}{worker});
my %agents = map { $_ => spawn("$TMP/$_.log", 'build/hodei-worker', '--api', "http://127.0.0.1:$nginx_port",
                               '--token-file', $worker_token, '--id', $_, '--cpu-m', 2000,
                               '--memory-mb', 2048, '--poll-wait', 2, '--heartbeat-ms', 500) }
             qw(agent-a agent-b);
sub accepted { scalar(() = slurp("$TMP/accepted") =~ /\n/g) }
ok(wait_for(60, sub { accepted() >= 20 }), 'jobs are submitted and accepted');

# ---- the crashes -------------------------------------------------------------------------------
my (@alive, @down);
my $crashes_from = time;
for my $k (1 .. $KILLS) {
    my $t0 = time;
    sleep rand() < 0.2 ? rand(0.05) : rand(1.2);     # now and then right after the start
    push @alive, time - $t0;
    kill 'KILL', $d->{pid};
    wait_exit($d->{pid}, 30) // die "the daemon did not die";
    sleep rand(0.3);                                  # down for a moment
    $d->{pid} = spawn($d->{log}, @{ $d->{cmd} });
    wait_port($daemon_port, 60) or die "the daemon did not start again:\n" . slurp($d->{log});
    push @down, time - $t0 - $alive[-1];
}
my $crashes_took = time - $crashes_from;
pass("the daemon was killed with SIGKILL $KILLS times and started again each time");
sleep 1;
open(my $stop, '>', "$TMP/stop") or die;
close $stop;
wait_exit($_, 30) // die 'a helper did not stop' for $client, $scraper;

# ---- everything ends ---------------------------------------------------------------------------
my %accepted;           # id => [tenant, name]
for (split /\n/, slurp("$TMP/accepted")) {
    my ($id, $tenant, $name) = split / /;
    $accepted{$id} = [$tenant, $name];
}
my $api = { url => $base, token => $d->{token} };
sub all_jobs {
    my (@jobs, $after);
    for (;;) {
        my ($s, $page) = call($api, 'GET', '/jobs?limit=1000' . ($after ? "&after=$after" : ''));
        return () unless $s == 200;
        push @jobs, @{ $page->{jobs} };
        $after = $page->{next} // last;
    }
    return @jobs;
}
my @jobs;
my $drain_from = time;
ok(wait_for(180, sub {
    @jobs = all_jobs();
    @jobs && !grep { $_->{state} !~ /^(succeeded|failed|cancelled)$/ } @jobs }),
   sprintf('every job ends finished (%d jobs)', scalar @jobs))
    or diag(join "\n", map { "job $_->{id}: $_->{state}" } grep { $_->{state} !~ /^(succeeded|failed|cancelled)$/ } @jobs);
my $drain_took = time - $drain_from;
my %by_id = map { $_->{id} => $_ } @jobs;
is(scalar keys %by_id, scalar @jobs, 'no id is listed twice');
my @missing = grep { !$by_id{$_} } sort { $a <=> $b } keys %accepted;
my @other = grep { $by_id{$_} && ($by_id{$_}{tenant_id} ne $accepted{$_}[0]
                                  || $by_id{$_}{name} ne $accepted{$_}[1]) } keys %accepted;
is_deeply(\@missing, [], sprintf('every one of the %d jobs answered 201 exists', scalar keys %accepted));
is_deeply(\@other, [], '... with the tenant and name it was submitted with: no id given twice')
    or diag(join "\n", map { "$_: $accepted{$_}[0] $accepted{$_}[1] vs "
                             . "$by_id{$_}{tenant_id} $by_id{$_}{name}" } @other);
my %names;
$names{ $_->{name} }++ for @jobs;
my @twice = grep { $names{$_} > 1 } keys %names;
is_deeply(\@twice, [], 'no submission became two jobs');
my @unanswered = grep { !$accepted{ $_->{id} } } @jobs;

my $clashes = slurp("$runs/clashes");
is($clashes, '', 'no job ran on two workers at once') or diag($clashes);
# runs more than one: a retry after exit 3 (every 7th job), or a lost attempt run again
my %starts;
for (split /\n/, slurp("$runs/log")) {
    my ($what, $id) = split / /;
    $starts{$id}++ if $what eq 'start';
}
my @run_again = grep { $starts{$_} > 1 && ($by_id{$_}{name} =~ /(\d+)$/)[0] % 7 != 0 } keys %starts;

# ---- counters, through nginx -------------------------------------------------------------------
my %want;
for my $j (@jobs) {
    my $t = $j->{tenant_id};
    $want{qq(hodei_jobs_submitted_total{tenant_id="$t"})}++;
    $want{qq(hodei_jobs_completed_total{tenant_id="$t"})}++ if $j->{state} eq 'succeeded';
    $want{qq(hodei_jobs_failed_total{tenant_id="$t",error_type="$j->{error_type}"})}++
        if $j->{state} ne 'succeeded';
}
for (split /\n/, `sqlite3 $d->{state_dir}/hodei.db "SELECT j.tenant_id, count(*) FROM transitions t JOIN jobs j ON j.id = t.job_id WHERE t.to_state = 'assigned' GROUP BY j.tenant_id"`) {
    my ($t, $n) = split /\|/;
    $want{qq(hodei_jobs_scheduled_total{tenant_id="$t"})} = $n;
}
my @wrong;
ok(wait_for(30, sub {
    my $scrape = http_get("$base/metrics")->{content};
    @wrong = map { my $got = sample($scrape, $_) // 0; $got == $want{$_} ? () : "$_: $got, want $want{$_}" }
             sort keys %want;
    !@wrong }), sprintf('each tenant\'s counters in the last scrape equal the jobs\' (%d series)',
                        scalar keys %want))
    or diag(join "\n", @wrong);
is(slurp("$TMP/decreases"), '', sprintf('no counter or histogram series went down, no _created '
   . 'moved, in %d scrapes', slurp("$TMP/scrapes") + 0));
cmp_ok(slurp("$TMP/scrapes") + 0, '>', 50, 'the scraper saw the daemon up all along');

my @alive_sorted = sort { $a <=> $b } @alive;
my @down_sorted = sort { $a <=> $b } @down;
diag(sprintf("crash test: %.0f s of crashes, %.0f s until every job ended; down %.2f-%.2f s "
     . "(median %.2f s) for each restart", $crashes_took, $drain_took, $down_sorted[0],
     $down_sorted[-1], $down_sorted[$#down_sorted / 2]));
diag(sprintf("crash test: %d kills (alive %.2f-%.2f s, median %.2f s), %d jobs answered 201, %d "
     . "more committed but unanswered, %d run again after a lost attempt (at least once), "
     . "client statuses %s", $KILLS, $alive_sorted[0], $alive_sorted[-1],
     $alive_sorted[$#alive_sorted / 2], scalar keys %accepted, scalar @unanswered,
     scalar @run_again, slurp("$TMP/client-status") =~ s/\n//r));
stop($_, 'TERM') for values %agents;
is(stop($d->{pid}, 'TERM'), 0, 'the daemon stops');
done_testing();
