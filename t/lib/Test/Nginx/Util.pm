package Test::Nginx::Util;

# Server side of the spec runner: settings, the generated nginx.conf, the
# server root, and starting / reloading / stopping nginx.  The client side
# (requests and checks) is in Test::Nginx::Socket; see its POD for the
# supported sections.  Names, defaults and environment variables follow
# Test::Nginx so that specs run unchanged under either.

use strict;
use warnings;

use base 'Exporter';

use Carp qw(croak);
use File::Find ();
use File::Path qw(make_path remove_tree);
use File::Spec ();
use File::Temp ();
use IO::Socket::INET ();
use List::Util qw(shuffle);
use POSIX qw(:sys_wait_h SIGQUIT SIGTERM SIGKILL SIGHUP SIGUSR1);
use Time::HiRes qw(sleep time);
use Test::More ();

our @EXPORT = qw(
    run_tests bail_out add_block_preprocessor add_cleanup_handler
    repeat_each workers worker_connections master_on master_off
    master_process_enabled log_level no_shuffle no_root_location use_hup
    no_long_string check_accum_error_log config_preamble env_to_nginx
    timeout server_name server_addr server_root html_dir server_port
    server_port_for_client parse_time error_log_data access_log_data
    parse_headers trim is_str get_pid_from_pidfile
    $ServerPort $ServerPortForClient $ServerAddr $ServerName $NoLongString
    $ServRoot $ConfFile $PidFile $RunTestHelper $RepeatEach
);

# ---- settings (each overridable from the environment as in Test::Nginx) ----

our $NginxBinary       = $ENV{TEST_NGINX_BINARY} || '/usr/sbin/nginx';
our $ServerAddr        = '127.0.0.1';
our $ServerName        = 'localhost';
our $ServerPort        = $ENV{TEST_NGINX_SERVER_PORT} || $ENV{TEST_NGINX_PORT} || 1984;
our $ServerPortForClient = $ENV{TEST_NGINX_CLIENT_PORT} || $ServerPort;
our $Workers           = 1;
our $WorkerConnections = 1024;
our $WorkerUser        = $ENV{TEST_NGINX_WORKER_USER};
our $LogLevel          = $ENV{TEST_NGINX_LOG_LEVEL} || 'debug';
our $MasterProcessEnabled = $ENV{TEST_NGINX_MASTER_PROCESS} || 'off';
our $Timeout           = $ENV{TEST_NGINX_TIMEOUT} || 10;
# How long a log line a block expects may take to appear.
our $LogWait           = $ENV{TEST_NGINX_LOG_WAIT} || 10;
our $TestNginxSleep    = $ENV{TEST_NGINX_SLEEP} || 0.015;
our $NoShuffle         = $ENV{TEST_NGINX_NO_SHUFFLE} || 0;
our $UseHup            = $ENV{TEST_NGINX_USE_HUP};
our $CheckAccumErrLog  = $ENV{TEST_NGINX_CHECK_ACCUM_ERR_LOG};
our $LoadModules       = $ENV{TEST_NGINX_LOAD_MODULES};
our $Verbose           = $ENV{TEST_NGINX_VERBOSE};
our $RepeatEach        = 1;
our $NoRootLocation    = 0;
our $NoLongString;
our $ConfigPreamble    = '';
our @EnvToNginx;
our @BlockPreprocessors;
our @CleanupHandlers;

# Socket.pm plugs its request runner in here.
our $RunTestHelper;

our $ServRoot   = $ENV{TEST_NGINX_SERVROOT} || File::Spec->rel2abs('t/servroot');
$ENV{TEST_NGINX_SERVER_ROOT} = $ServRoot;
our $LogDir     = "$ServRoot/logs";
our $ErrLogFile = "$LogDir/error.log";
our $AccLogFile = "$LogDir/access.log";
our $HtmlDir    = "$ServRoot/html";
our $ConfDir    = "$ServRoot/conf";
our $ConfFile   = "$ConfDir/nginx.conf";
our $PidFile    = "$LogDir/nginx.pid";

our $ErrLogFilePos = 0;
our $PrevConfig;
our $ConfigVersion;      # answered by /ver of the reload probe server
our $NginxPid;           # master (or single) process we started

my $FirstBlock = 1;

# ---- setters and getters exported to specs ----

sub repeat_each (@)        { $RepeatEach = shift if @_; $RepeatEach }
sub workers (@)            { @_ ? ($Workers = shift) : $Workers }
sub worker_connections (@) { @_ ? ($WorkerConnections = shift) : $WorkerConnections }
sub log_level (@)          { @_ ? ($LogLevel = shift) : $LogLevel }
sub timeout (@)            { @_ ? ($Timeout = shift) : $Timeout }
sub server_name (@)        { @_ ? ($ServerName = shift) : $ServerName }
sub server_addr (@)        { @_ ? ($ServerAddr = shift) : $ServerAddr }
sub server_port (@)        { @_ ? ($ServerPort = shift) : $ServerPort }
sub server_port_for_client (@) { @_ ? ($ServerPortForClient = shift) : $ServerPortForClient }
sub master_on ()           { $MasterProcessEnabled = 'on' }
sub master_off ()          { $MasterProcessEnabled = 'off' }
sub master_process_enabled (@) {
    return $MasterProcessEnabled unless @_;
    $MasterProcessEnabled = shift() ? 'on' : 'off';
}
sub no_shuffle ()          { $NoShuffle = 1 }
sub no_root_location ()    { $NoRootLocation = 1 }
sub use_hup ()             { $UseHup = 1 }
sub no_long_string ()      { $NoLongString = 1 }
sub check_accum_error_log () { $CheckAccumErrLog = 1 }
sub config_preamble ($)    { $ConfigPreamble = shift }
sub server_root ()         { $ServRoot }
sub html_dir ()            { $HtmlDir }
sub add_block_preprocessor (&) { unshift @BlockPreprocessors, shift }
sub add_cleanup_handler ($)    { unshift @CleanupHandlers, shift }

sub env_to_nginx (@) {
    croak "env_to_nginx: no arguments specified" unless @_;
    for my $v (@_) {
        croak "env_to_nginx: bad argument value: $v" if $v !~ /^[A-Za-z_]/ || $v =~ /\n/;
        push @EnvToNginx, $v;
    }
}

# "1.5", "1.5s" and "300ms" are all accepted where a time is expected.
sub parse_time ($) {
    my $tm = shift;
    return $tm unless defined $tm;
    $tm =~ s/^\s+|\s+$//g;
    return $1 / 1000 if $tm =~ /^([\d.]+)ms$/;
    return $1 if $tm =~ /^([\d.]+)s?$/;
    return $tm;
}

sub trim ($) {
    my $s = shift;
    return undef unless defined $s;
    $s =~ s/^\s+|\s+$//g;
    $s =~ s/\s+/ /g;
    return $s;
}

# Test::LongString is not packaged in Debian, so long strings use plain is().
sub is_str (@) {
    my ($got, $expected, $desc) = @_;
    return Test::More::like($got, $expected, $desc) if ref $expected eq 'Regexp';
    return Test::More::is($got, $expected, $desc);
}

# "Name: value" lines into { Name => value }; "!Name" into { Name => undef }.
sub parse_headers ($) {
    my %headers;
    for my $line (split /\n/, shift) {
        $line =~ s/^\s+|\s+$//g;
        next if $line eq '';
        if ($line =~ s/^!\s*//) {
            $headers{$line} = undef;
        } else {
            my ($key, $val) = split /\s*:\s*/, $line, 2;
            $headers{$key} = $val // '';
        }
    }
    return \%headers;
}

sub bail_out (@) {
    cleanup();
    Test::More::BAIL_OUT(join '', @_);
}

# ---- the block loop ----

sub run_tests () {
    bail_out("nginx binary $NginxBinary is not executable (set TEST_NGINX_BINARY)")
        unless -x $NginxBinary;

    $ENV{TEST_NGINX_SERVER_PORT} //= $ServerPort;
    $ENV{TEST_NGINX_PORT}        //= $ServerPort;

    my @blocks = Test::Base::blocks();
    @blocks = shuffle @blocks unless $NoShuffle;

    for my $block (@blocks) {
        $_->($block) for @BlockPreprocessors;
        $block->set_value(name => "$0 " . $block->name);
        run_block($block);
    }

    stop_nginx('run_tests') unless $ENV{TEST_NGINX_NO_CLEAN};
    cleanup();
}

sub run_block {
    my ($block) = @_;
    my $name = $block->name;

    local $LogLevel = $block->log_level // $LogLevel;
    my $rand_ports = {};
    my $config = $block->config;
    $config = expand_env_in_text($config, $name, $rand_ports);

    # As in Test::Nginx, a block without --- config reuses the running nginx.
    if (defined $config) {
        $PrevConfig = $config;
        my $ready = ($UseHup && !$FirstBlock && nginx_is_running())
            ? reload_nginx($block, $config, $rand_ports)
            : restart_nginx($block, $config, $rand_ports);
        $FirstBlock = 0;
        return unless $ready;

    } elsif (!defined $PrevConfig) {
        bail_out("$name - No '--- config' section specified and could not get previous one");
    }

    if (defined(my $init = $block->init)) {
        my $ok = eval "package Test::Nginx::Util;\n$init\n;1";
        bail_out("$name - init failed: $@") unless $ok;
    }

    $ErrLogFilePos = 0;
    for my $i (1 .. $RepeatEach) {
        write_user_files($block, $rand_ports) if $i > 1;
        $RunTestHelper->($block, $i - 1);
    }
}

# ---- server root, config and user files ----

sub setup_server_root {
    my ($keep_running_files) = @_;

    if (-d $ServRoot) {
        remove_tree($ConfDir, glob("$ServRoot/*_temp"), glob("$ServRoot/*_cache"));
        if ($keep_running_files) {
            # nginx keeps running (HUP mode): clear every file but its pid
            # file; USR1 then reopens fresh logs.
            my @files;
            File::Find::find({ no_chdir => 1, wanted => sub {
                push @files, $_ if !-d $_ && !/(?:\bnginx\.pid|\.sock|\.crt|\.key)$/;
            } }, $ServRoot);
            unlink @files;
        } else {
            remove_tree($HtmlDir, $LogDir);
            # Refuse to wipe anything we did not create (TEST_NGINX_SERVROOT
            # pointing at real data).
            rmdir $ServRoot or bail_out("Can't remove $ServRoot (not empty?): $!");
        }
    }

    for my $dir ($ServRoot, $LogDir, $HtmlDir, $ConfDir) {
        next if -d $dir;
        mkdir $dir or bail_out("Failed to do mkdir $dir: $!");
    }

    write_file("$HtmlDir/index.html",
        '<html><head><title>It works!</title></head><body>It works!</body></html>');
}

sub write_file {
    my ($path, $body) = @_;
    open my $out, '>', $path or bail_out("Can't open $path for writing: $!");
    binmode $out;
    print $out $body;
    close $out or bail_out("Can't write $path: $!");
}

# --- user_files: ">>> name [touch-date]" lines each followed by the body;
# relative names land in the html directory.
sub write_user_files {
    my ($block, $rand_ports) = @_;
    my $name  = $block->name;
    my $files = $block->user_files;
    return unless $files;

    if (!ref $files) {
        my @parsed;
        for my $line (split /^/, $files) {
            if ($line =~ /^>>> (\S+)(?:\s+(.+))?/) {
                push @parsed, [$1, '', $2];
            } elsif (@parsed) {
                $parsed[-1][1] .= $line;
            }
        }
        $files = \@parsed;
    } elsif (ref $files ne 'ARRAY') {
        bail_out("$name - --- user_files must be a string or an array ref");
    }

    for my $file (@$files) {
        my ($fname, $body, $date) = @$file;
        my $path = $fname =~ m{^/} ? $fname : "$HtmlDir/$fname";
        (my $dir = $path) =~ s{/[^/]*$}{};
        make_path($dir) unless -d $dir;
        write_file($path, expand_env_in_text($body // '', $name, $rand_ports));
        if ($date) {
            local $ENV{TZ} = 'GMT';
            system('touch', '-t', $date, $path) == 0
                or bail_out("$name - touch -t '$date' $path failed");
        }
    }
}

# $TEST_NGINX_* in config text comes from %ENV; $TEST_NGINX_RAND_PORT_N
# picks a free loopback port near the server port, one per name per block.
sub expand_env_in_text {
    my ($text, $name, $rand_ports) = @_;
    return undef unless defined $text;

    $text =~ s{\$(TEST_NGINX_[_A-Z0-9]+)}{
        my $var = $1;
        if ($var =~ /^TEST_NGINX_RAND_PORT_\d+$/) {
            $rand_ports->{$var} //= free_port($name, $rand_ports);
        } else {
            bail_out("$name - No environment $var defined.") unless defined $ENV{$var};
            $ENV{$var};
        }
    }ge;
    return $text;
}

sub free_port {
    my ($name, $taken) = @_;
    my %used = map { $_ => 1 } $ServerPort, grep { defined } values %$taken;
    for my $port ($ServerPort + 2 .. $ServerPort + 49) {
        next if $used{$port};
        my $sock = IO::Socket::INET->new(LocalAddr => $ServerAddr, LocalPort => $port,
                                         Proto => 'tcp', ReuseAddr => 1) or next;
        close $sock;
        return $port;
    }
    bail_out("$name - no free port in " . ($ServerPort + 2) . '-' . ($ServerPort + 49));
}

sub write_config_file {
    my ($block, $config, $rand_ports) = @_;
    my $name = $block->name;

    my $main_config = expand_env_in_text($block->main_config // '', $name, $rand_ports);
    my $http_config = expand_env_in_text($block->http_config // '', $name, $rand_ports);
    my $post_main_config = expand_env_in_text($block->post_main_config // '', $name, $rand_ports);
    my $server_name = $block->server_name // $ServerName;
    $server_name =~ s/([\\'])/\\$1/g;

    if ($LoadModules) {
        $main_config = join('', map { "load_module $_;\n" } split ' ', $LoadModules)
                     . $main_config;
    }

    # A reload with the master off is unreliable in nginx itself.
    my $master = $UseHup ? 'on' : $MasterProcessEnabled;
    my $env = join '', map { my $v = /\s/ ? "'$_'" : $_; "env $v;\n" } @EnvToNginx;
    my $temp_paths = join '', map { "    ${_}_temp_path $ServRoot/${_}_temp;\n" }
                                  qw(client_body proxy fastcgi uwsgi scgi);
    my $root_location = $NoRootLocation ? '' : <<_EOC_;
        location / {
            root $HtmlDir;
            index index.html index.htm;
        }
_EOC_
    my $probe_server = !$UseHup ? '' : <<_EOC_;
    server {
        listen          $ServerAddr:$ServerPort;
        server_name     'Test-Nginx';

        location = /ver {
            return 200 '$ConfigVersion';
        }
    }
_EOC_
    my $user = defined $WorkerUser ? "user $WorkerUser;\n"
             : $> == 0             ? "user root;\n"
             : '';

    write_file($ConfFile, <<_EOC_);
worker_processes  $Workers;
daemon on;
master_process $master;
error_log $ErrLogFile $LogLevel;
pid       $PidFile;
$env
$main_config

http {
    access_log $AccLogFile;

    default_type text/plain;
    keepalive_timeout  68;
$temp_paths
$http_config

    server {
        listen          $ServerAddr:$ServerPort;
        server_name     '$server_name';

        client_max_body_size 30M;

        # Begin preamble config...
$ConfigPreamble
        # End preamble config...

        # Begin test case config...
$config
        # End test case config.

$root_location    }
$probe_server}

$post_main_config

events {
    accept_mutex off;
    worker_connections  $WorkerConnections;
}
$user
_EOC_
}

# ---- nginx processes ----

# True when $pid names a live (non-zombie) process.
sub is_running ($) {
    my $pid = shift;
    return 0 unless $pid && kill 0, $pid;
    open my $stat, '<', "/proc/$pid/stat" or return 1;
    my $line = <$stat> // '';
    return $line !~ /^\d+ \(.*\) Z/s;
}

sub get_pid_from_pidfile ($) {
    open my $in, '<', $PidFile or return undef;
    my $pid = <$in>;
    return undef unless defined $pid && $pid =~ /^(\d+)/;
    return $1;
}

# The pid file may be stale (an earlier run that crashed); only act on it
# when it still names an nginx process.
sub running_nginx_pid {
    my $pid = $NginxPid // get_pid_from_pidfile('');
    return undef unless $pid && is_running($pid);
    return $pid if defined $NginxPid && $pid == $NginxPid;
    my $exe = readlink "/proc/$pid/exe" // '';
    return $exe =~ m{/nginx(?: \(deleted\))?$} ? $pid : undef;
}

sub nginx_is_running { defined running_nginx_pid() }

sub wait_for_exit {
    my ($pid, $secs) = @_;
    my $deadline = time + $secs;
    while (is_running($pid)) {
        return 0 if time > $deadline;
        sleep 0.02;
    }
    return 1;
}

sub stop_nginx {
    my ($name) = @_;
    my $pid = running_nginx_pid();
    undef $NginxPid;
    return unless $pid;

    kill SIGQUIT, $pid;
    return if wait_for_exit($pid, $Timeout);
    warn "$name - nginx $pid did not quit in ${Timeout}s, terminating it\n";
    kill SIGTERM, $pid;
    return if wait_for_exit($pid, 2);
    warn "$name - killing nginx $pid\n";
    # The daemon is its own process-group leader: take its workers with it.
    kill SIGKILL, (getpgrp($pid) == $pid ? -$pid : $pid);
    wait_for_exit($pid, 2);
    unlink $PidFile;
}

sub restart_nginx {
    my ($block, $config, $rand_ports) = @_;
    my $name = $block->name;

    stop_nginx($name);
    setup_server_root(0);
    $ConfigVersion = rand_str(10) if $UseHup;
    write_user_files($block, $rand_ports);
    write_config_file($block, $config, $rand_ports);
    return start_nginx($name);
}

# Starts the daemon; on failure fails the block with nginx's own stderr.
sub start_nginx {
    my ($name) = @_;
    my @cmd = ($NginxBinary, '-p', "$ServRoot/", '-c', $ConfFile);
    my $deadline = time + 30;
    my $stderr;

    while (1) {
        my ($status, $err) = run_command(\@cmd, 10);
        $stderr = $err;
        last if $status == 0;
        # The previous daemon's socket can linger for a moment.
        if ($stderr =~ /Address already in use/ && time < $deadline) {
            sleep 0.1;
            next;
        }
        Test::More::fail("$name - nginx failed to start (exit status "
                         . ($status >> 8) . ")");
        Test::More::diag("command: @cmd\n$stderr");
        return 0;
    }

    my $until = time + $Timeout;
    until (defined($NginxPid = get_pid_from_pidfile($name))) {
        if (time > $until) {
            Test::More::fail("$name - nginx started but wrote no pid file $PidFile");
            Test::More::diag($stderr);
            return 0;
        }
        sleep 0.01;
    }

    return wait_for_port($name);
}

# Runs a short-lived command; returns (wait status, stderr text).
sub run_command {
    my ($cmd, $secs) = @_;
    my $errfile = File::Temp->new;
    my $pid = fork // bail_out("fork failed: $!");
    if ($pid == 0) {
        open STDIN, '<', '/dev/null';
        open STDOUT, '>', '/dev/null';
        open STDERR, '>', $errfile->filename;
        exec @$cmd or POSIX::_exit(127);
    }

    my $deadline = time + $secs;
    while (waitpid($pid, WNOHANG) == 0) {
        if (time > $deadline) {
            kill SIGKILL, $pid;
            waitpid($pid, 0);
            return (-1, "@$cmd did not return within ${secs}s\n");
        }
        sleep 0.01;
    }
    my $status = $?;
    seek $errfile, 0, 0;
    my $err = do { local $/; <$errfile> } // '';
    return ($status, $err);
}

sub wait_for_port {
    my ($name) = @_;
    my $deadline = time + $Timeout;
    while (1) {
        my $sock = IO::Socket::INET->new(PeerAddr => $ServerAddr,
                                         PeerPort => $ServerPortForClient,
                                         Proto => 'tcp', Timeout => 1);
        if ($sock) {
            close $sock;
            return 1;
        }
        if (time > $deadline) {
            Test::More::fail("$name - nginx does not answer on "
                             . "$ServerAddr:$ServerPortForClient: $!");
            return 0;
        }
        sleep 0.02;
    }
}

# HUP mode: rewrite the config, reopen the logs and reload, then wait until
# the probe server answers with the new config version from every worker.
sub reload_nginx {
    my ($block, $config, $rand_ports) = @_;
    my $name = $block->name;
    my $pid  = running_nginx_pid();

    setup_server_root(1);
    $ConfigVersion = rand_str(10);
    write_user_files($block, $rand_ports);
    write_config_file($block, $config, $rand_ports);

    kill SIGUSR1, $pid;
    sleep $TestNginxSleep;
    kill SIGHUP, $pid;
    sleep $TestNginxSleep * 3;

    my ($successes, $tries) = (0, 0);
    while ($tries++ < 200) {
        my $ver = probe_config_version();
        if (defined $ver && $ver eq $ConfigVersion) {
            return 1 if ++$successes >= 20;
            next;
        }
        $successes = 0;
        if (my @emerg = grep { /\[emerg\]/ } @{ read_lines($ErrLogFile) }) {
            Test::More::fail("$name - nginx rejected the new configuration");
            Test::More::diag(join '', @emerg);
            return 0;
        }
        my $wait = ($TestNginxSleep + $TestNginxSleep * $tries) * $tries / 2;
        sleep($wait > 1 ? 1 : $wait);
    }
    Test::More::fail("$name - failed to reload configuration after 200 failed test requests");
    return 0;
}

sub probe_config_version {
    my $sock = IO::Socket::INET->new(PeerAddr => $ServerAddr, PeerPort => $ServerPortForClient,
                                     Proto => 'tcp', Timeout => 2) or return undef;
    $sock->timeout(2);
    local $SIG{PIPE} = 'IGNORE';
    print $sock "GET /ver HTTP/1.0\r\nHost: Test-Nginx\r\n\r\n";
    my $resp = do { local $/; <$sock> } // '';
    return $resp =~ m{^HTTP/1\.\d 200 .*?\r\n\r\n(.*)\z}s ? $1 : undef;
}

sub rand_str {
    my ($len) = @_;
    my @alphabet = ('A' .. 'Z', 'a' .. 'z', '0' .. '9');
    return join '', map { $alphabet[rand @alphabet] } 1 .. $len;
}

# ---- logs ----

sub read_lines {
    my ($path) = @_;
    open my $in, '<', $path or return [];
    return [<$in>];
}

# error.log lines written since the last call in this block (all of them
# with check_accum_error_log).  nginx may write a line after the response
# went out (the log phase): when $done is given, the lines are read again
# until $done->(\@lines) is true or $LogWait seconds have passed.
sub error_log_data (;$) {
    my ($done) = @_;
    my $deadline = time + $LogWait;
    while (1) {
        sleep $TestNginxSleep * 3;
        open my $in, '<', $ErrLogFile or return [];
        seek $in, $ErrLogFilePos, 0 if !$CheckAccumErrLog && $ErrLogFilePos > 0;
        my @lines = <$in>;
        if (!$done || $done->(\@lines) || time >= $deadline) {
            $ErrLogFilePos = tell $in unless $CheckAccumErrLog;
            return \@lines;
        }
    }
}

sub access_log_data (;$) {
    my ($done) = @_;
    my $deadline = time + $LogWait;
    while (1) {
        sleep $TestNginxSleep * 3;
        my $lines = read_lines($AccLogFile);
        return $lines if !$done || $done->($lines) || time >= $deadline;
    }
}

# ---- cleanup ----

sub cleanup () {
    $_->() for @CleanupHandlers;
}

# An interrupted run must not leave nginx behind: INT and TERM become a
# normal exit so END runs; a vanished reader of our output (prove killed)
# cannot take an END that prints, so PIPE stops nginx directly.
for my $sig (qw(INT TERM PIPE)) {
    next if defined $SIG{$sig} && $SIG{$sig} ne 'DEFAULT';
    my $status = 128 + { INT => 2, TERM => 15, PIPE => 13 }->{$sig};
    $SIG{$sig} = $sig eq 'PIPE'
        ? sub { stop_nginx('SIGPIPE'); POSIX::_exit($status) }
        : sub { exit $status };
}

# Only the process that loaded the runner owns nginx (not children that
# spec code may fork).
my $OwnerPid = $$;

END {
    if ($$ == $OwnerPid && !$ENV{TEST_NGINX_NO_CLEAN}) {
        local $?;
        stop_nginx('END');
    }
}

1;
