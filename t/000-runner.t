# Self-test of the spec runner in t/lib (Test::Nginx::Socket block format)
# against plain nginx.  The blocks below must all pass; afterwards the
# fixtures in t/lib/selftest run in a child process and their TAP is compared
# line by line, proving that wrong expectations fail, a config error fails
# the block, file-wide settings apply, and TEST_NGINX_USE_HUP reloads.
#
#   PERL5LIB=t/lib TEST_NGINX_PORT=18200 prove -v t/000-runner.t
#
# The fixtures use TEST_NGINX_PORT + 1 and their own server root.

use Test::Nginx::Socket 'no_plan';
use Cwd ();
use POSIX ();
use Time::HiRes ();

$ENV{TEST_NGINX_RUNNER_WORD} = 'substituted';

config_preamble(<<'_EOC_');
        set $preamble_word "from-preamble";
_EOC_

no_shuffle();
run_tests();

check_fixtures();

sub check_fixtures {
    my $fixtures = 't/lib/selftest';
    my $name = 'mismatch.spec';
    my $T = "$fixtures/$name TEST";

    my ($out, $status) = run_fixture("$fixtures/$name");
    expect_tap($name, $out, [
        [0, qr/^\Q$T\E 1: .* - status code ok$/],
        [0, qr/^\Q$T\E 2: .* - status code ok$/],
        [1, qr/^\Q$T\E 3: .* - status code ok$/],
        [0, qr/^\Q$T\E 3: .* - header Content-Length not present in the raw headers$/],
        [0, qr/^\Q$T\E 3: .* - header X-Missing ok$/],
        [0, qr/^\Q$T\E 3: .* - header X-Runner ok$/],
        [1, qr/^\Q$T\E 4: .* - status code ok$/],
        [0, qr/^\Q$T\E 4: .* - header X-Runner like ok$/],
        [1, qr/^\Q$T\E 5: .* - status code ok$/],
        [0, qr/^\Q$T\E 5: .* - response_body - response is expected \(repeated req 0, req 0\)$/],
        [1, qr/^\Q$T\E 6: .* - status code ok$/],
        [0, qr/^\Q$T\E 6: .* - response_body_like - response is expected \(hello\)$/],
        [1, qr/^\Q$T\E 7: .* - status code ok$/],
        [0, qr/^\Q$T\E 7: .* - pattern "this-line-is-never-logged" should match a line in error.log \(req 0\)$/],
        [1, qr/^\Q$T\E 8: .* - status code ok$/],
        [0, qr/^\Q$T\E 8: .* - pattern "missing-file-m8" should not match any line in error.log but matches line ".*missing-file-m8.*" \(req 0\)$/],
        [1, qr/^\Q$T\E 9: .* - status code ok$/],
        [1, qr/^\Q$T\E 9: .* - response_body - response is expected \(repeated req 0, req 0\)$/],
        [0, qr/^\Q$T\E 9: .* - status code ok$/],
        [0, qr/^\Q$T\E 9: .* - response_body - response is expected \(repeated req 0, req 1\)$/],
        [0, qr/^ERROR: client socket timed out - \Q$T\E 10: /],
        [1, qr/^\Q$T\E 10: .* - status code ok$/],
        [0, qr/^\Q$T\E 11: .* - nginx failed to start \(exit status 1\)$/],
        [0, qr/^\Q$T\E 12: .* - --- must_die is not supported by this runner$/],
        [1, qr/^\Q$T\E 12: .* - status code ok$/],
    ]);
    like($out, qr/^# .*\[emerg\].*unknown directive "runner_bogus_directive"/m,
         "$name: a failed start shows nginx's own error");
    isnt($status, 0, "$name: the fixture exits non-zero");

    $name = 'settings.spec';
    $T = "$fixtures/$name TEST";
    ($out, $status) = run_fixture("$fixtures/$name");
    my @twice = map {
        my $r = $_;
        ([1, qr/^\Q$T\E 1: .* - status code ok$/],
         [1, qr/^\Q$T\E 1: .* - response_body - response is expected \(repeated req $r, req 0\)$/],
         [1, qr/^\Q$T\E 1: .* - pattern "\[debug\]" does not match a line in error.log \(req $r\)$/])
    } 0, 1;
    my @twice2 = map {
        my $r = $_;
        ([1, qr/^\Q$T\E 2: .* - status code ok$/],
         [1, qr/^\Q$T\E 2: .* - response_body - response is expected \(repeated req $r, req 0\)$/],
         [1, qr/^\Q$T\E 2: .* - pattern "\[debug\]" matches a line in error.log \(req $r\)$/])
    } 0, 1;
    expect_tap($name, $out, [[1, qr/^two worker processes under the master$/], @twice, @twice2]);
    like($out, qr/^1\.\.13$/m, "$name: plan tests => repeat_each() * 3 * blocks() + 1");
    is($status, 0, "$name: the fixture passes");

    $name = 'reload.spec';
    $T = "$fixtures/$name TEST";
    ($out, $status) = run_fixture("$fixtures/$name", TEST_NGINX_USE_HUP => 1);
    my @reload = (
        [1, qr/^\Q$T\E 1: .* - status code ok$/],
        [1, qr/^\Q$T\E 1: .* - response_body - response is expected/],
        [1, qr/^the same master serves the second block$/],
        [1, qr/^\Q$T\E 2: .* - status code ok$/],
        [1, qr/^\Q$T\E 2: .* - pattern "limiting requests" (?:matches|should match) a line in error.log \(req 0\)$/],
        [0, qr/^\Q$T\E 3: .* - nginx rejected the new configuration$/],
    );
    expect_tap("$name with TEST_NGINX_USE_HUP=1", $out, \@reload);
    like($out, qr/^# .*\[emerg\].*unknown directive "runner_bogus_directive"/m,
         "$name: a rejected reload shows nginx's own error");

    ($out, $status) = run_fixture("$fixtures/$name");
    $_->[0] = 0 for @reload[2 .. 4];
    $reload[5][1] = qr/^\Q$T\E 3: .* - nginx failed to start \(exit status 1\)$/;
    expect_tap("$name restarting nginx", $out, \@reload);
}

# A fixture still running when this file is stopped is stopped too, and
# given time to stop its nginx while its output pipe is still open.
my $fixture_pid;
END {
    if ($fixture_pid) {
        kill 'TERM', $fixture_pid;
        for (1 .. 200) {
            last if waitpid($fixture_pid, POSIX::WNOHANG()) != 0;
            Time::HiRes::sleep(0.05);
        }
    }
}

# Runs a fixture spec on its own port and server root; returns its merged
# stdout/stderr and exit status.
sub run_fixture {
    my ($file, %env) = @_;
    my $port = $Test::Nginx::Util::ServerPort + 1;

    local %ENV = %ENV;
    delete @ENV{qw(TEST_NGINX_USE_HUP TEST_NGINX_SERVER_PORT TEST_NGINX_CLIENT_PORT)};
    $ENV{TEST_NGINX_PORT} = $port;
    $ENV{TEST_NGINX_SERVROOT} = Cwd::abs_path('t') . "/servroot-selftest";
    $ENV{PERL5LIB} = join ':', Cwd::abs_path('t/lib'), $ENV{PERL5LIB} // ();
    # the fixtures expect log lines that never come: no need to wait long for them
    $ENV{TEST_NGINX_LOG_WAIT} = 1;
    @ENV{keys %env} = values %env;

    my $pid = $fixture_pid = open(my $fh, '-|') // die "fork: $!";
    if ($pid == 0) {
        open STDERR, '>&', \*STDOUT;
        exec $^X, $file or POSIX::_exit(127);
    }
    my $out = '';
    eval {
        local $SIG{ALRM} = sub { die "timeout\n" };
        alarm 120;
        $out = do { local $/; <$fh> };
        alarm 0;
    };
    if ($@) {
        kill 'TERM', $pid;
        fail("$file did not finish within 120s");
    }
    close $fh;
    undef $fixture_pid;
    return ($out // '', $? >> 8);
}

# Compares the fixture's TAP results, in order, with [passed?, name pattern].
sub expect_tap {
    my ($label, $out, $expected) = @_;
    my @got;
    push @got, [$1 ? 0 : 1, $2] while $out =~ /^(not )?ok \d+ - (.*)$/mg;

    is(scalar @got, scalar @$expected, "$label: number of checks")
        or diag($out);
    for my $i (0 .. $#$expected) {
        my ($ok, $pat) = @{ $expected->[$i] };
        my $got = $got[$i] // [undef, ''];
        my $verdict = $ok ? 'ok' : 'not ok';
        ok(defined $got->[0] && $got->[0] == $ok && $got->[1] =~ $pat,
           "$label: check " . ($i + 1) . " is \"$verdict\" and matches $pat")
            or diag("got: " . (defined $got->[0] ? ($got->[0] ? 'ok' : 'not ok') : 'nothing')
                    . " - $got->[1]");
    }
}

__DATA__

=== TEST 1: return and the exact body
--- config
    location = /t {
        return 200 "hello\n";
    }
--- request
GET /t
--- response_body
hello



=== TEST 2: HEAD has headers and no body
--- config
    location = /t {
        return 200 "hello\n";
    }
--- request
HEAD /t
--- response_headers
Content-Length: 6
--- response_body chomp



=== TEST 3: error_code, add_header, absent header, chomp filter
--- config
    location = /created {
        add_header X-Runner "yes" always;
        return 201 "made";
    }
--- request
POST /created
--- error_code: 201
--- response_headers
X-Runner: yes
Content-Length: 4
!X-Absent
--- response_body chomp
made



=== TEST 4: header and body patterns against the root location
--- config
--- request
GET /
--- response_headers_like
Server: nginx/\d+\.\d+\.\d+
Content-Type: text/html
--- response_body_like: <title>It works!</title>



=== TEST 5: user_files are served, with their touch date
--- config
--- user_files
>>> docs/a.txt 202001021504.05
static content
--- request
GET /docs/a.txt
--- response_headers
Last-Modified: Thu, 02 Jan 2020 15:04:05 GMT
Content-Type: text/plain
--- response_body
static content



=== TEST 6: request line version, body length, more_headers
--- config
    location = /echo {
        return 200 "$request_method $server_protocol len=$content_length x=$http_x_runner host=$host conn=$http_connection\n";
    }
--- request
PUT /echo HTTP/1.0
  hello world
--- more_headers
X-Runner: more
# comment lines are skipped
--- response_body
PUT HTTP/1.0 len=11 x=more host=localhost conn=close



=== TEST 7: main_config, http_config, config_preamble and $TEST_NGINX_ variables
--- main_config
thread_pool $TEST_NGINX_RUNNER_WORD threads=1;
--- http_config
    map $uri $mapped {
        default "$TEST_NGINX_RUNNER_WORD-map";
    }
--- config
    location = /conf {
        aio threads=$TEST_NGINX_RUNNER_WORD;
        return 200 "$mapped $preamble_word port=$TEST_NGINX_SERVER_PORT\n";
    }
--- request
GET /conf
--- response_body eval
"substituted-map from-preamble port=$ENV{TEST_NGINX_PORT}\n"



=== TEST 8: a sequence of requests with per-request expectations
--- config
    location = /a {
        return 200 "a:$http_x_n\n";
    }
--- request eval
["GET /a", "GET /missing-8", "HEAD /a"]
--- more_headers eval
["X-N: 1", "X-N: 2", "X-N: 3"]
--- error_code eval
[200, 404, 200]
--- response_headers eval
["!X-Nope", "Content-Type: text/html", "Content-Length: 4"]
--- response_body eval
["a:1\n", qr/404 Not Found/, ""]



=== TEST 9: error_log with strings and regexes, no_error_log
--- config
--- request
GET /runner-missing-9.txt
--- error_code: 404
--- response_body_like: 404 Not Found
--- error_log eval
[qr/open\(\) ".*runner-missing-9\.txt" failed \(2: No such file or directory\)/,
 qr/\[debug\]/,
 "[error]"]
--- no_error_log
[alert]
runner-never-logged



=== TEST 10: the error log is the current block's only
--- config
--- request
GET /runner-missing-10.txt
--- error_code: 404
--- error_log
runner-missing-10.txt
No such file or directory
--- no_error_log
runner-missing-9.txt



=== TEST 11: a gzip body is kept byte for byte (chunked, decoded)
--- http_config
    gzip on;
    gzip_min_length 1;
    gzip_types text/plain;
--- config
--- user_files
>>> words.txt
alpha beta gamma delta alpha beta gamma delta alpha beta gamma delta
--- request
GET /words.txt
--- more_headers
Accept-Encoding: gzip
--- response_headers
Content-Encoding: gzip
Transfer-Encoding: chunked
!Content-Length
--- response_body_like eval
qr/\A\x1f\x8b\x08/



=== TEST 12: without --- config the running nginx is reused; body filters
--- request
GET /words.txt
--- more_headers
Accept-Encoding: gzip
--- response_body_filters eval
[sub {
    require IO::Uncompress::Gunzip;
    my $zipped = shift;
    IO::Uncompress::Gunzip::gunzip(\$zipped => \my $plain) or die "gunzip failed";
    return $plain;
 }, "uc"]
--- response_body
ALPHA BETA GAMMA DELTA ALPHA BETA GAMMA DELTA ALPHA BETA GAMMA DELTA



=== TEST 13: raw_request is sent as is
--- config
    location = /raw {
        return 200 "raw $server_protocol $http_x_raw\n";
    }
--- raw_request eval
"GET /raw HTTP/1.0\r\nX-Raw: yes\r\n\r\n"
--- response_body
raw HTTP/1.0 yes



=== TEST 14: init runs before the requests
--- config
--- init
open my $out, '>', "$ENV{TEST_NGINX_SERVER_ROOT}/html/from-init.txt" or die $!;
print $out "written by init\n";
close $out;
--- request
GET /from-init.txt
--- response_body
written by init



=== TEST 15: a slow body within --- timeout passes (gaps of about 1 s)
--- config
    location = /slow.txt {
        limit_rate 1000;
    }
--- user_files eval
[["slow.txt", "x" x 1500]]
--- request
GET /slow.txt
--- timeout: 2500ms
--- response_body eval
"x" x 1500



=== TEST 16: --- wait holds the block after its requests
--- config
    location = /t {
        return 204;
    }
--- init
$main::wait_started = Time::HiRes::time();
--- request
GET /t
--- error_code: 204
--- wait: 1



=== TEST 17: the previous block waited
--- config
    location = /t {
        return 200 "ok\n";
    }
--- init
Test::More::cmp_ok(Time::HiRes::time() - $main::wait_started, '>=', 1,
                   'the block with --- wait: 1 lasted at least 1 s');
--- request
GET /t
--- error_code_like: ^2\d\d$
--- response_body_unlike: fail
