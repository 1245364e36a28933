#!/usr/bin/perl
# Jobs on workers (DESIGN §9), with a real hodei-scheduler and a real hodei-worker:
#   - a job's environment holds exactly what the README lists, nothing of the agent's;
#   - a job that starts `sleep 1000 &` and exits leaves no process behind;
#   - a job printing 10 MB yields exactly the last 16 KiB to its owner (GET .../output and
#     hodeictl output), the whole size in Hodei-Output-Bytes, 404 to another tenant, and none
#     of it in the agent's log;
#   - hodeictl prints tenant-controlled strings with control characters escaped;
#   - with --run-as (when the suite runs as root), jobs run as that user, who cannot read the
#     agent's token.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use HodeiTest;
use Test::More;
use Time::HiRes qw(sleep time);

my $port = ($ENV{HODEI_CLI_TEST_PORT} || 18250) + 10;
my $TAIL = 16 * 1024;
my $d = start_daemon($port, qw(--heartbeat-timeout-s 600 --worker-timeout-s 1200));
my $api = "http://127.0.0.1:$port";
my $worker_token = token_file($d->{tokens}{worker});

sub show { ref $_[0] ? to_json($_[0]) : $_[0] // 'undef' }

# An agent whose own environment carries things a job must not see.
sub start_agent {
    my ($id, @extra) = @_;
    local $ENV{AGENT_SECRET} = 'agent-only-value';
    local $ENV{HODEI_TOKEN} = $d->{tokens}{worker};
    local $ENV{LD_PRELOAD} = '';
    my $pid = spawn("$TMP/$id.log", 'build/hodei-worker', '--api', $api, '--token-file', $worker_token,
                    '--id', $id, '--cpu-m', 2000, '--memory-mb', 2048, '--poll-wait', 2, @extra);
    wait_for(20, sub { my (undef, $w) = call($d, 'GET', '/workers');
                       ref $w && grep { $_->{id} eq $id } @{ $w->{workers} } })
        or die "agent $id did not register:\n" . slurp("$TMP/$id.log");
    return $pid;
}

# Submits as tenant acme, waits for the end; the finished job.
sub run_job {
    my ($command, %spec) = @_;
    my ($s, $j) = call($d, 'POST', '/jobs', { command => $command, %spec }, token => $d->{tokens}{acme});
    die "submit: $s " . show($j) unless $s == 201;
    my $done;
    wait_for(60, sub { (undef, $done) = call($d, 'GET', "/jobs/$j->{id}");
                       $done->{state} =~ /^(succeeded|failed|cancelled)$/ });
    return $done;
}

sub output_of {
    my ($id, $token) = @_;
    my $r;
    my ($s) = call($d, 'GET', "/jobs/$id/output", undef, token => $token // $d->{tokens}{acme},
                   response => \$r);
    return ($s, $r->{content}, $r->{headers}{'hodei-output-bytes'});
}

my $agent = start_agent('job-w1');

# ---- the environment ---------------------------------------------------------------------------
{
    my $job = run_job('env');
    is($job->{state}, 'succeeded', 'env ran') or diag(show($job));
    my ($s, $out) = output_of($job->{id});
    my %env = map { /^([^=]+)=(.*)$/ ? ($1 => $2) : () } split /\n/, $out;
    is_deeply([sort keys %env], [sort qw(PATH HOME USER LOGNAME SHELL LANG HODEI_JOB_ID
                                         HODEI_TENANT_ID HODEI_WORKER_ID PWD)],
              'the job sees exactly the documented variables (PWD is the shell\'s own)')
        or diag($out);
    is_deeply({ map { $_ => $env{$_} } qw(PATH SHELL LANG HODEI_JOB_ID HODEI_TENANT_ID HODEI_WORKER_ID) },
              { PATH => '/usr/local/bin:/usr/bin:/bin', SHELL => '/bin/sh', LANG => 'C.UTF-8',
                HODEI_JOB_ID => $job->{id}, HODEI_TENANT_ID => 'acme', HODEI_WORKER_ID => 'job-w1' },
              'with the documented values');
    ok($out !~ /agent-only-value|hodei_[0-9a-f]{12}_/, 'nothing of the agent\'s environment, no token');
}

# ---- no process left behind -------------------------------------------------------------------
{
    my $pidfile = "$TMP/background.pid";
    my $job = run_job("sleep 1000 & echo \$! > $pidfile; exit 0");
    is($job->{state}, 'succeeded', 'a job that starts sleep 1000 & and exits succeeds');
    my ($pid) = slurp($pidfile) =~ /^(\d+)$/m;
    ok($pid && wait_for(10, sub { !-e "/proc/$pid" || slurp("/proc/$pid/stat") =~ /^\d+ \S+ Z/ }),
       "its background child (pid " . ($pid // '?') . ") is gone: the job's process group was killed");
}

# ---- 10 MB of output ----------------------------------------------------------------------------
{
    my $lines = 1_500_000;
    my $job = run_job("seq 1 $lines");
    my $all = join '', map { "$_\n" } 1 .. $lines;
    is($job->{state}, 'succeeded', 'a job prints ' . length($all) . ' bytes');
    is($job->{output_bytes}, length $all, 'the job says how much it wrote');
    my ($s, $out, $total) = output_of($job->{id});
    is($s, 200, 'its owner reads the output');
    ok($out eq substr($all, -$TAIL), "exactly the last $TAIL bytes") or diag(length($out) . ' bytes');
    is($total, length $all, 'Hodei-Output-Bytes: the whole size');
    my ($s_other, $body) = output_of($job->{id}, $d->{tokens}{beta});
    is($s_other, 404, 'another tenant: 404');
    ok(ref $body eq '' && $body !~ /\d{7}\n/, 'and not a byte of it');
    my ($rc, $stdout, $stderr) = run('build/hodeictl', '--api', $api, '--token-file',
                                     token_file($d->{tokens}{acme}), 'output', $job->{id});
    ok($rc == 0 && $stdout eq substr($all, -$TAIL) && $stderr =~ /the last $TAIL of ${\length $all} bytes/,
       'hodeictl output prints it, and says it is the tail')
        or diag("rc=$rc $stderr");
    ok(slurp("$TMP/job-w1.log") !~ /^1499999$/m, 'the agent\'s log holds none of it');
}

# ---- escaped printing ---------------------------------------------------------------------------
{
    local $ENV{HODEI_TOKEN} = $d->{tokens}{acme};
    my $job = run_job(qq{printf 'red\\033[31m\\ttab\\n'}, name => "n\x1b]0;pwned\x07");
    my ($rc, $out) = run('build/hodeictl', '--api', $api, 'output', $job->{id});
    is($out, "red\\x1b[31m\ttab\n", 'hodeictl output: escape sequences escaped, lines and tabs kept');
    ($rc, $out) = run('build/hodeictl', '--api', $api, 'get', $job->{id});
    ok($out =~ /^name\s+n\\x1b\]0;pwned\\x07$/m && $out !~ /\x1b|\x07/, 'hodeictl get: the name escaped')
        or diag($out);
    ($rc, $out) = run('build/hodeictl', '--api', $api, 'list');
    ok($rc == 0 && $out !~ /[\x00-\x08\x0b-\x1f\x7f]/, 'hodeictl list: no control character reaches the terminal');
    ($rc, $out) = run('build/hodeictl', '--api', $api, 'output', $job->{id}, '--raw');
    is($out, "red\x1b[31m\ttab\n", 'hodeictl output --raw: the bytes as they are');
}
is(stop($agent, 'TERM'), 0, 'the agent stops');

# ---- --run-as ----------------------------------------------------------------------------------
SKIP: {
    skip 'run-as needs the suite to run as root', 3 if $> != 0;
    my ($nobody_uid, $nobody_home) = (getpwnam('nobody'))[2, 7];
    skip 'no user nobody', 3 unless defined $nobody_uid;
    my $as = start_agent('job-w2', '--run-as', 'nobody');
    my $job = run_job("id -u; echo \"\$HOME \$USER\"; cat $worker_token || echo unreadable");
    my (undef, $out) = output_of($job->{id});
    my ($uid, $env, $last) = split /\n/, $out // '';
    is($uid, $nobody_uid, 'the job runs as nobody');
    is($env, "$nobody_home nobody", 'with nobody\'s HOME and USER');
    ok($out =~ /unreadable\n\z/ && $out !~ /hodei_/, 'and cannot read the agent\'s token') or diag($out);
    is(stop($as, 'TERM'), 0, 'the run-as agent stops');
}

is(stop($d->{pid}, 'TERM'), 0, 'the daemon stops');
done_testing();
