#!/usr/bin/perl
# No client can take the API down.  A real hodei-scheduler with its default limits and two real
# agents; one client address opens 1,000 event streams that never read and 4,000 idle
# connections, then the trusted proxy's address (127.0.0.1, which the per-address limit leaves
# alone: nginx limits its clients itself) does the same.  Throughout, from other addresses,
# GET /health and a tenant's POST /jobs answer in < 100 ms (the median of 40 fresh
# connections each; none takes 1 s, which a wait in the accept queue or for a thread would),
# and the agents' workers stay healthy.  The same probes before the flood give the baseline.
# The connection limits themselves: the per-address cap, the stream cap (429) and the idle
# timeout, on a second daemon with small limits.
use strict;
use warnings;

# thousands of sockets: the soft descriptor limit as high as the hard one allows
BEGIN {
    if (!$ENV{HODEI_FLOOD_NOFILE} && !$^C) {   # not under perl -c
        $ENV{HODEI_FLOOD_NOFILE} = 1;
        exec('/bin/sh', '-c', 'ulimit -n "$(ulimit -Hn)" 2>/dev/null; exec "$@"', 'sh', $^X, $0, @ARGV);
    }
}

use FindBin;
use lib "$FindBin::Bin/lib";
use HodeiTest;
use HTTP::Tiny;
use IO::Select;
use IO::Socket::INET;
use Socket qw(SOL_SOCKET SO_RCVBUF);
use Test::More;
use Time::HiRes qw(sleep time);

my $port = ($ENV{HODEI_CORE_TEST_PORT} || 18100) + 60;
my ($IDLE, $STREAMS, $PROBES) = (4000, 1000, 40);
my $nofile = `sh -c 'ulimit -n'` + 0;
plan skip_all => "the descriptor limit ($nofile) cannot hold the flood" if $nofile < 2 * ($IDLE + $STREAMS) + 200;

my $d = start_daemon($port, qw(--publish-interval-ms 50));
my @agents = map {
    spawn("$TMP/agent-$_.log", 'build/hodei-worker', '--api', "http://127.0.0.1:$port",
          '--token-file', token_file($d->{tokens}{worker}), '--id', "agent-$_", '--cpu-m', 4000,
          '--memory-mb', 4096, '--heartbeat-ms', 200, '--poll-wait', 5)
} 1 .. 2;

ok(wait_for(20, sub { my (undef, $w) = call($d, 'GET', '/workers');
                      ref $w && 2 == grep { $_->{state} eq 'healthy' } @{ $w->{workers} } }),
   'two agents registered and healthy');

# ---- probes: fresh connections from addresses of their own -----------------------------------
sub percentile {
    my ($p, @v) = @_;
    @v = sort { $a <=> $b } @v;
    return $v[int($p * $#v + 0.5)];
}

# Seconds for each of $PROBES requests, each on a new connection from $from.
sub probe {
    my ($from, $method, $path, $body, $token) = @_;
    my $http = HTTP::Tiny->new(local_address => $from, keep_alive => 0, timeout => 10);
    my (@took, @bad);
    for (1 .. $PROBES) {
        my %h = $token ? (Authorization => "Bearer $token") : ();
        $h{'Content-Type'} = 'application/json' if $body;
        my $t = time;
        my $r = $http->request($method, "http://127.0.0.1:$port/api/v1$path",
                               { headers => \%h, $body ? (content => $body) : () });
        push @took, time - $t;
        push @bad, "$r->{status} $r->{content}" unless $r->{success};
    }
    return (\@took, \@bad);
}

sub ms { sprintf '%.1f', 1000 * $_[0] }

sub probes {
    my ($name) = @_;
    my %r;
    ($r{health}, my $bad_h) = probe('127.0.0.3', 'GET', '/health');
    ($r{submit}, my $bad_s) = probe('127.0.0.4', 'POST', '/jobs', '{"command":"true"}',
                                    $d->{tokens}{acme});
    $r{bad} = [@$bad_h, @$bad_s];
    for my $k (qw(health submit)) {
        note(sprintf('%s: %-6s p50 %s ms, p90 %s ms, max %s ms over %d new connections', $name, $k,
                     ms(percentile(0.5, @{ $r{$k} })), ms(percentile(0.9, @{ $r{$k} })),
                     ms(percentile(1, @{ $r{$k} })), scalar @{ $r{$k} }));
    }
    return \%r;
}

my $base = probes('before the flood');
is_deeply($base->{bad}, [], 'baseline probes all answered');

# ---- the flood -------------------------------------------------------------------------------
# Opens $n connections from $from; with a request for an event stream ($token) that never
# reads (a receive buffer as small as the kernel allows) or idle (no byte sent).
sub open_many {
    my ($from, $n, $token) = @_;
    my @s;
    for (1 .. $n) {
        my $s = IO::Socket::INET->new(LocalAddr => $from, PeerAddr => '127.0.0.1', PeerPort => $port,
                                      Proto => 'tcp', Blocking => 1)
            or die "connect from $from: $! (after " . scalar(@s) . ')';
        if ($token) {
            setsockopt($s, SOL_SOCKET, SO_RCVBUF, 1024);
            syswrite($s, "GET /api/v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer $token\r\n\r\n");
        }
        push @s, $s;
    }
    return @s;
}

# How many of the sockets the server still holds open: a refused one reads end-of-file (or
# a reset) at once; a held one has nothing to read, or the head of an answer.
sub held {
    my (@s) = @_;
    my ($open, %status) = (0);
    for my $s (@s) {
        my $sel = IO::Select->new($s);
        my $buf = '';
        if ($sel->can_read(0)) {
            my $n = sysread($s, $buf, 512);
            next unless $n;                             # closed by the server
        }
        $status{ $buf =~ m{^HTTP/1\.1 (\d+)} ? $1 : 'none' }++;
        $open++;
    }
    return ($open, \%status);
}

sub server_settled {   # the daemon has taken or refused every connection of the flood
    my ($n) = @_;
    my $seen = 0;
    return wait_for(30, sub {
        my $now = 0 + (`ls /proc/$d->{pid}/fd 2>/dev/null | wc -l` // 0);
        my $still = $now != $seen;
        $seen = $now;
        sleep 0.5;
        !$still;
    });
}

my $t0 = time;
my @one = (open_many('127.0.0.2', $STREAMS, $d->{tokens}{beta}), open_many('127.0.0.2', $IDLE));
server_settled();
my ($one_held, $one_status) = held(@one);
my $one_time = time - $t0;
my @proxy = (open_many('127.0.0.1', $STREAMS, $d->{tokens}{beta}), open_many('127.0.0.1', $IDLE));
server_settled();
my ($proxy_held, $proxy_status) = held(@proxy);
my $rss = rss_kb($d->{pid});
note(sprintf('127.0.0.2 opened %d streams and %d idle connections in %.1f s: the daemon holds %d '
             . '(answers %s)', $STREAMS, $IDLE, $one_time, $one_held, to_json($one_status)));
note(sprintf('127.0.0.1 (trusted) opened as many: the daemon holds %d (answers %s); RSS %d kB',
             $proxy_held, to_json($proxy_status), $rss));
ok($one_held >= 64 && $one_held <= 64 + 16,
   "one client address holds its limit of 64 connections (+ at most the pool's races): $one_held");
ok($proxy_held > $IDLE, "the trusted proxy's address is not limited per address: $proxy_held held");
my $streams_before = $one_status->{200} // 0;
is($proxy_status->{429}, $STREAMS - (256 - $streams_before),
   "past 256 open event streams ($streams_before of them from 127.0.0.2): 429");

my $under = probes('under the flood');
is_deeply($under->{bad}, [], 'every probe under the flood answered');
for my $k (qw(health submit)) {
    my ($p50, $max) = (percentile(0.5, @{ $under->{$k} }), percentile(1, @{ $under->{$k} }));
    ok($p50 < 0.100, sprintf('%s from another address under the flood: %s ms (p50 of %d new '
       . 'connections; baseline %s ms) < 100 ms', $k, ms($p50), $PROBES,
       ms(percentile(0.5, @{ $base->{$k} }))));
    ok($max < 1.0, sprintf('%s: no probe waited (max %s ms < 1 s)', $k, ms($max)));
}

settle(0.3);
my $m = metrics($d);
is(sample($m, 'hodei_workers_healthy'), 2, 'the agents\' workers stayed healthy');
is(sample($m, 'hodei_events_published_total{event_type="worker_unhealthy"}'), 0,
   'not one worker_unhealthy event');
ok(wait_for(30, sub { my (undef, $q) = call($d, 'GET', '/jobs?state=succeeded&limit=1000');
                      ref $q && @{ $q->{jobs} } == 2 * $PROBES }),
   'the probes\' jobs ran on the agents');

close $_ for @one, @proxy;
ok(wait_for(20, sub { sample(metrics($d), 'hodei_event_bus_subscribers') == 1 }),
   'the flood\'s streams left the bus once their clients closed');

stop($_, 'TERM') for @agents;
is(stop($d->{pid}, 'TERM'), 0, 'the daemon stops cleanly after the flood');

# ---- the limits themselves --------------------------------------------------------------------
# (idle connections are left alone here: the idle timeout has a daemon of its own below, so
# that no check races it however slowly this runs)
my $l = start_daemon($port + 1, qw(--max-connections-per-ip 4 --max-event-streams 2
                                   --idle-timeout-s 600 --trusted-proxies 127.0.0.9));
sub lport { $port + 1 }
# One at a time, each answered before the next is opened (so that no two accepts race): four
# are served and kept, the fifth is closed unanswered.
my (@four, @answered);
for (1 .. 5) {
    my $c = IO::Socket::INET->new(LocalAddr => '127.0.0.1', PeerAddr => '127.0.0.1',
                                  PeerPort => lport(), Proto => 'tcp') or die "connect: $!";
    syswrite($c, "GET /api/v1/health HTTP/1.1\r\nHost: x\r\n\r\n");
    my ($head, $sel) = ('', IO::Select->new($c));
    while ($head !~ /\r\n\r\n/ && $sel->can_read(60)) {
        sysread($c, $head, 512, length $head) or last;
    }
    push @four, $c;
    push @answered, $head =~ m{^HTTP/1\.1 200} ? 1 : 0;
}
is("@answered", '1 1 1 1 0', 'past 4 connections from one address (127.0.0.1 not trusted here) the daemon closes new ones');
my $other = HTTP::Tiny->new(local_address => '127.0.0.5', timeout => 10)
    ->get('http://127.0.0.1:' . lport() . '/api/v1/health');
is($other->{status}, 200, 'meanwhile another address is served');
close $_ for @four;

sub stream_from {
    my ($from) = @_;
    my $c = IO::Socket::INET->new(LocalAddr => $from, PeerAddr => '127.0.0.1', PeerPort => lport(),
                                  Proto => 'tcp') or die "connect: $!";
    syswrite($c, "GET /api/v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer $l->{token}\r\n\r\n");
    my $head = '';
    my $sel = IO::Select->new($c);
    sysread($c, $head, 512, length $head) while $head !~ /\r\n\r\n/ && $sel->can_read(60);
    return ($c, $head =~ m{^HTTP/1\.1 (\d+)} ? $1 : 0);
}
my @streams = map { [stream_from("127.0.0.1$_")] } (1, 2, 3);
is_deeply([map { $_->[1] } @streams], [200, 200, 429], 'two event streams, the third refused with 429');
close $streams[0][0];
ok(wait_for(60, sub { (stream_from('127.0.0.14'))[1] == 200 }), 'a stream that ends makes room for another');

is(stop($l->{pid}, 'TERM'), 0, 'the second daemon stops cleanly');

my $i = start_daemon($port + 2, qw(--idle-timeout-s 1));
my $idle = IO::Socket::INET->new(LocalAddr => '127.0.0.20', PeerAddr => '127.0.0.1',
                                 PeerPort => $port + 2, Proto => 'tcp') or die "connect: $!";
my $t = time;
my $closed = IO::Select->new($idle)->can_read(60) && !sysread($idle, my $buf, 1);
ok($closed, sprintf('an idle connection is closed by --idle-timeout-s 1 (after %.1f s)', time - $t));
is(stop($i->{pid}, 'TERM'), 0, 'the third daemon stops cleanly');
done_testing();
