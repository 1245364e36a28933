#!/usr/bin/perl
# hodei-worker and hodeictl: argument handling, usage, and behaviour without a server.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use HodeiTest;
use Test::More tests => 35;
use Time::HiRes qw(sleep);

my $port_base = $ENV{HODEI_CLI_TEST_PORT} || 18250;
my $worker = 'build/hodei-worker';
my $ctl = 'build/hodeictl';
# Nothing listens here during the test (our range, not the port the server test uses).
my $dead_url = 'http://127.0.0.1:' . ($port_base + 1);

my @bad_worker_args = (
    [ 'no arguments' ],
    [ 'no --api', '--id', 'w1' ],
    [ 'invalid id', '--api', $dead_url, '--id', 'bad id' ],
    [ 'id too long', '--api', $dead_url, '--id', 'x' x 65 ],
    [ 'zero cpu', '--api', $dead_url, '--cpu-m', '0' ],
    [ 'memory not a number', '--api', $dead_url, '--memory-mb', '12x' ],
    [ 'poll wait above 30', '--api', $dead_url, '--poll-wait', '31' ],
    [ 'unknown option', '--api', $dead_url, '--bogus' ],
    [ 'stray operand', '--api', $dead_url, 'extra' ],
);
for my $case (@bad_worker_args) {
    my ($name, @args) = @$case;
    my ($rc, $out, $err) = run($worker, @args);
    ok($rc == 2 && $err =~ /^usage: hodei-worker --api URL/m && $out eq '',
       "hodei-worker rejects $name with usage and exit 2")
        or diag("rc=$rc\n$err");
}

# Without a scheduler the agent keeps trying to register; SIGTERM ends it cleanly.
{
    my $pid = spawn({ out => "$TMP/w.out", err => "$TMP/w.err" }, $worker, '--api', $dead_url,
                    '--id', 'w1', '--cpu-m', '1000', '--memory-mb', '512');
    sleep 1.5;
    kill 'TERM', $pid;
    my $rc = wait_exit($pid, 5);
    my $err = slurp("$TMP/w.err");
    ok(defined $rc && $rc == 0, 'hodei-worker exits 0 on SIGTERM while the scheduler is unreachable')
        or diag('rc=' . ($rc // 'still running') . "\n$err");
    my $tries = () = $err =~ /registration failed: cannot reach \Q$dead_url\E/g;
    ok($tries >= 2, 'hodei-worker retries registration and logs why')
        or diag($err);
}

my @bad_ctl_args = (
    [ 'no command' ],
    [ 'unknown command', 'frobnicate' ],
    [ 'unknown global option', '--bogus', 'workers' ],
    [ 'token without a subcommand', 'token' ],
    [ 'token create without --tokens', 'token', 'create', '--role', 'admin' ],
    [ 'token create with an unknown role', 'token', 'create', '--role', 'root', '--tokens', "$TMP/t" ],
    [ 'a tenant token without its tenant', 'token', 'create', '--role', 'tenant', '--tokens', "$TMP/t" ],
    [ 'a worker token with a tenant', 'token', 'create', '--role', 'worker', '--tenant', 'a',
      '--tokens', "$TMP/t" ],
    [ 'token revoke without an id', 'token', 'revoke', '--tokens', "$TMP/t" ],
    [ 'output without an id', 'output' ],
    [ 'submit without command', 'submit', '--tenant', 'acme' ],
    [ 'submit with non-integer cpu', 'submit', '--tenant', 'acme', '--cpu-m', 'lots', '--', 'true' ],
    [ 'get without id', 'get' ],
    [ 'cancel with two ids', 'cancel', '1', '2' ],
    [ 'list with zero limit', 'list', '--limit', '0' ],
    [ 'workers with an operand', 'workers', 'x' ],
    [ 'events with a bad count', 'events', '--count', 'many' ],
);
for my $case (@bad_ctl_args) {
    my ($name, @args) = @$case;
    my ($rc, $out, $err) = run($ctl, '--api', $dead_url, @args);
    ok($rc == 2 && $err =~ /^usage: hodeictl /m && $out eq '',
       "hodeictl rejects $name with usage and exit 2")
        or diag("rc=$rc\n$err");
}

ok(!-e "$TMP/t", 'refused token commands create no tokens file');

# The token a client sends: --token-file must be private; HODEI_TOKEN must look like a token.
{
    open(my $fh, '>', "$TMP/open-token") or die;
    print $fh "hodei_000000000000_" . ('x' x 43) . "\n";
    close $fh;
    chmod 0644, "$TMP/open-token";
    my ($rc, $out, $err) = run($ctl, '--api', $dead_url, '--token-file', "$TMP/open-token", 'workers');
    ok($rc == 1 && $err =~ /others may read it.*chmod o-rwx/, 'hodeictl refuses a token file others may read')
        or diag("rc=$rc\n$err");
    ($rc, $out, $err) = run($worker, '--api', $dead_url, '--token-file', "$TMP/open-token");
    ok($rc == 2 && $err =~ /others may read it/, 'so does hodei-worker')
        or diag("rc=$rc\n$err");
}

{
    my ($rc, $out, $err) = run($ctl, '--help');
    ok($rc == 0 && $out =~ /^usage: hodeictl .*\n.*submit \[--tenant T\]/s, 'hodeictl --help prints usage on stdout');
}
{
    my ($rc, $out, $err) = run($ctl, '--api', $dead_url, 'workers');
    ok($rc == 1 && $err =~ /^hodeictl: cannot reach \Q$dead_url\E\/api\/v1: .*connect/i && $out eq '',
       'hodeictl reports a connection failure with exit 1')
        or diag("rc=$rc\n$err");
}
{
    local $ENV{HODEI_API} = $dead_url;
    my ($rc, $out, $err) = run($ctl, '--json', 'get', '7');
    ok($rc == 1 && $err =~ /cannot reach \Q$dead_url\E/, 'hodeictl takes the server from HODEI_API')
        or diag("rc=$rc\n$err");
}
{
    my ($rc, $out, $err) = run($ctl, '--api', $dead_url, 'events', '--count', '1');
    ok($rc == 1 && $err =~ /cannot reach/, 'hodeictl events reports a connection failure')
        or diag("rc=$rc\n$err");
}
