# Changes while nginx runs: the daemon restarting (its segment replaced), the segment going
# away and coming back (one log line per change of state), and `nginx -s reload` keeping the
# HTTP counters unless the bucket layout changed.
#
# Between the requests of a block a small control server (forked below, reached through a
# proxied location) does what a daemon or an operator would: replaces the segment, or
# reloads nginx.
use strict;
use warnings;

use FindBin ();
use IO::Select ();
use IO::Socket::INET ();
use POSIX ();
use Time::HiRes ();
use Test::Nginx::Socket 'no_plan';
use lib $FindBin::Bin;
use HodeiSpec;

$ENV{TEST_NGINX_HODEI_CONTROL_PORT} //= server_port() + 50;

my $servroot = server_root();

# ---- the control server ----

sub read_log_from {
    my ($offset) = @_;
    open my $fh, '<', "$servroot/logs/error.log" or return '';
    seek $fh, $offset, 0;
    local $/;
    return <$fh> // '';
}

# HUP the master, then wait until a new worker runs and the old one stopped listening.
sub reload_nginx {
    my $offset = -s "$servroot/logs/error.log" // 0;
    open my $pidfile, '<', "$servroot/logs/nginx.pid" or return "no pid file\n";
    my ($pid) = <$pidfile> =~ /(\d+)/;
    kill 'HUP', $pid or return "kill HUP $pid: $!\n";
    my $deadline = Time::HiRes::time() + 60;
    while (Time::HiRes::time() < $deadline) {
        my $new = read_log_from($offset);
        return "reloaded\n"
            if $new =~ /start worker process/ && $new =~ /gracefully shutting down/;
        Time::HiRes::sleep(0.05);
    }
    return "reload not seen in the error log\n";
}

sub set_buckets {
    my ($buckets) = @_;
    my $conf = "$servroot/conf/nginx.conf";
    open my $in, '<', $conf or return "$conf: $!\n";
    my $text = do { local $/; <$in> };
    close $in;
    $text =~ s/hodei_http_duration_buckets [^;]*;/hodei_http_duration_buckets $buckets;/
        or return "no hodei_http_duration_buckets in $conf\n";
    open my $out, '>', $conf or return "$conf: $!\n";
    print $out $text;
    close $out;
    return reload_nginx();
}

# The module's and the master's notable log lines, without times and pids.
sub log_events {
    my @events;
    for (split /\n/, read_log_from(0)) {
        if (/SIGHUP/) {
            push @events, "reload";
        } elsif (/\[(\w+)\].*? hodei_segment "[^"]*": (.*?)(?:; scheduler reported down)?(?:, client: .*)?$/) {
            push @events, "$1 segment: $2";
        } elsif (/\[(\w+)\].*? hodei_http_zone "([^"]*)": (?!room for)(.*)$/) {
            push @events, "$1 zone $2: $3";
        }
    }
    return join '', map { "$_\n" } @events;
}

sub control {
    my ($path) = @_;
    if ($path =~ m{^/control/fill/(\d+)$}) {
        my $tenants = $1;
        fill('--tenants', $tenants);
        return "filled $tenants\n";
    }
    return unlink($seg) ? "removed\n" : "unlink: $!\n" if $path eq '/control/remove';
    if ($path eq '/control/garbage') {
        open my $fh, '>', "$seg.tmp" or return "$seg.tmp: $!\n";
        print $fh "garbage\n" x 100;
        close $fh;
        return rename("$seg.tmp", $seg) ? "garbage\n" : "rename: $!\n";
    }
    return reload_nginx() if $path eq '/control/reload';
    return set_buckets($1 =~ tr/,/ /r) if $path =~ m{^/control/buckets/([0-9.,]+)$};
    return log_events() if $path eq '/control/log';
    return "unknown control $path\n";
}

my $owner = $$;
my $listener = IO::Socket::INET->new(LocalAddr => '127.0.0.1',
                                     LocalPort => $ENV{TEST_NGINX_HODEI_CONTROL_PORT},
                                     Proto => 'tcp', Listen => 16, ReuseAddr => 1)
    or die "control server on 127.0.0.1:$ENV{TEST_NGINX_HODEI_CONTROL_PORT}: $!";
my $control_pid = fork // die "fork: $!";

if ($control_pid == 0) {
    # serves until the test process is gone
    $SIG{TERM} = sub { POSIX::_exit(0) };
    my $select = IO::Select->new($listener);
    while (getppid() == $owner) {
        next unless $select->can_read(0.5);
        my $c = $listener->accept or next;
        my $head = '';
        my $cs = IO::Select->new($c);
        while ($head !~ /\r\n\r\n/ && $cs->can_read(5)) {
            sysread($c, $head, 4096, length $head) or last;
        }
        my ($path) = $head =~ m{^GET (\S+)};
        my $body = defined $path ? (eval { control($path) } // "error: $@") : "bad request\n";
        print $c "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n"
               . "Content-Length: " . length($body) . "\r\n\r\n$body";
        close $c;
    }
    POSIX::_exit(0);
}
close $listener;

END {
    if ($$ == $owner && $control_pid) {
        local $?;    # the test's exit status, not the control server's
        kill 'TERM', $control_pid;
        waitpid $control_pid, 0;
    }
}

# ---- what a scrape says ----

sub scheduler {
    my ($body) = @_;
    my $tenants = () = $body =~ /^hodei_jobs_scheduled_total\{tenant_id="[^"]+"\} \d+$/mg;
    my ($up) = $body =~ /^hodei_scheduler_up (\S+)$/m;
    return "up=" . ($up // 'none') . " tenants=$tenants\n";
}

sub http {
    my ($body) = @_;
    my @work = $body =~ /^hodei_http_requests_total\{method="GET",endpoint="\/work",status_code="204"\} (\d+)$/mg;
    my @le = $body =~ /^hodei_http_request_duration_seconds_bucket\{le="([^"]+)"\} \d+$/mg;
    my ($count) = $body =~ /^hodei_http_request_duration_seconds_count (\d+)$/m;
    return "work=@work buckets=@le count=" . ($count // 'none') . "\n";
}

workers(1);
master_on();

# No block may log [alert] or [crit]. The reload blocks share their setting: no daemon, and
# the HTTP zone with two buckets that a reload may change.
block_defaults(
    http_config => "hodei_segment $ENV{TEST_NGINX_HODEI_DIR}/absent;\n"
                 . "hodei_http_zone hodei_http 1m;\n"
                 . "hodei_http_duration_buckets 0.1 1;\n",
    config => "location = /api/v1/metrics { hodei_http_metrics off; hodei_metrics; }\n"
            . "location /control/ { hodei_http_metrics off; "
            . "proxy_pass http://127.0.0.1:$ENV{TEST_NGINX_HODEI_CONTROL_PORT}; }\n"
            . "location /work { return 204; }\n",
    no_error_log => "[alert]\n[crit]\n");

run_tests();

__DATA__

=== TEST 1: a restarted daemon (segment file replaced) is followed without a reload; each change of state is logged once
--- http_config
    hodei_segment $TEST_NGINX_HODEI_DIR/seg;
--- config
    location = /api/v1/metrics { hodei_metrics; }
    location /control/ { proxy_pass http://127.0.0.1:$TEST_NGINX_HODEI_CONTROL_PORT; }
--- init
main::fill('--tenants', 3)
--- request eval
[ "GET /api/v1/metrics", "GET /control/fill/5", "GET /api/v1/metrics",
  "GET /control/remove", "GET /api/v1/metrics", "GET /api/v1/metrics",
  "GET /control/garbage", "GET /api/v1/metrics", "GET /api/v1/metrics",
  "GET /control/fill/2", "GET /api/v1/metrics", "GET /api/v1/metrics",
  "GET /control/log" ]
--- response_body_filters eval
[ [\&main::scheduler], [], [\&main::scheduler], [], [\&main::scheduler], [\&main::scheduler],
  [], [\&main::scheduler], [\&main::scheduler], [], [\&main::scheduler], [\&main::scheduler], [] ]
--- response_body eval
[ "up=1 tenants=3\n", "filled 5\n", "up=1 tenants=5\n",
  "removed\n", "up=0 tenants=0\n", "up=0 tenants=0\n",
  "garbage\n", "up=0 tenants=0\n", "up=0 tenants=0\n",
  "filled 2\n", "up=1 tenants=2\n", "up=1 tenants=2\n",
  "error segment: segment file does not exist
error segment: segment magic is wrong (not a Hodei segment)
notice segment: readable and fresh again
" ]



=== TEST 2: nginx -s reload keeps the HTTP counters
--- request eval
[ ("GET /work") x 5, "GET /api/v1/metrics", "GET /control/reload", ("GET /work") x 3,
  "GET /api/v1/metrics", "GET /control/log" ]
--- error_code eval
[ (204) x 5, 200, 200, (204) x 3, 200, 200 ]
--- response_body_filters eval
[ ([]) x 5, [\&main::http], [], ([]) x 3, [\&main::http], [] ]
--- response_body eval
[ ("") x 5, "work=5 buckets=0.1 1 +Inf count=5\n", "reloaded\n", ("") x 3,
  "work=8 buckets=0.1 1 +Inf count=8\n",
  # each worker reports the absent segment once: the first before the reload, the second after
  "error segment: segment file does not exist\nreload\nerror segment: segment file does not exist\n" ]



=== TEST 3: a reload with other buckets starts the HTTP counters again, never reinterprets them
--- request eval
[ ("GET /work") x 4, "GET /api/v1/metrics", "GET /control/buckets/0.2,2,20", ("GET /work") x 2,
  "GET /api/v1/metrics", "GET /control/log" ]
--- error_code eval
[ (204) x 4, 200, 200, (204) x 2, 200, 200 ]
--- response_body_filters eval
[ ([]) x 4, [\&main::http], [], ([]) x 2, [\&main::http], [] ]
--- response_body eval
[ ("") x 4, "work=4 buckets=0.1 1 +Inf count=4\n", "reloaded\n", ("") x 2,
  "work=2 buckets=0.2 2 20 +Inf count=2\n",
  "error segment: segment file does not exist\nreload\n"
  . "notice zone hodei_http: the bucket layout changed, HTTP counters start again from zero\n"
  . "error segment: segment file does not exist\n" ]
