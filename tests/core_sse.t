#!/usr/bin/perl
# hodei-scheduler event stream under a slow reader: a GET /api/v1/events client that never
# reads (tiny receive buffer) must not slow submissions or placement; what its full queue
# refuses is counted in hodei_events_dropped_total, exactly; it counts as a bus subscriber
# while connected, also when it leaves stalled; a fast client beside it gets its events in
# order.
#
# The bus counts per publish: every subscriber present either receives the event or drops it.
# Subscribers here stay the same (aggregator + slow + fast) from before the first event until
# the counts are read, so for every event type
#     received + dropped = 3 * published,
#     received = published (aggregator, never full) + fast + slow,
#     dropped  = (published - fast) + (published - slow),
# with fast and slow the events each stream really carried: the slow client's are read only
# after the counts, when nothing is published any more.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use HodeiTest;
use Test::More;
use HTTP::Tiny;
use IO::Select;
use Socket qw(PF_INET SOCK_STREAM SOL_SOCKET SO_RCVBUF inet_aton pack_sockaddr_in);
use Time::HiRes qw(sleep time);

my $port = $ENV{HODEI_SSE_TEST_PORT} || 18120;
my $QUEUE = 16;
my $JOBS = 2000;             # each one job_submitted + job_assigned
my $CYCLES = 200;            # of them, started and succeeded too
my $BURST = 600;             # submissions while a second slow client stalls
my $REPLY_BOUND = 1.0;       # seconds any single call may take
# Events carry the job, command included: long commands make the stream outgrow what the
# kernel buffers for the stalled socket.  The daemon fixes an event stream's send buffer at
# 64 KiB, which Linux doubles for its own bookkeeping.
my $PAD = 'x' x 4000;
my $SNDBUF = 2 * 65536;
my @TYPES = event_types();

my $d = start_daemon($port, '--sse-queue', $QUEUE, qw(--idle-timeout-s 600 --publish-interval-ms 20
                     --heartbeat-timeout-s 600 --worker-timeout-s 1200));

# ---- helpers ----------------------------------------------------------------------------

# The event type names, from the one schema.
sub event_types {
    my $src = slurp('shm/hodei_schema.c');
    my ($list) = $src =~ /hodei_event_type_names\[HODEI_EV_COUNT\]\s*=\s*\{(.*?)\};/s
        or die 'event type names not found in shm/hodei_schema.c';
    return $list =~ /"(\w+)"/g;
}

# event_type => value of a per-event-type family.
sub per_type {
    my ($text, $family) = @_;
    my %v = map { $_ => sample($text, qq($family\{event_type="$_"\})) } @TYPES;
    return \%v;
}

# POST /jobs with a padded command; (status, the job).  The padding is taken out of the reply
# before decoding: the pure-Perl decoder takes a millisecond per 4 kB string.
my $HTTP = HTTP::Tiny->new(timeout => 30, keep_alive => 1);
sub submit {
    my ($command) = @_;
    my $r = $HTTP->post("$d->{url}/jobs", {
        headers => { 'Content-Type' => 'application/json',
                     Authorization => "Bearer $d->{token}" },
        content => to_json({ tenant_id => 'acme', command => "$command $PAD",
                             cpu_m => 100, memory_mb => 64 }) });
    (my $text = $r->{content}) =~ s/ \Q$PAD\E//;
    return ($r->{status}, eval { from_json($text) } // $r->{content});
}

sub total { my $h = shift; my $n = 0; $n += $_ // 0 for values %$h; $n }

sub subscribers { sample(metrics($d), 'hodei_event_bus_subscribers') // -1 }

# Polls $cond (every 20 ms) for up to $seconds; its last value.
sub wait_until {
    my ($seconds, $cond) = @_;
    my $deadline = time + $seconds;
    my $v;
    until (($v = $cond->()) || time >= $deadline) { sleep 0.02 }
    return $v;
}

# A raw client of GET /events whose receive buffer is as small as the kernel allows; the
# caller decides whether it ever reads.
sub slow_client {
    socket(my $s, PF_INET, SOCK_STREAM, 0) or die "socket: $!";
    setsockopt($s, SOL_SOCKET, SO_RCVBUF, 1024) or die "SO_RCVBUF: $!";
    connect($s, pack_sockaddr_in($port, inet_aton('127.0.0.1'))) or die "connect: $!";
    my $req = "GET /api/v1/events HTTP/1.1\r\nHost: 127.0.0.1:$port\r\nAccept: text/event-stream\r\n"
            . "Authorization: Bearer $d->{token}\r\n\r\n";
    syswrite($s, $req) == length $req or die "send: $!";
    return $s;
}

# Everything a socket delivers until it has been silent for $quiet seconds (the stream
# itself is silent between events but for a keepalive every 15 s).
sub read_until_quiet {
    my ($s, $quiet) = @_;
    my $sel = IO::Select->new($s);
    my $raw = '';
    while ($sel->can_read($quiet)) {
        my $n = sysread($s, $raw, 65536, length $raw);
        last unless $n;
        die 'the stream grew past 8 MB' if length $raw > 8 << 20;
    }
    return $raw;
}

# The body of a chunked HTTP/1.1 response (head included in $raw).
sub dechunk {
    my ($raw) = @_;
    my ($head, $rest) = split /\r\n\r\n/, $raw, 2;
    $head //= '';
    $rest //= '';
    return ($head, $rest) unless $head =~ /^transfer-encoding:\s*chunked/mi;
    my $body = '';
    while ($rest =~ s/^([0-9a-fA-F]+)[^\r\n]*\r\n//) {
        my $size = hex $1;
        last if $size == 0 || length $rest < $size;
        $body .= substr($rest, 0, $size, '');
        $rest =~ s/^\r\n//;
    }
    return ($head, $body);
}

# [type, decoded data] of every event in an SSE body; comments (": ...") are skipped.
# Dies on a block that is neither.
sub events_of {
    my ($body) = @_;
    my @ev;
    for my $block (split /\n\n/, $body) {
        next if $block =~ /^:/;
        my ($type, $data) = $block =~ /\Aevent: (\w+)\ndata: (\{.*\})\z/s
            or die "not an event: '$block'";
        $data =~ s/ \Q$PAD\E//;   # see submit
        push @ev, [$type, from_json($data)];
    }
    return @ev;
}

sub count_types {
    my %n = map { $_ => 0 } @TYPES;
    $n{ $_->[0] }++ for @_;
    return \%n;
}

# ---- two clients, before the first event --------------------------------------------------

is(subscribers(), 1, 'at start the aggregator is the only subscriber');
my $slow = slow_client();
my $fast_out = "$TMP/fast.sse";
my $fast = spawn({ out => $fast_out, err => "$TMP/fast.err" },
                 'curl', '-sN', '-H', 'Accept: text/event-stream', '-H',
                 "Authorization: Bearer $d->{token}", "$d->{url}/events");
ok(wait_until(3, sub { subscribers() == 3 }),
   'both SSE clients subscribed (aggregator + slow + fast = 3)');
my $m0 = metrics($d);
is(total(per_type($m0, 'hodei_events_published_total')), 0, 'nothing published yet');

# ---- load: the slow client never reads ---------------------------------------------------

my ($st, $w) = call($d, 'POST', '/workers', { worker_id => 'w1', cpu_m => 1_000_000,
                                               memory_mb => 10_000_000 });
is($st, 201, 'worker registered');

my ($bad, $slowest, $dropped_midway) = (0, 0, undef);
my $t0 = time;
my @ids;
for my $i (1 .. $JOBS) {
    my $t = time;
    my ($s, $job) = submit("echo $i");
    my $took = time - $t;
    $slowest = $took if $took > $slowest;
    if ($s != 201 || ref $job ne 'HASH') {
        diag("submit $i: $s " . (ref $job ? to_json($job) : $job)) if $bad++ < 5;
        next;
    }
    push @ids, $job->{id};
    # half-way, the slow client has long been full: drops are already being counted
    $dropped_midway = total(per_type(metrics($d), 'hodei_events_dropped_total'))
        if $i == $JOBS / 2;
}
my $submit_time = time - $t0;
is($bad, 0, "all $JOBS submissions answered 201");
ok($slowest < $REPLY_BOUND, sprintf('every submission answered within %.1f s (slowest %.1f ms, '
   . '%d in %.2f s)', $REPLY_BOUND, $slowest * 1000, $JOBS, $submit_time));
ok(($dropped_midway // 0) > 0, "drops counted while submitting (${\($dropped_midway // 0)} "
   . 'half-way)');

# placement goes on: the first job is on w1, then run some jobs through their life
ok(wait_until(3, sub { my (undef, $j) = call($d, 'GET', "/jobs/$ids[0]");
                       ref $j && $j->{state} eq 'assigned' && $j->{worker_id} eq 'w1' }),
   "job $ids[0] placed: assigned to w1");
my $cycle_bad = 0;
for my $id (@ids[0 .. $CYCLES - 1]) {
    wait_until(3, sub { my (undef, $j) = call($d, 'GET', "/jobs/$id");
                        ref $j && $j->{state} eq 'assigned' });
    my $t = time;
    my ($s1) = call($d, 'POST', "/jobs/$id/start", { worker_id => 'w1' });
    my ($s2) = call($d, 'POST', "/jobs/$id/succeed", { worker_id => 'w1', exit_code => 0 });
    my $took = time - $t;
    $slowest = $took if $took > $slowest;
    $cycle_bad++ unless $s1 == 200 && $s2 == 200;
}
is($cycle_bad, 0, "$CYCLES jobs started and succeeded (200 each) with the slow client stalled");
ok(wait_until(5, sub { my (undef, $q) = call($d, 'GET', '/jobs?state=queued&limit=1');
                       ref $q && @{ $q->{jobs} } == 0 }),
   'every job placed (none queued)');
my (undef, $last) = call($d, 'GET', "/jobs/$ids[-1]");
is($last->{state}, 'assigned', "the last job ($ids[-1]) is assigned too");

# ---- the counts, while the slow client is still connected and stalled ---------------------

settle();
my $m1 = metrics($d);
my $pub = per_type($m1, 'hodei_events_published_total');
my $rec = per_type($m1, 'hodei_events_received_total');
my $drop = per_type($m1, 'hodei_events_dropped_total');
my %want_pub = (job_submitted => $JOBS, job_assigned => $JOBS, job_started => $CYCLES,
                job_succeeded => $CYCLES, worker_registered => 1);
is_deeply({ map { $_ => $pub->{$_} } grep { $pub->{$_} } @TYPES }, \%want_pub,
          'published: one event per transition');
is(subscribers(), 3, 'hodei_event_bus_subscribers counts the stalled client (3)');
ok(total($drop) > 0, 'hodei_events_dropped_total > 0 (' . total($drop) . ')');
my @identity_bad = grep { $rec->{$_} + $drop->{$_} != 3 * $pub->{$_} } @TYPES;
is_deeply(\@identity_bad, [], 'for every event type: received + dropped = 3 × published')
    or diag(to_json({ published => $pub, received => $rec, dropped => $drop }));

# ---- what each stream carried --------------------------------------------------------------

# The slow client now reads everything the daemon still holds for it: its socket buffers,
# the event being written and its queue of $QUEUE.
my ($head, $slow_body) = dechunk(read_until_quiet($slow, 1.0));
like($head, qr{^HTTP/1\.1 200 .*^content-type: text/event-stream}msi,
     'slow client: 200 text/event-stream');
my @slow_ev = eval { events_of($slow_body) };
is($@, '', 'slow client: every block is an event or a comment');
my $slow_n = count_types(@slow_ev);

# The fast client has had its last event for as long; its output stops growing.
my $fast_size = -1;
wait_until(5, sub { my ($was, $now) = ($fast_size, -s $fast_out); $fast_size = $now;
                    sleep 0.3; $now == $was });
my @fast_ev = eval { events_of(slurp($fast_out)) };
is($@, '', 'fast client: every block is an event or a comment');
my $fast_n = count_types(@fast_ev);

my $slow_total = total($slow_n);
my $longest = 0;
for my $block (split /\n\n/, $slow_body) { $longest = length $block if length $block > $longest }
my $held = $SNDBUF + 65536 + ($QUEUE + 1) * ($longest + 2);
ok($slow_total >= $QUEUE && length($slow_body) <= $held,
   "slow client got only what its queue and socket buffers held: $slow_total of "
   . total($pub) . ' events, ' . length($slow_body) . " bytes <= $held");
note('slow client received ' . to_json($slow_n));
note('fast client received ' . to_json($fast_n));

my @received_bad = grep { $rec->{$_} != $pub->{$_} + $fast_n->{$_} + $slow_n->{$_} } @TYPES;
is_deeply(\@received_bad, [],
          'for every event type: received = published (aggregator) + fast + slow as read');
my @dropped_bad = grep { $drop->{$_} != ($pub->{$_} - $fast_n->{$_}) + ($pub->{$_} - $slow_n->{$_}) }
                  @TYPES;
is_deeply(\@dropped_bad, [],
          'for every event type: dropped = (published − fast) + (published − slow as read)')
    or diag(to_json({ published => $pub, dropped => $drop, fast => $fast_n, slow => $slow_n }));
my $slow_dropped = total($pub) - $slow_total;
ok($slow_dropped > 0, "the slow client's drops: $slow_dropped");

# in order, no gap in what was sent: the fast client's stream is a subsequence of the
# publish order (ids increase per type, times never go back, each data names its type)
sub increasing {
    my ($type, @ev) = @_;
    my @ids_seen = map { $_->[1]{job}{id} } grep { $_->[0] eq $type } @ev;
    my $ok = @ids_seen > 0;
    for my $i (1 .. $#ids_seen) { $ok = 0 unless $ids_seen[$i] > $ids_seen[$i - 1] }
    return ($ok, scalar @ids_seen);
}
for my $client ([fast => \@fast_ev], [slow => \@slow_ev]) {
    my ($name, $ev) = @$client;
    my ($ok, $n) = increasing('job_submitted', @$ev);
    ok($ok, "$name client: job_submitted ids strictly increasing ($n events)");
    my $times_ok = 1;
    for my $i (1 .. $#$ev) { $times_ok = 0 if $ev->[$i][1]{time} < $ev->[$i - 1][1]{time} }
    ok($times_ok && !grep({ $_->[1]{type} ne $_->[0] } @$ev),
       "$name client: times never go back, each data's type matches its event");
}
ok($fast_n->{job_submitted} >= $JOBS / 2,
   "fast client kept up: $fast_n->{job_submitted} of $JOBS job_submitted");
my %submitted = map { $_ => 1 } @ids;
ok(!grep({ $_->[0] eq 'job_submitted' && !$submitted{ $_->[1]{job}{id} } } @fast_ev),
   'fast client: every job_submitted names a job that was submitted');

# ---- leaving -----------------------------------------------------------------------------

close $slow;
ok(wait_until(3, sub { subscribers() == 2 }), 'the drained slow client left the bus (2)');

# A second slow client that leaves while stalled: it must be unsubscribed all the same.
my $slow2 = slow_client();
ok(wait_until(3, sub { subscribers() == 3 }), 'a second slow client subscribed (3)');
my $dropped_before = total(per_type(metrics($d), 'hodei_events_dropped_total'));
my $burst_bad = 0;
for my $i (1 .. $BURST) {
    my $t = time;
    my ($s) = submit("burst $i");
    my $took = time - $t;
    $slowest = $took if $took > $slowest;
    $burst_bad++ unless $s == 201;
}
is($burst_bad, 0, "$BURST more submissions answered 201");
settle();
my $dropped_burst = total(per_type(metrics($d), 'hodei_events_dropped_total')) - $dropped_before;
ok($dropped_burst > 0, "the second slow client stalled: $dropped_burst more drops");
is(subscribers(), 3, 'still counted while stalled (3)');
close $slow2;
ok(wait_until(3, sub { subscribers() == 2 }), 'the stalled client left the bus once it closed (2)');
ok($slowest < $REPLY_BOUND, sprintf('no call took %.1f s or more (slowest %.1f ms)',
                                    $REPLY_BOUND, $slowest * 1000));

stop($fast, 'TERM');
ok(wait_until(3, sub { subscribers() == 1 }), 'the fast client left the bus (1: the aggregator)');
is(stop($d->{pid}, 'TERM'), 0, 'SIGTERM: exit 0');
done_testing();
