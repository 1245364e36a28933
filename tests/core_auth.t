#!/usr/bin/perl
# Who may do what (DESIGN §9), against a real hodei-scheduler with a tokens file:
#   - the matrix: every route × {no token, bad token, revoked token, tenant A, tenant B,
#     worker session of W1, of W2, worker registration token, admin}, each cell's status;
#     after every refusal the state (jobs, workers, the whole exposition) is unchanged but for
#     hodei_api_auth_failures_total, which grew by one with the cell's reason;
#   - tenant A never sees a byte of tenant B's jobs, commands or events (get, list, cancel,
#     output, the event stream), and B's events never fill A's stream;
#   - a token revoked in the file and SIGHUP'd stops working within one second, without a
#     restart; a tokens file others may read is refused (at start, and on reload, where the
#     previous tokens stay);
#   - --insecure-no-auth only on loopback, and never without saying so.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use HodeiTest;
use IO::Select;
use IO::Socket::INET;
use Test::More;
use Time::HiRes qw(sleep time);

my $port = ($ENV{HODEI_CORE_TEST_PORT} || 18100) + 40;
my $file = "$TMP/tokens";
my $tok = make_tokens($file, [admin => 'admin'], [reg => 'worker'], [A => 'tenant', 'acme'],
                      [B => 'tenant', 'beta'], [revoked => 'tenant', 'acme']);
my $d = start_daemon($port, '--tokens', $file, qw(--publish-interval-ms 20
                     --heartbeat-timeout-s 600 --worker-timeout-s 1200 --assignment-lease-s 600));
$d->{token} = $tok->{admin};

# The revoked token works until it is revoked (below, before the matrix).
my ($st) = call($d, 'GET', '/jobs', undef, token => $tok->{revoked});
is($st, 200, 'the token to revoke works before');

# ---- revocation: SIGHUP, no restart, within a second ------------------------------------------
my ($rid) = $tok->{revoked} =~ /^hodei_([0-9a-f]{12})_/;
my ($rc, undef, $err) = run('build/hodeictl', 'token', 'revoke', $rid, '--tokens', $file);
is($rc, 0, 'hodeictl token revoke') or diag($err);
my ($sent, $refused_after) = (time, undef);
kill 'HUP', $d->{pid};
while (time - $sent < 5) {
    my ($s) = call($d, 'GET', '/jobs', undef, token => $tok->{revoked});
    if ($s == 401) { $refused_after = time - $sent; last }
    sleep 0.01;
}
ok(defined $refused_after && $refused_after < 1.0,
   sprintf('a revoked token is refused %.0f ms after SIGHUP (< 1 s)', 1000 * ($refused_after // 9)));
ok(kill(0, $d->{pid}) && slurp($d->{log}) =~ /tokens file \S+ re-read: 4 tokens/,
   'without a restart: the same daemon re-read the file')
    or diag(slurp($d->{log}));
($st) = call($d, 'GET', '/jobs', undef, token => $tok->{A});
is($st, 200, 'the other tokens still work');

# A file others may read is not re-read: the tokens stay as they were.
chmod 0644, $file;
kill 'HUP', $d->{pid};
ok(wait_log(qr/SIGHUP: the tokens file was not re-read, the previous tokens stay: .*others may read/),
   'SIGHUP with a file others may read: refused, logged');
($st) = call($d, 'GET', '/jobs', undef, token => $tok->{A});
is($st, 200, 'and the previous tokens still work');
chmod 0600, $file;

sub wait_log {
    my ($re) = @_;
    my $deadline = time + 10;
    until (slurp($d->{log}) =~ $re) { return 0 if time > $deadline; sleep 0.02 }
    return 1;
}

# ---- the world ----------------------------------------------------------------------------------
# W1 is large, W2 small: a job of 500 millicores can only go to W1.  A job as large as all of
# W1 fits W1 only while it is idle, and it never is (a holder job stays on it): so such jobs,
# at the lowest priority, stay queued.
my %session;
for ([w1 => 1_000_000], [w2 => 100]) {
    my ($id, $cpu) = @$_;
    my ($s, $w) = call($d, 'POST', '/workers', { worker_id => $id, cpu_m => $cpu, memory_mb => $cpu },
                       token => $tok->{reg});
    is($s, 201, "worker $id registers with the registration token");
    like($w->{session_token} // '', qr/^hodeis_[0-9a-f]{12}_[A-Za-z0-9_-]{43}$/, "$id gets a session token");
    $session{$id} = $w->{session_token};
}
my (undef, $listed) = call($d, 'GET', '/workers');
ok(!grep({ exists $_->{session_token} } @{ $listed->{workers} }), 'session tokens are never listed');

my %who = (none => undef, bad => bad_token($tok->{A}), revoked => $tok->{revoked}, A => $tok->{A},
           B => $tok->{B}, W1 => $session{w1}, W2 => $session{w2}, reg => $tok->{reg},
           admin => $tok->{admin});
my @who = qw(none bad revoked A B W1 W2 reg admin);
my %reason = (none => 'missing', bad => 'bad_secret', revoked => 'unknown');

# A known id with another secret.
sub bad_token { my ($t) = @_; $t =~ s/^(hodei_[0-9a-f]{12}_).*/$1 . ('A' x 43)/er }

my $B_SECRET = 'echo beta-only-7c1f';
my $A_CMD = 'echo acme-work';

# A job of acme's placed on W1 (or as %spec says).
sub submit_as {
    my ($tenant, %spec) = @_;
    my ($s, $j) = call($d, 'POST', '/jobs', { tenant_id => $tenant, command => $A_CMD, cpu_m => 500,
                                              %spec });
    die "submit for $tenant: $s " . to_json($j) unless $s == 201;
    return $j->{id};
}

# A job that stays queued.
sub queued_as { submit_as(@_, cpu_m => 1_000_000, priority => -100) }

# A job of acme's on W1, running (admin starts it as W1).
sub running_on_w1 {
    my $id = submit_as('acme');
    my ($s) = call($d, 'POST', "/jobs/$id/start", { worker_id => 'w1' });
    die "start $id: $s" unless $s == 200;
    return $id;
}

# A finished job of acme's with its output reported.
sub finished_with_output {
    my $id = running_on_w1();
    my ($s) = call($d, 'POST', "/jobs/$id/succeed", { worker_id => 'w1', exit_code => 0,
                                                      output => 'YWNtZS1vdXRwdXQK', output_bytes => 12 });
    die "succeed $id: $s" unless $s == 200;
    return $id;
}

submit_as('acme');                               # the holder
queued_as('acme');                               # the blocked head of the lowest priority
my $b_job = queued_as('beta', command => $B_SECRET);
my $a_job = queued_as('acme');

# ---- state, and the refusal check -------------------------------------------------------------
sub state_of {
    my (undef, $jobs) = call($d, 'GET', '/jobs?limit=1000');
    my (undef, $workers) = call($d, 'GET', '/workers');
    settle();
    my $m = metrics($d);
    my %auth = map { $_ => sample($m, qq(hodei_api_auth_failures_total{reason="$_"})) }
               qw(missing malformed unknown bad_secret forbidden);
    $m =~ s/^hodei_api_auth_failures_total\{.*\n//mg;
    return { jobs => to_json($jobs), workers => to_json($workers), metrics => $m, auth => \%auth };
}

# GET /events for a token: the status and headers of the answer, then hang up.
sub stream_status {
    my ($token) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port) or die "connect: $!";
    print $s "GET /api/v1/events HTTP/1.1\r\nHost: x\r\n"
           . (defined $token ? "Authorization: Bearer $token\r\n" : '') . "\r\n";
    my $head = '';
    my $sel = IO::Select->new($s);
    while ($head !~ /\r\n\r\n/ && $sel->can_read(5)) { sysread($s, $head, 4096, length $head) or last }
    close $s;
    my %headers;
    $headers{ lc $1 } = $2 while $head =~ /^([\w-]+): *(.*?)\r$/mg;
    return ($head =~ m{^HTTP/1\.1 (\d{3})} ? $1 : 0, { headers => \%headers });
}

# route: [name, method, path (or sub returning it), body (or sub), {who => status}] with the
# statuses of the token-less and bad columns implied (401), and any column left out 403.
sub job_path { my ($suffix, $make) = @_; sub { '/jobs/' . $make->() . $suffix } }
my $registered = 0;
my @routes = (
    ['GET /health', GET => '/health', undef,
     { map { $_ => 200 } @who }],
    ['POST /jobs for acme', POST => '/jobs', { tenant_id => 'acme', command => $A_CMD },
     { A => 201, B => 403, admin => 201 }],
    ['POST /jobs without tenant_id', POST => '/jobs', { command => $A_CMD },
     { A => 201, B => 201, admin => 400 }],
    ['GET /jobs', GET => '/jobs', undef, { A => 200, B => 200, admin => 200 }],
    ['GET /jobs?tenant_id=beta', GET => '/jobs?tenant_id=beta', undef,
     { A => 403, B => 200, admin => 200 }],
    ["GET /jobs/{acme's}", GET => "/jobs/$a_job", undef, { A => 200, B => 404, admin => 200 }],
    ["POST /jobs/{acme's}/cancel", POST => job_path('/cancel', sub { queued_as('acme') }),
     undef, { A => 200, B => 404, admin => 200 }],
    ["GET /jobs/{acme's}/output", GET => job_path('/output', \&finished_with_output), undef,
     { A => 200, B => 404, admin => 200 }],
    ["POST /jobs/{on w1}/start", POST => job_path('/start', sub { submit_as('acme') }),
     { worker_id => 'w1' }, { W1 => 200, W2 => 403, admin => 200 }],
    ["POST /jobs/{on w1}/start as itself", POST => job_path('/start', sub { submit_as('acme') }),
     {}, { W1 => 200, W2 => 409, admin => 400 }],
    ["POST /jobs/{running on w1}/succeed", POST => job_path('/succeed', \&running_on_w1),
     { worker_id => 'w1', exit_code => 0 }, { W1 => 200, W2 => 403, admin => 200 }],
    ["POST /jobs/{running on w1}/fail", POST => job_path('/fail', \&running_on_w1),
     { worker_id => 'w1', error_type => 'other' }, { W1 => 200, W2 => 403, admin => 200 }],
    ['POST /workers', POST => '/workers', sub { { worker_id => 'wx-' . ++$registered, cpu_m => 1, memory_mb => 1 } },
     { reg => 201, admin => 201 }],
    ['GET /workers', GET => '/workers', undef, { admin => 200 }],
    ['POST /workers/w1/heartbeat', POST => '/workers/w1/heartbeat',
     { cpu_usage_percent => 1, memory_usage_mb => 1 }, { W1 => 200, W2 => 403, admin => 200 }],
    ['GET /workers/w1/assignments', GET => '/workers/w1/assignments?wait=0', undef,
     { W1 => 200, W2 => 403, admin => 200 }],
    ['GET /events', STREAM => '/events', undef, { A => 200, B => 200, admin => 200 }],
    ['GET /nothing', GET => '/nothing', undef, { map { $_ => 404 } qw(A B W1 W2 reg admin) }],
);

my (@table, @bad_cells);
for my $r (@routes) {
    my ($name, $method, $path, $body, $allow) = @$r;
    my @row;
    for my $w (@who) {
        my $want = $allow->{$w} // ($reason{$w} ? 401 : 403);
        my $p = ref $path ? $path->() : $path;
        my $b = ref $body eq 'CODE' ? $body->() : $body;
        my $refusal = $want >= 400;
        my $before = $refusal ? state_of() : undef;
        my ($got, $reply, $resp);
        if ($method eq 'STREAM') {
            ($got, $resp) = stream_status($who{$w});
        } else {
            ($got, $reply) = call($d, $method, $p, $b, token => $who{$w}, response => \$resp);
        }
        push @row, $got;
        my $cell = "$name × $w";
        my @why;
        push @why, "status $got, want $want" if $got != $want;
        if ($got == 401 && ($resp->{headers}{'www-authenticate'} // '') !~ /^Bearer\b/) {
            push @why, 'no WWW-Authenticate: Bearer';
        }
        if ($method ne 'STREAM' && $got >= 400 && !(ref $reply eq 'HASH' && $reply->{error})) {
            push @why, 'no JSON error body';
        }
        if ($refusal) {
            my $after = state_of();
            push @why, "$_ changed" for grep { $after->{$_} ne $before->{$_} } qw(jobs workers metrics);
            my $reason = $want == 401 ? $reason{$w} : $want == 403 ? 'forbidden' : '';
            for my $k (sort keys %{ $after->{auth} }) {
                my $delta = ($after->{auth}{$k} // 0) - ($before->{auth}{$k} // 0);
                push @why, "auth_failures{reason=$k} moved by $delta" if $delta != ($k eq $reason ? 1 : 0);
            }
        }
        push @bad_cells, "$cell: " . join('; ', @why) if @why;
        # a stream that was let in leaves the bus when its client hangs up: wait for it
        if ($method eq 'STREAM' && $got == 200) {
            my $deadline = time + 10;
            settle() until sample(metrics($d), 'hodei_event_bus_subscribers') == 1 || time > $deadline;
        }
    }
    push @table, sprintf('%-36s %s', $name, join(' ', map { sprintf '%-5s', $_ } @row));
}
note(sprintf('%-36s %s', 'route', join(' ', map { sprintf '%-5s', $_ } @who)));
note($_) for @table;
is_deeply(\@bad_cells, [], 'every cell of the matrix: its status, and refusals change nothing but '
          . 'their hodei_api_auth_failures_total reason')
    or diag(join("\n", @bad_cells));

# ---- tenant A never sees a byte of tenant B's ---------------------------------------------------
{
    my (@leaks, $raw);
    my $r;
    call($d, 'GET', '/jobs?limit=1000', undef, token => $tok->{A}, response => \$r);
    push @leaks, 'list' if $r->{content} =~ /beta|\Q$B_SECRET\E/;
    my (undef, $mine) = call($d, 'GET', '/jobs?limit=1000', undef, token => $tok->{A});
    push @leaks, 'list holds a job not acme\'s' if grep { $_->{tenant_id} ne 'acme' } @{ $mine->{jobs} };
    for my $req (['GET', "/jobs/$b_job"], ['POST', "/jobs/$b_job/cancel"], ['GET', "/jobs/$b_job/output"]) {
        my ($s) = call($d, @$req, undef, token => $tok->{A}, response => \$r);
        push @leaks, "@$req: $s" unless $s == 404 && $r->{content} !~ /beta|\Q$B_SECRET\E/;
    }
    my (undef, $bj) = call($d, 'GET', "/jobs/$b_job");
    push @leaks, "B's job was touched: $bj->{state}" unless $bj->{state} eq 'queued';
    is_deeply(\@leaks, [], "get, list, cancel and output of B's job: 404 or nothing of B's for A");
}

# The event stream: A's shows A's job events only, B's events fill nothing of A's.
{
    my $a_out = "$TMP/a-events";
    my $curl = spawn({ out => $a_out, err => "$TMP/a-events.err" }, 'curl', '-sN', '-H',
                     "Authorization: Bearer $tok->{A}", "$d->{url}/events");
    my $deadline = time + 10;
    sleep 0.02 until -s $a_out || time > $deadline;
    # 50 events of B's (more than A's queue of 16 would hold), then one of A's
    for (1 .. 25) {
        my $id = queued_as('beta', command => $B_SECRET);
        call($d, 'POST', "/jobs/$id/cancel");
    }
    my $mine = queued_as('acme');
    $deadline = time + 10;
    sleep 0.02 until slurp($a_out) =~ /"id":"$mine"/ || time > $deadline;
    stop($curl, 'TERM');
    my $stream = slurp($a_out);
    my @events = $stream =~ /^event: (\w+)$/mg;
    ok(@events == 1 && $events[0] eq 'job_submitted' && $stream =~ /"id":"$mine"/,
       "A's stream carries A's event, and only that") or diag($stream);
    ok($stream !~ /beta|\Q$B_SECRET\E/, "not a byte of B's in A's stream");
    settle();
    my $m = metrics($d);
    my $dropped = 0;
    $dropped += $_ for $m =~ /^hodei_events_dropped_total\{[^}]*\} (\d+)$/mg;
    is($dropped, 0, "B's events did not fill A's stream: nothing dropped");
}

# ---- start-up refusals ----------------------------------------------------------------------
sub refuses_to_start {
    my ($name, $want, @flags) = @_;
    my ($status, $out, $errs) = run('build/hodei-scheduler', '--segment', "$TMP/seg-refused", @flags);
    ok($status != 0 && $errs =~ $want && !-e "$TMP/seg-refused", "$name: refuses to start")
        or diag("status $status: $errs");
}
refuses_to_start('no tokens file', qr/no tokens file: give --tokens FILE/, '--listen', "127.0.0.1:" . ($port + 1));
chmod 0604, $file;
refuses_to_start('a tokens file others may read', qr/others may read or write it.*chmod o-rwx/,
                 '--tokens', $file, '--listen', "127.0.0.1:" . ($port + 1));
chmod 0600, $file;
open(my $fh, '>>', $file) or die;
print $fh "123 admin - nothex\n";
close $fh;
refuses_to_start('a malformed tokens file', qr/tokens:\d+: the id must be 12 lowercase hex digits/,
                 '--tokens', $file, '--listen', "127.0.0.1:" . ($port + 1));
refuses_to_start('--insecure-no-auth off loopback', qr/--insecure-no-auth serves loopback only/,
                 '--insecure-no-auth', '--listen', '0.0.0.0:' . ($port + 1));
refuses_to_start('--insecure-no-auth with a tokens file', qr/exclude each other/,
                 '--insecure-no-auth', '--tokens', $file, '--listen', "127.0.0.1:" . ($port + 1));
{
    my $open = start_daemon($port + 2, '--insecure-no-auth');
    my ($s) = call($open, 'GET', '/workers');
    is($s, 200, '--insecure-no-auth on loopback: every request is an admin\'s');
    like(slurp($open->{log}), qr/--insecure-no-auth: every request on 127\.0\.0\.1:\d+ is an admin's/,
         'and the daemon says so');
    is(stop($open->{pid}), 0, 'that daemon stops cleanly');
}

is(stop($d->{pid}), 0, 'SIGTERM: exit 0');
done_testing();
