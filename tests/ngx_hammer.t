#!/usr/bin/perl
# A reader nothing can crash or hang.  nginx with four workers serves scrapes to four clients
# while another process (build/tests/shm_vandal) publishes and laps, truncates the segment and
# grows it back, rewrites its geometry in place, replaces it with a larger file, and puts a
# FIFO, a symbolic link, a directory and a world-writable file at its path.  No worker may
# die, every response must be a valid exposition (all of the daemon's samples or none), and
# each must arrive within a second.  First, a FIFO at the path on its own.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use HodeiTest;
use HodeiExposition;
use POSIX ();
use Test::More;
use Time::HiRes qw(sleep time);

my $port = $ENV{HODEI_TEST_HAMMER_PORT} || 18420;
my $clients = 4;
my $scrapes = $ENV{HODEI_HAMMER_SCRAPES} || 2000;     # per client
my $seg = "$TMP/segment";
my $dir = "$TMP/nginx";
my $url = "http://127.0.0.1:$port/api/v1/metrics";
schema();                                             # read once, before the clients fork

my $nginx = start_nginx(dir => $dir, port => $port, workers => 4, http => <<"HTTP");
    hodei_segment $seg;
    hodei_http_zone hodei_http 1m;
    hodei_stale_after 1h;
    server {
        listen 127.0.0.1:$port;
        location = /api/v1/metrics { hodei_metrics; }
    }
HTTP

sub nginx_workers { my @pids = split ' ', `pgrep -P $nginx`; return join ' ', sort @pids }
my $workers = nginx_workers();
is(scalar(split ' ', $workers), 4, "four nginx workers ($workers)");

# One scrape on a new connection (so that the kernel spreads them over the workers):
# (seconds, hodei_scheduler_up or '-', 'ok' or what is wrong).
sub scrape_once {
    my ($http) = @_;
    my $t0 = time;
    my $r = $http->get($url);
    my $took = time - $t0;
    my $problem = $r->{status} == 200 ? exposition_problem($r->{content})
                                      : "status $r->{status} $r->{content}";
    return ($took, scheduler_up($r->{content}) // '-', $problem // 'ok');
}

# ---- a FIFO nobody writes to, at the path ----
POSIX::mkfifo($seg, 0666) or die "mkfifo: $!";
{
    my $http = HTTP::Tiny->new(keep_alive => 0, timeout => 10);
    my @results = map { [scrape_once($http)] } 1 .. 20;
    my @slow = grep { $_->[0] >= 1 } @results;
    my @bad = grep { $_->[2] ne 'ok' || $_->[1] ne '0' } @results;
    is(scalar @slow, 0, 'a FIFO at the path: every scrape answers within a second')
        or diag(join ', ', map { sprintf '%.2f s', $_->[0] } @slow);
    is(scalar @bad, 0, 'and reports the scheduler down in a valid exposition')
        or diag(join "\n", map { "up=$_->[1]: $_->[2]" } @bad[0 .. ($#bad < 4 ? $#bad : 4)]);
    like(slurp("$dir/logs/error.log"), qr/segment path is not a regular file/,
         'and the error log says why');
}
unlink $seg;

# ---- the hammer ----
my $vandal = spawn({ out => "$TMP/vandal.out", err => "$TMP/vandal.err" },
                   'build/tests/shm_vandal', $seg);
my @clients;
for my $c (1 .. $clients) {
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        my $http = HTTP::Tiny->new(keep_alive => 0, timeout => 10);
        open my $out, '>', "$TMP/client-$c.txt" or POSIX::_exit(1);
        printf $out "%.4f %s %s\n", scrape_once($http) for 1 .. $scrapes;
        close $out;
        POSIX::_exit(0);
    }
    push @clients, $pid;
}
for my $pid (@clients) {
    is(wait_exit($pid, 1200), 0, "client $pid made its $scrapes scrapes");
}
is(stop($vandal, 'TERM', 30), 0, 'the vandal stopped cleanly');
my ($rounds) = slurp("$TMP/vandal.out") =~ /^(\d+) rounds$/m;
note('shm_vandal: ' . ($rounds // 0) . ' rounds of every state; ' . slurp("$TMP/vandal.err"));
cmp_ok($rounds // 0, '>=', 1, 'the vandal went through its states');

my (@all, %up);
for my $c (1 .. $clients) {
    for (split /\n/, slurp("$TMP/client-$c.txt")) {
        my ($took, $upv, $verdict) = split / /, $_, 3;
        push @all, [$took, $upv, $verdict];
        $up{$upv}++;
    }
}
is(scalar @all, $clients * $scrapes, 'every scrape answered');
my @bad = grep { $_->[2] ne 'ok' } @all;
is(scalar @bad, 0, 'every response a valid exposition, all or none of the daemon\'s samples')
    or diag(join "\n", map { "up=$_->[1]: $_->[2]" } @bad[0 .. ($#bad < 9 ? $#bad : 9)]);
my ($slowest) = sort { $b <=> $a } map { $_->[0] } @all;
cmp_ok($slowest // 99, '<', 1,
       sprintf('each scrape within a second (slowest %.3f s)', $slowest // 99));
note(sprintf 'scheduler up in %d scrapes, down in %d', $up{1} // 0, $up{0} // 0);

my $log = slurp("$dir/logs/error.log");
my @crashes = $log =~ /^.*exited on signal.*$/mg;
is(scalar @crashes, 0, 'no nginx worker crashed') or diag(join "\n", @crashes[0 .. 4]);
unlike($log, qr/\[(?:alert|crit|emerg)\]/, 'no alert, crit or emerg in the error log');
is(nginx_workers(), $workers, 'the same four workers serve at the end');
ok(!-e $seg, 'the vandal left nothing at the path');
done_testing();
