package HodeiTest;
# What the integration tests and benchmarks share: a temp dir, programs started in the
# background (every one stopped when the script ends, dies or is interrupted), waiting for
# ports, JSON over HTTP with bearer tokens, tokens files, the scheduler daemon, nginx with the
# module, the exposition, and the one schema (shm/hodei_schema.c) as build/hodei-metrics
# --families prints it.  TAP comes from Test::More.
#
# Loading it makes the project root the working directory: every path below is relative to it.
use strict;
use warnings;
use Cwd qw(abs_path);
use File::Basename qw(dirname);
use File::Path qw(make_path);
use File::Temp qw(tempdir);
use HTTP::Tiny;
use IO::Socket::INET;
use JSON::PP ();
use POSIX qw(WNOHANG);
use Socket qw(IPPROTO_TCP TCP_NODELAY);
use Time::HiRes qw(sleep time);
use Exporter 'import';

our @EXPORT = qw(
    $TMP root slurp schema families label_values
    spawn wait_exit stop run wait_for
    port_open wait_port
    to_json from_json http_get call
    make_tokens token_file start_daemon restart_daemon segment_header metrics settle sample rss_kb
    nginx_conf start_nginx start_nginx_in_front
);

my $ROOT = abs_path(dirname(__FILE__) . '/../..');
chdir $ROOT or die "chdir $ROOT: $!";
sub root { $ROOT }

our $TMP = tempdir('hodei-test-XXXXXX', TMPDIR => 1, CLEANUP => 1);

sub slurp {
    my ($path) = @_;
    open my $fh, '<', $path or return '';
    local $/;
    return scalar(<$fh>) // '';
}

# The schema as build/hodei-metrics --families prints it:
# { families => [...], label_kinds => [...] }.
my $SCHEMA;
sub schema {
    $SCHEMA //= JSON::PP->new->decode(scalar `build/hodei-metrics --families`
                                      // die "build/hodei-metrics --families: $!");
    return $SCHEMA;
}

# [name, type] of every family, in schema order.
sub families {
    return map { [$_->{name}, $_->{type}] } @{ schema()->{families} };
}

# The values a label kind takes when they are a fixed set (e.g. 'event_type'), in order.
sub label_values {
    my ($kind) = @_;
    my ($k) = grep { $_->{kind} eq $kind } @{ schema()->{label_kinds} };
    die "no label kind $kind" unless $k;
    return @{ $k->{values} };
}

# ---- processes ------------------------------------------------------------------------------

my $OWNER = $$;       # a forked child must not run the clean-up below
my %children;         # pid => 1 while it may still be running

# An interrupted script still stops what it started: the handlers exit through END (exec
# resets them in what spawn starts).
for my $sig (qw(INT TERM HUP)) {
    my $number = POSIX->can("SIG$sig")->();
    $SIG{$sig} = sub { $$ == $OWNER ? exit 128 + $number : POSIX::_exit(128 + $number) };
}

# Starts a program in the background; $io is a file taking both stdout and stderr, or
# { out => FILE, err => FILE }.  Returns its pid.
sub spawn {
    my ($io, @cmd) = @_;
    my ($out, $err) = ref $io ? @$io{qw(out err)} : ($io, $io);
    my $pid = fork // die "fork: $!";
    if (!$pid) {
        open(STDIN, '<', '/dev/null') && open(STDOUT, '>>', $out) && open(STDERR, '>>', $err)
            && exec @cmd;
        print STDERR "$cmd[0]: $!\n";
        POSIX::_exit(127);
    }
    $children{$pid} = 1;
    return $pid;
}

# Waits up to $seconds (default 10) for a child to exit; its exit status (>> 8, or 128 + the
# signal), undef if it is still running.
sub wait_exit {
    my ($pid, $seconds) = @_;
    my $deadline = time + ($seconds // 10);
    while (1) {
        my $r = waitpid($pid, WNOHANG);
        if ($r == $pid) {
            delete $children{$pid};
            return $? & 127 ? 128 + ($? & 127) : $? >> 8;
        }
        return undef if $r < 0 || time >= $deadline;
        sleep 0.02;
    }
}

# Sends $sig (default TERM) to a child and waits for it; its exit status, undef if it did
# not exit within $seconds.
sub stop {
    my ($pid, $sig, $seconds) = @_;
    kill $sig // 'TERM', $pid;
    return wait_exit($pid, $seconds);
}

# Whatever is still running at exit is asked to stop, then killed (nginx's master stops its
# workers only when asked).
END {
    if ($$ == $OWNER) {
        local $?;
        for my $pid (keys %children) {
            stop($pid, 'TERM', 5) // stop($pid, 'KILL', 5);
        }
    }
}

# Runs a program to its end (at most 30 s); returns (exit status, stdout, stderr).
my $runs = 0;
sub run {
    my @cmd = @_;
    $runs++;
    my ($out, $err) = ("$TMP/run$runs.out", "$TMP/run$runs.err");
    my $pid = spawn({ out => $out, err => $err }, @cmd);
    my $status = wait_exit($pid, 30);
    if (!defined $status) {
        stop($pid, 'KILL');
        $status = -1;
    }
    return ($status, slurp($out), slurp($err));
}

# Polls $cond every 50 ms for up to $seconds: 1 as soon as it holds, 0 when time ran out.
sub wait_for {
    my ($seconds, $cond) = @_;
    my $deadline = time + $seconds;
    until ($cond->()) { return 0 if time > $deadline; sleep 0.05 }
    return 1;
}

# ---- ports and HTTP -------------------------------------------------------------------------

sub port_open {
    my ($port) = @_;
    return !!IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port, Timeout => 1);
}

sub wait_port {
    my ($port, $seconds) = @_;
    my $deadline = time + ($seconds // 10);
    while (time < $deadline) {
        return 1 if port_open($port);
        sleep 0.02;
    }
    return 0;
}

my $JSON = JSON::PP->new->utf8->canonical;
sub to_json { $JSON->encode($_[0]) }
sub from_json { $JSON->decode($_[0]) }

# HTTP::Tiny writes a POST's head and body separately: without TCP_NODELAY the body waits
# for a delayed ACK (40 ms) on every kept-alive request.
{
    no warnings 'redefine';
    my $connect = \&HTTP::Tiny::Handle::connect;
    *HTTP::Tiny::Handle::connect = sub {
        my $handle = $connect->(@_);
        setsockopt($handle->{fh}, IPPROTO_TCP, TCP_NODELAY, 1);
        return $handle;
    };
}
my $HTTP = HTTP::Tiny->new(timeout => 30, keep_alive => 1);

sub http_get {
    my ($url, %headers) = @_;
    return $HTTP->get($url, { headers => \%headers });
}

# One request to $api->{url} . $path, the body JSON-encoded unless it is a string; returns
# (status, decoded body or raw text).  It carries $opt{token} when that option is given (undef:
# no Authorization header), else $api->{token} when there is one.  $opt{response}, a scalar
# ref, receives HTTP::Tiny's whole response (headers).
sub call {
    my ($api, $method, $path, $body, %opt) = @_;
    my %headers = %{ $opt{headers} // {} };
    my $token = exists $opt{token} ? $opt{token} : $api->{token};
    $headers{Authorization} //= "Bearer $token" if defined $token;
    my %args = (headers => \%headers);
    if (defined $body) {
        $args{content} = ref $body ? to_json($body) : $body;
        $headers{'Content-Type'} //= 'application/json';
    }
    my $r = $HTTP->request($method, $api->{url} . $path, \%args);
    ${ $opt{response} } = $r if $opt{response};
    my $decoded = eval { from_json($r->{content}) };
    return ($r->{status}, $decoded // $r->{content});
}

# ---- tokens ---------------------------------------------------------------------------------

# Adds tokens to a tokens file (created mode 0600) with the real `hodeictl token create`;
# @spec: [name, role] or [name, 'tenant', tenant id].  Returns { name => token }.
sub make_tokens {
    my ($file, @spec) = @_;
    my %t;
    for my $s (@spec) {
        my ($name, $role, $tenant) = @$s;
        my ($status, $out, $err) = run('build/hodeictl', 'token', 'create', '--role', $role,
                                       $tenant ? ('--tenant', $tenant) : (), '--tokens', $file);
        die "hodeictl token create $name: $status $err" unless $status == 0;
        ($t{$name}) = $out =~ /^(hodei_\S+)$/m or die "no token in: $out";
    }
    return \%t;
}

# Writes a token into a file of its own (mode 0600), for --token-file; returns the path.
my $token_files = 0;
sub token_file {
    my ($token) = @_;
    my $path = "$TMP/token-" . ++$token_files;
    open(my $fh, '>', $path) or die "$path: $!";
    chmod 0600, $path;
    print $fh "$token\n";
    close $fh;
    return $path;
}

# ---- the scheduler daemon and its segment ---------------------------------------------------

# Starts hodei-scheduler; returns a handle { pid, port, url, segment, state_dir, log,
# tokens_file, tokens, token, cmd }.  Unless @flags say --tokens or --insecure-no-auth, it gets
# a tokens file of its own with an admin, a worker token and tenant tokens for acme, beta and
# gamma (tokens: name => token); the handle's token (the one call() sends) is the admin's.
# Unless @flags say --state-dir, its state lives in a directory of its own (state_dir).  An
# optional first argument { segment => PATH, as => [COMMAND ...] } puts the segment
# elsewhere, or runs the daemon through a command (setpriv, to run it as another user).
my @DAEMONS;
sub start_daemon {
    my %o = ref $_[0] eq 'HASH' ? %{ shift @_ } : ();
    my ($port, @flags) = @_;
    my $d = { port => $port, url => "http://127.0.0.1:$port/api/v1",
              segment => $o{segment} // "$TMP/segment-$port", log => "$TMP/daemon-$port.log" };
    unless (grep { /^--(tokens|insecure-no-auth)\b/ } @flags) {
        $d->{tokens_file} = "$TMP/tokens-$port";
        $d->{tokens} = make_tokens($d->{tokens_file}, [admin => 'admin'], [worker => 'worker'],
                                   map { [$_ => 'tenant', $_] } qw(acme beta gamma));
        $d->{token} = $d->{tokens}{admin};
        push @flags, '--tokens', $d->{tokens_file};
    }
    my ($state) = map { /^--state-dir=(.*)/ ? $1 : () } @flags;
    for my $i (0 .. $#flags - 1) { $state = $flags[$i + 1] if $flags[$i] eq '--state-dir' }
    unless (defined $state) {
        $state = "$TMP/state-$port";
        push @flags, '--state-dir', $state;
    }
    $d->{state_dir} = $state;
    $d->{cmd} = [@{ $o{as} // [] }, 'build/hodei-scheduler', '--listen', "127.0.0.1:$port",
                 '--segment', $d->{segment}, @flags];
    $d->{pid} = spawn($d->{log}, @{ $d->{cmd} });
    wait_port($port) or die "hodei-scheduler did not start on $port:\n" . slurp($d->{log});
    push @DAEMONS, $d;
    return $d;
}

# Stops a daemon started by start_daemon with $sig (default TERM; KILL for a crash) and starts
# it again with the same command line, state and segment; waits until it listens.
sub restart_daemon {
    my ($d, $sig) = @_;
    stop($d->{pid}, $sig // 'TERM', 30) // die "hodei-scheduler $d->{pid} did not stop";
    $d->{pid} = spawn($d->{log}, @{ $d->{cmd} });
    wait_port($d->{port}, 30)
        or die "hodei-scheduler did not start again on $d->{port}:\n" . slurp($d->{log});
    return $d;
}

# The exposition of the daemon's segment, without the age line (it moves by itself).
sub metrics {
    my ($d) = @_;
    my $text = `build/hodei-metrics $d->{segment} 2>&1`;
    $text =~ s/^hodei_metrics_snapshot_age_seconds .*\n//m;
    return $text;
}

# The segment header at $path (shm/hodei_segment.h) as a hash, or undef if there is none.
sub segment_header {
    my ($path) = @_;
    sysopen(my $fh, $path, POSIX::O_RDONLY() | POSIX::O_NONBLOCK()) or return undef;
    return undef unless -f $fh && sysread($fh, my $h, 128) == 128;
    my %h;
    @h{qw(magic version slot_count segment_size slot_size birth_id writer_pid start_time)} =
        unpack 'Q< L< L< Q< Q< Q< q< d<', $h;
    @h{qw(published heartbeat_ns)} = unpack 'x64 Q< q<', $h;
    $h{generation} = $h{published} >> 8;
    return \%h;
}

# Waits until each daemon's segment shows the state as of the call: the heartbeat has changed
# twice since, so a whole publish cycle began after the call and ended (a cycle publishes when
# something changed, else only ticks the heartbeat).  Without handles: every daemon started
# here that still runs.  (A number, the fixed wait this once was, is ignored.)  Returns 1, or
# 0 with a diagnostic after a deadline far beyond any publish interval.
sub settle {
    my @daemons = grep { ref } @_;
    @daemons = grep { kill 0, $_->{pid} } @DAEMONS unless @daemons;
    my $deadline = time + 60;
    for my $d (@daemons) {
        my ($changes, $last) = (0, undef);
        while ($changes < 2) {
            my $h = segment_header($d->{segment});
            my $beat = $h ? $h->{heartbeat_ns} : undef;
            $changes++ if defined $beat && defined $last && $beat != $last;
            $last = $beat if defined $beat;
            next if $changes >= 2;
            if (time >= $deadline) {
                Test::More::diag("settle: the segment of the daemon on port $d->{port} did not "
                                 . "publish within 60 s");
                return 0;
            }
            sleep 0.005;
        }
    }
    return 1;
}

# The value of one sample line in an exposition ('name{labels}' exactly), or undef.
sub sample {
    my ($text, $series) = @_;
    for my $line (split /\n/, $text) {
        next if $line =~ /^#/;
        my ($name, $value) = $line =~ /^(\S+) (\S+)$/ or next;
        return $value + 0 if $name eq $series;
    }
    return undef;
}

sub rss_kb {
    my ($pid) = @_;
    open my $fh, '<', "/proc/$pid/status" or return 0;
    while (<$fh>) { return $1 if /^VmRSS:\s+(\d+)/ }
    return 0;
}

# ---- nginx with the module ------------------------------------------------------------------

# Writes $o{dir}/nginx.conf (in the foreground, the module loaded, everything under $o{dir})
# with $o{http} as the body of http{}; options workers (1), worker_connections (1024),
# master (1).  Returns the file's path.
sub nginx_conf {
    my (%o) = @_;
    my $dir = $o{dir};
    make_path("$dir/logs");
    my $user = $> == 0 ? "user root root;\n" : '';
    my $master = ($o{master} // 1) ? 'on' : 'off';
    my $workers = $o{workers} // 1;
    my $connections = $o{worker_connections} // 1024;
    open(my $fh, '>', "$dir/nginx.conf") or die "$dir/nginx.conf: $!";
    print $fh <<"CONF";
load_module $ROOT/build/ngx_http_hodei_module.so;
${user}worker_processes $workers;
daemon off;
master_process $master;
pid $dir/nginx.pid;
error_log $dir/logs/error.log notice;
events { worker_connections $connections; }
http {
    access_log off;
    client_body_temp_path $dir/body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
$o{http}
}
CONF
    close $fh;
    return "$dir/nginx.conf";
}

# Starts nginx (see nginx_conf; dir defaults to a new one under $TMP) and waits until it
# listens on $o{port}; returns its master's pid.
sub start_nginx {
    my (%o) = @_;
    $o{dir} //= tempdir('nginx-XXXXXX', DIR => $TMP);
    my $conf = nginx_conf(%o);
    my $pid = spawn("$o{dir}/logs/stderr.log", '/usr/sbin/nginx', '-p', $o{dir}, '-c', $conf);
    wait_port($o{port}) or die "nginx is not listening on $o{port}:\n"
        . slurp("$o{dir}/logs/stderr.log") . slurp("$o{dir}/logs/error.log");
    return $pid;
}

# nginx in front of daemon $d on $port, as deployed: the scrape at /api/v1/metrics (with the
# HTTP zone) and the rest of /api/v1/ proxied to the daemon.  %o as start_nginx's (workers,
# dir, ...).  Returns nginx's pid.
sub start_nginx_in_front {
    my ($d, $port, %o) = @_;
    return start_nginx(%o, port => $port, http => <<"HTTP");
    hodei_segment $d->{segment};
    hodei_http_zone hodei_http 1m;
    server {
        listen 127.0.0.1:$port;
        location = /api/v1/metrics { hodei_metrics; }
        location /api/v1/ { proxy_pass http://127.0.0.1:$d->{port}; proxy_read_timeout 60s; }
    }
HTTP
}

1;
