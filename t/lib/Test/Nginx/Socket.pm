package Test::Nginx::Socket;

# Runs nginx specs written in Test::Nginx::Socket's block format (see the
# POD at the end for what is supported).  This file is the client side:
# building requests, reading responses and the checks; Test::Nginx::Util
# writes the config and runs nginx.

use strict;
use warnings;

use Test::Base -base;
use Test::Nginx::Util;

use Digest::MD5 ();
use Digest::SHA ();
use Errno qw(EAGAIN EWOULDBLOCK EINTR);
use IO::Select ();
use IO::Socket::INET ();
use Time::HiRes qw(sleep);

our @EXPORT = qw(
    plan run_tests repeat_each env_to_nginx is_str config_preamble
    worker_connections master_process_enabled no_long_string workers
    master_on master_off log_level no_shuffle no_root_location use_hup
    server_name server_addr server_root html_dir server_port
    server_port_for_client timeout check_accum_error_log
    add_block_preprocessor bail_out add_cleanup_handler
    add_response_body_check
);

our @ResponseBodyChecks;

# Test::Nginx sections this runner does not implement: a spec using one
# fails loudly instead of passing without the check.
my @UnsupportedSections = qw(
    pipelined_requests request_eval response_body_eval must_die
    stap stap_out stap_out_like stap_out_unlike
    tcp_listen tcp_reply tcp_query tcp_query_len udp_listen udp_reply udp_query
    http2 http3 http09 curl curl_error shutdown_error_log no_shutdown_error_log
    skip_nginx skip_nginx2 skip_openssl skip_eval skip_slave todo todo_nginx
    server_addr_for_client
);

$Test::Nginx::Util::RunTestHelper = \&run_test_helper;

sub add_response_body_check ($) {
    push @ResponseBodyChecks, shift;
}

# ---- one block's requests and checks (called once per repeat_each) ----

sub run_test_helper {
    my ($block, $repeated_req_idx) = @_;
    my $name = $block->name;

    if ($repeated_req_idx == 0) {
        for my $section (grep { defined $block->$_ } @UnsupportedSections) {
            Test::More::fail("$name - --- $section is not supported by this runner");
        }
    }

    my $requests = build_requests($block);
    my $timeout = parse_time($block->timeout) // timeout();
    my $need_array = @$requests > 1;
    my $wait = parse_time($block->wait);

    for my $req_idx (0 .. $#$requests) {
        my $req = $requests->[$req_idx];
        my $raw_resp = send_request($block, $req, $timeout) // '';

        if (!defined $block->ignore_response) {
            my ($res, $raw_headers, $left) = parse_response($name, $raw_resp, $req->{head});
            if (defined $left && $left ne '') {
                (my $shown = $left) =~ s/([\0-\037\200-\377])/sprintf('\x{%02x}', ord $1)/eg;
                warn "WARNING: $name - unexpected extra bytes after the response: \"$shown\"\n";
            }
            check_error_code($block, $res, $req_idx, $need_array);
            check_raw_response_headers($block, $raw_headers, $req_idx, $need_array);
            check_response_headers($block, $res, $raw_headers, $req_idx, $need_array);
            transform_response_body($block, $res, $req_idx);
            check_response_body($block, $res, $req_idx, $repeated_req_idx, $need_array);
        }

        # As in Test::Nginx, the logs are also checked between the requests
        # of a sequence, each time against the lines written since the last.
        if ($req_idx < $#$requests) {
            sleep $wait if $wait;
            check_error_log($block, $repeated_req_idx);
            check_access_log($block, $repeated_req_idx) unless defined $block->ignore_response;
        }
    }

    sleep $wait if $wait;
    check_error_log($block, $repeated_req_idx);
    check_access_log($block, $repeated_req_idx) unless defined $block->ignore_response;
}

# ---- building requests ----

# Returns [ { packets => [bytes, ...], head => bool }, ... ], one per request.
sub build_requests {
    my ($block) = @_;
    my $name = $block->name;

    if (defined(my $raw = $block->raw_request)) {
        my @packets = ref $raw eq 'ARRAY' ? @$raw : ($raw);
        return [ { packets => \@packets, head => scalar(join('', @packets) =~ /^\s*HEAD\s/) } ];
    }

    my $request = $block->request;
    bail_out("$name - request empty") unless defined $request;
    if (ref $request && ref $request ne 'ARRAY') {
        bail_out("$name - invalid --- request: MUST be string or array of requests");
    }

    my $more_headers = $block->more_headers // '';
    my @texts = ref $request ? @$request : ($request);
    bail_out("$name - request empty") unless @texts;

    my @requests;
    for my $i (0 .. $#texts) {
        my $text = $texts[$i];
        bail_out("$name - request $i: only strings are supported, not packet arrays")
            if ref $text;
        my $headers = ref $more_headers eq 'ARRAY' ? $more_headers->[$i] : $more_headers;
        bail_out("$name - --- more_headers lacks data for the ${i}th request")
            unless defined $headers;
        my $bytes = build_request($name, $text, $headers);
        push @requests, { packets => [$bytes], head => scalar($bytes =~ /^HEAD /) };
    }
    return \@requests;
}

# "METHOD [URI [HTTP/x.y]]" on the first line, the body on the lines after;
# Host and Connection: close are added unless given, and Content-Length
# for a body (trimmed, as Test::Nginx does) unless the headers carry one.
sub build_request {
    my ($name, $text, $more_headers) = @_;

    1 while $text =~ s/^\s*#[^\n]+\s+|^\s+//s;
    my ($first, $body) = split /\n/, $text, 2;
    $body //= '';
    $first //= '';
    $first =~ /^\s*(\S+) *(?:(\S+) *)?(?:(\S+) *)?\s*$/
        or bail_out("$name - Request line is not valid. Should be "
                    . "'meth [url [version]]' but got \"$first\".");
    my ($method, $url, $version) = ($1, $2 // '/', $3 // 'HTTP/1.1');

    my ($headers, $is_chunked) = parse_more_headers($more_headers);

    my $length_header = '';
    if (!$is_chunked && $body ne '' && $headers !~ /(?:^|\n)Content-Length:/) {
        $body =~ s/^\s+|\s+$//gs;
        $length_header = 'Content-Length: ' . length($body) . "\r\n";
    }

    my $defaults = '';
    $defaults .= "Host: $ServerName\r\n" if $headers !~ /(?:^|\n)Host:/i;
    $defaults .= "Connection: close\r\n" if $headers !~ /(?:^|\n)Connection/i;

    return "$method $url $version\r\n$defaults$headers$length_header\r\n$body";
}

sub parse_more_headers {
    my ($text) = @_;
    my ($out, $is_chunked) = ('', 0);
    for my $line (split /\n+/, $text) {
        next if $line =~ /^\s*(?:#|$)/;
        my ($key, $val) = split /:\s*/, $line, 2;
        $val //= '';
        $is_chunked = 1 if lc $key eq 'transfer-encoding' && $val eq 'chunked';
        $out .= "$key: $val\r\n";
    }
    return ($out, $is_chunked);
}

# ---- the HTTP client ----

# Sends one request and reads until the server closes the connection.  A
# silence longer than $timeout fails the block (unless --- abort).
sub send_request {
    my ($block, $req, $timeout) = @_;
    my $name = $block->name;

    my ($sock, $err);
    for my $try (1 .. 20) {
        $sock = IO::Socket::INET->new(PeerAddr => $ServerAddr, PeerPort => $ServerPortForClient,
                                      Proto => 'tcp', Timeout => $timeout);
        last if $sock;
        $err = $!;
        sleep 0.05;
    }
    if (!$sock) {
        Test::More::fail("$name - Can't connect to $ServerAddr:$ServerPortForClient: $err");
        return undef;
    }
    $sock->blocking(0);

    local $SIG{PIPE} = 'IGNORE';
    my @packets = @{ $req->{packets} };
    my $middle_delay = parse_time($block->raw_request_middle_delay);
    my ($out, $offset) = (shift(@packets) // '', 0);
    my $writing = 1;
    my $resp = '';
    my $sel = IO::Select->new($sock);

    while (1) {
        my ($readable, $writable) = IO::Select->select($sel, $writing ? $sel : undef, undef, $timeout);
        if (!$readable && !$writable) {
            last if $! == EINTR;
            Test::More::fail("ERROR: client socket timed out - $name") unless defined $block->abort;
            last;
        }

        if ($writable && @$writable) {
            my $n = syswrite $sock, $out, length($out) - $offset, $offset;
            if (defined $n) {
                $offset += $n;
                if ($offset >= length $out) {
                    if (@packets) {
                        sleep $middle_delay if $middle_delay;
                        ($out, $offset) = (shift @packets, 0);
                    } else {
                        $writing = 0;
                    }
                }
            } elsif ($! != EAGAIN && $! != EWOULDBLOCK) {
                # The server may answer and close before reading it all.
                $writing = 0;
            }
        }

        if ($readable && @$readable) {
            my $n = sysread $sock, my $chunk, 65536;
            if (!defined $n) {
                next if $! == EAGAIN || $! == EWOULDBLOCK;
                warn "WARNING: $name - HTTP response read failure: $!\n";
                last;
            }
            last if $n == 0;
            $resp .= $chunk;
        }
    }

    close $sock;
    return $resp;
}

# Returns ({ code, headers => [[name, value], ...], content }, raw header
# text, bytes left over after the body).  Chunked bodies are decoded; the
# body is otherwise kept byte for byte.
sub parse_response {
    my ($name, $raw, $head_req) = @_;

    my ($head, $content) = $raw =~ /\A(.*?\r?\n)\r?\n(.*)\z/s ? ($1, $2) : ($raw, '');
    my $raw_headers = $raw =~ /\A(.*?\r\n)\r\n/s ? $1 : '';

    my ($status_line, @lines) = split /\r?\n/, $head;
    my $res = { code => undef, headers => [], content => $content };
    if (defined $status_line && $status_line =~ m{^HTTP/\d+\.\d+\s+(\d+)}) {
        $res->{code} = $1;
    }
    for my $line (@lines) {
        if ($line =~ /^[ \t]+(.*)/ && @{ $res->{headers} }) {
            $res->{headers}[-1][1] .= " $1";
        } elsif ($line =~ /^([^:\s]+)\s*:\s*(.*?)\s*$/) {
            push @{ $res->{headers} }, [$1, $2];
        }
    }

    my $code = $res->{code} // 0;
    return ($res, $raw_headers) if $code == 304 || $code == 101;

    my $encoding = header_value($res, 'Transfer-Encoding');
    my $length   = header_value($res, 'Content-Length');
    my $left;

    if (defined $encoding && $encoding eq 'chunked') {
        my $decoded = '';
        pos($content) = 0;
        while (1) {
            if ($content =~ /\G0[ \t]*\r\n\r\n/gc) {
                $left = $1 if $content =~ /\G(.+)/gcs;
                last;
            }
            if ($content =~ /\G[ \t]*([A-Fa-f0-9]+)[ \t]*\r\n/gc) {
                my $size = hex $1;
                my $start = pos $content;
                if (length($content) - $start < $size + 2
                    || substr($content, $start + $size, 2) ne "\r\n")
                {
                    Test::More::fail("$name - invalid chunked data received");
                    last;
                }
                $decoded .= substr $content, $start, $size;
                pos($content) = $start + $size + 2;
                next;
            }
            Test::More::fail("$name - no last chunk found in the chunked body");
            last;
        }
        $res->{content} = $decoded;

    } elsif (defined $length && $length =~ /^\d+$/) {
        if (length $content < $length) {
            warn "WARNING: $name - response body truncated: $length expected, but got "
                 . length($content) . "\n" unless $head_req;
        } elsif (length $content > $length) {
            $left = substr $content, $length;
            $res->{content} = substr $content, 0, $length;
        }
    }

    return ($res, $raw_headers, $left);
}

# A header's value, repeated headers joined with ", " (case-insensitive name).
sub header_value {
    my ($res, $key) = @_;
    my @values = map { $_->[1] } grep { lc $_->[0] eq lc $key } @{ $res->{headers} };
    return @values ? join(', ', @values) : undef;
}

# ---- response checks ----

# For a sequence of requests the expected sections are arrays, one entry
# per request.
sub get_indexed_value {
    my ($name, $value, $req_idx, $need_array) = @_;
    if (ref $value eq 'ARRAY') {
        return $value->[$req_idx] if $need_array;
        return $value->[0];
    }
    bail_out("$name - You asked for many requests, the expected results should be arrays as well.")
        if $need_array;
    return $value;
}

sub check_error_code {
    my ($block, $res, $req_idx, $need_array) = @_;
    my $name = $block->name;
    my $code = $res->{code} || '';

    if (defined $block->error_code_like) {
        my $pat = get_indexed_value($name, $block->error_code_like, $req_idx, $need_array);
        Test::More::like($code, qr/$pat/sm, "$name - status code ok");
    } elsif (defined $block->error_code) {
        my $expected = get_indexed_value($name, $block->error_code, $req_idx, $need_array);
        my $ok = Test::More::is($code, $expected, "$name - status code ok");
        if (!$ok && $expected =~ /^(\d+)\n\z/) {
            Test::More::diag("the expected code has a newline: write \"--- error_code: $1\"");
        }
    } else {
        Test::More::is($code, 200, "$name - status code ok");
    }
}

sub check_raw_response_headers {
    my ($block, $raw_headers, $req_idx, $need_array) = @_;
    my $name = $block->name;
    if (defined $block->raw_response_headers_like) {
        my $pat = get_indexed_value($name, $block->raw_response_headers_like, $req_idx, $need_array);
        Test::More::like($raw_headers, qr/$pat/s, "$name - raw resp headers like");
    }
    if (defined $block->raw_response_headers_unlike) {
        my $pat = get_indexed_value($name, $block->raw_response_headers_unlike, $req_idx, $need_array);
        Test::More::unlike($raw_headers, qr/$pat/s, "$name - raw resp headers unlike");
    }
}

sub substitute_ports {
    my ($text) = @_;
    $text =~ s/\$ServerPortForClient\b/$ServerPortForClient/g;
    $text =~ s/\$ServerPort\b/$ServerPort/g;
    return $text;
}

# As in Test::Nginx, --- response_headers_like is only looked at when the
# block has no --- response_headers.
sub check_response_headers {
    my ($block, $res, $raw_headers, $req_idx, $need_array) = @_;
    my $name = $block->name;

    if (defined $block->response_headers) {
        my $expected = parse_headers(get_indexed_value($name, $block->response_headers,
                                                       $req_idx, $need_array));
        for my $key (sort keys %$expected) {
            my $val = $expected->{$key};
            if (!defined $val) {
                Test::More::unlike($raw_headers, qr/^\s*\Q$key\E\s*:/ms,
                                   "$name - header $key not present in the raw headers");
                next;
            }
            Test::More::is(header_value($res, $key) // '', substitute_ports($val),
                           "$name - header $key ok");
        }
        Test::More::diag("$name - --- response_headers_like is ignored when "
                         . "--- response_headers is present (as in Test::Nginx)")
            if defined $block->response_headers_like && $req_idx == 0;

    } elsif (defined $block->response_headers_like) {
        my $expected = parse_headers(get_indexed_value($name, $block->response_headers_like,
                                                       $req_idx, $need_array));
        for my $key (sort keys %$expected) {
            my $pat = $expected->{$key} // '';
            Test::More::like(header_value($res, $key) // '', qr/^$pat$/,
                             "$name - header $key like ok");
        }
    }
}

my %BodyFilters = (
    md5_hex  => \&Digest::MD5::md5_hex,
    sha1_hex => \&Digest::SHA::sha1_hex,
    uc       => sub { uc $_[0] },
    lc       => sub { lc $_[0] },
    ucfirst  => sub { ucfirst $_[0] },
    lcfirst  => sub { lcfirst $_[0] },
    length   => sub { length $_[0] },
);

# --- response_body_filters: names from %BodyFilters or code refs, applied
# in order to the body before it is compared (a list of lists: one per request).
sub transform_response_body {
    my ($block, $res, $req_idx) = @_;
    my $filters = $block->response_body_filters;
    return unless defined $filters;
    my $name = $block->name;

    if (!ref $filters) {
        $filters =~ s/^\s+|\s+$//g;
        $filters = [split /\s+/, $filters];
    } elsif (ref $filters ne 'ARRAY') {
        $filters = [$filters];
    }
    if (ref $filters->[0] eq 'ARRAY') {
        $filters = $filters->[$req_idx]
            // bail_out("$name - --- response_body_filters has no entry for request $req_idx");
    }

    for my $filter (@$filters) {
        my $code = ref $filter eq 'CODE' ? $filter
                 : $BodyFilters{$filter}
                   // bail_out("$name - unknown filter \"$filter\" in --- response_body_filters");
        $res->{content} = $code->($res->{content});
    }
}

sub check_response_body {
    my ($block, $res, $req_idx, $repeated_req_idx, $need_array) = @_;
    my $name = $block->name;
    my $content = $res->{content};

    if (defined $block->response_body) {
        my $expected = get_indexed_value($name, $block->response_body, $req_idx, $need_array);
        $expected = substitute_ports($expected) if defined $expected && !ref $expected;
        my $where = "(repeated req $repeated_req_idx, req $req_idx)";
        if (ref $expected) {
            Test::More::like($content, $expected, "$name - response_body - like $where");
        } else {
            is_str($content, $expected, "$name - response_body - response is expected $where");
        }

    } elsif (defined $block->response_body_like || defined $block->response_body_unlike) {
        my $type = defined $block->response_body_like ? 'like' : 'unlike';
        my $section = "response_body_$type";
        my $pat = substitute_ports(get_indexed_value($name, $block->$section, $req_idx,
                                                     $need_array));
        my $summary = trim($content) // '';
        $summary = substr($summary, 0, 60) . '...' if length $summary > 63;
        $summary =~ s/([^\x20-\x7e])/sprintf('\\x%02x', ord $1)/ge;
        my $desc = "$name - $section - response is expected ($summary)";
        if ($type eq 'like') {
            Test::More::like($content, qr/$pat/s, $desc);
        } else {
            Test::More::unlike($content, qr/$pat/s, $desc);
        }
    }

    $_->($block, $content, $req_idx, $repeated_req_idx, 0) for @ResponseBodyChecks;
}

# ---- log checks ----

# A section's patterns: lines of a plain section (each a substring), or an
# eval giving a qr// or an array of strings and qr//s.
sub log_patterns {
    my ($pats) = @_;
    if (!ref $pats) {
        chomp $pats;
        return [split /\n+/, $pats];
    }
    return [$pats] if ref $pats eq 'Regexp';
    return [@$pats];
}

sub line_matches {
    my ($line, $pat) = @_;
    return ref $pat ? $line =~ /$pat/ : index($line, $pat) >= 0;
}

sub fmt_str {
    my ($str) = @_;
    chomp $str;
    $str =~ s/"/\\"/g;
    $str =~ s/\r/\\r/g;
    $str =~ s/\n/\\n/g;
    return $str;
}

# Every pattern must match some line; each gets one pass or one fail.
sub check_must_match {
    my ($name, $pats, $lines, $file, $repeated_req_idx) = @_;
    for my $pat (@{ log_patterns($pats) }) {
        if (grep { line_matches($_, $pat) } @$lines) {
            Test::More::pass("$name - pattern \"$pat\" matches a line in $file (req $repeated_req_idx)");
        } else {
            Test::More::fail("$name - pattern \"$pat\" should match a line in $file (req $repeated_req_idx)");
        }
    }
}

# No pattern may match any line; each gets one pass or one fail naming the line.
sub check_must_not_match {
    my ($name, $pats, $lines, $file, $repeated_req_idx) = @_;
    for my $pat (@{ log_patterns($pats) }) {
        my $p = fmt_str($pat);
        my ($hit) = grep { line_matches($_, $pat) } @$lines;
        if (defined $hit) {
            Test::More::fail("$name - pattern \"$p\" should not match any line in $file "
                             . "but matches line \"" . fmt_str($hit) . "\" (req $repeated_req_idx)");
        } else {
            Test::More::pass("$name - pattern \"$p\" does not match a line in $file (req $repeated_req_idx)");
        }
    }
}

# A predicate over log lines: every pattern of section $pats matches one.
sub all_seen {
    my ($pats) = @_;
    return undef unless defined $pats;
    my $want = log_patterns($pats);
    return sub {
        my ($lines) = @_;
        for my $pat (@$want) {
            return 0 unless grep { line_matches($_, $pat) } @$lines;
        }
        return 1;
    };
}

sub check_error_log {
    my ($block, $repeated_req_idx) = @_;
    my $name = $block->name;
    my $lines = error_log_data(all_seen($block->error_log));

    if (defined(my $grep_pats = $block->grep_error_log)) {
        my $grep_pat = ref $grep_pats eq 'ARRAY' ? $grep_pats->[$repeated_req_idx] : $grep_pats;
        my $expected = $block->grep_error_log_out;
        bail_out("$name - No --- grep_error_log_out defined but --- grep_error_log is defined")
            unless defined $expected;
        $expected = $expected->[$repeated_req_idx] if ref $expected eq 'ARRAY';

        my $matched = '';
        for my $line (@$lines) {
            my $hit = ref $grep_pat ? ($line =~ /$grep_pat/ ? $& : undef)
                    : index($line, $grep_pat) >= 0 ? $grep_pat : undef;
            $matched .= "$hit\n" if defined $hit && $hit !~ /\n/;
        }
        is_str($matched, $expected, "$name - grep_error_log_out (req $repeated_req_idx)");
    }

    check_must_match($name, $block->error_log, $lines, 'error.log', $repeated_req_idx)
        if defined $block->error_log;
    check_must_not_match($name, $block->no_error_log, $lines, 'error.log', $repeated_req_idx)
        if defined $block->no_error_log;

    # Serious nginx messages are reported even when no section asks.
    my $mentioned = join "\n", map { ref $_ eq 'ARRAY' ? @$_ : $_ }
                               grep { defined } $block->error_log, $block->no_error_log;
    for my $level (qw(alert crit emerg)) {
        next if index($mentioned, "[$level") >= 0;
        warn "WARNING: $name - ", fmt_str($_), "\n" for grep { /\[$level\]/ } @$lines;
    }
    for my $line (grep { /\bAssertion .*?failed\b/ } @$lines) {
        Test::More::fail("$name - " . fmt_str($line));
    }
}

sub check_access_log {
    my ($block, $repeated_req_idx) = @_;
    return unless defined $block->access_log || defined $block->no_access_log;
    my $name = $block->name;
    my $lines = access_log_data(all_seen($block->access_log));
    check_must_match($name, $block->access_log, $lines, 'access.log', $repeated_req_idx)
        if defined $block->access_log;
    check_must_not_match($name, $block->no_access_log, $lines, 'access.log', $repeated_req_idx)
        if defined $block->no_access_log;
}

1;

__END__

=head1 NAME

Test::Nginx::Socket - run nginx specs written in Test::Nginx's block format

=head1 SYNOPSIS

    use Test::Nginx::Socket 'no_plan';   # or: plan tests => repeat_each() * 2 * blocks();

    no_shuffle();
    run_tests();

    __DATA__

    === TEST 1: sanity
    --- config
        location = /t { return 200 "hello\n"; }
    --- request
    GET /t
    --- response_body
    hello

    PERL5LIB=t/lib prove -r t/

=head1 DESCRIPTION

A small reimplementation, on Debian's Test::Base, of the part of
Test::Nginx::Socket the specs under F<t/> use.  Where both implement a
feature they behave the same: same sections, defaults, test names and
counts, so a spec runs unchanged under either.  Sections of Test::Nginx
that are not implemented here fail the block ("--- X is not supported")
instead of being skipped silently.

Each block gets a fresh nginx (or, with C<use_hup>, a reload of the running
one), built from a generated F<nginx.conf> in the server root
(F<t/servroot>): C<daemon on>, C<master_process> per C<master_on>/C<master_off>
(default off), C<worker_processes> per C<workers>, C<error_log logs/error.log>
at the log level (default C<debug>), the pid file and all temp paths inside
the server root, C<user root> when run as root, and one
C<server { listen 127.0.0.1:$port; server_name localhost; ... }> holding the
block's config and, unless C<no_root_location>, C<location /> serving
F<html/>.  Requests are plain HTTP/1.1 over a socket with
C<Connection: close>; bodies are compared byte for byte (chunked transfer
decoded).  nginx is stopped at the end of the file and when the test
process exits or is interrupted.

As in Test::Nginx, blocks run in random order unless C<no_shuffle()> is
called, and C<--- init> runs after nginx has started, just before the
requests.

=head1 SECTIONS

Test::Base's C<=== TEST n: name> blocks with C<--- name> sections; a value
on the section line (C<--- error_code: 404>) has no newline, a value on its
own lines keeps its final newline.  Filters: C<eval> (Perl code giving the
value: a string, a qr//, or an array ref), C<chomp>, and the rest of
Test::Base's.  C<$TEST_NGINX_WORD> in the config sections and user files is
replaced by C<$ENV{TEST_NGINX_WORD}> (undefined: the run bails out);
C<$TEST_NGINX_RAND_PORT_N> by a free port above the server port.

=over

=item main_config, post_main_config

Main-context text before C<http {}> / after it.

=item http_config

Inside C<http {}>, before the server.

=item config

Inside the C<server {}>.  A block without it reuses the running nginx as is.

=item server_name, log_level

Per-block C<server_name> and error-log level.

=item user_files

C<< >>> name [YYYYMMDDhhmm.ss] >> lines each followed by the file's body;
relative names go under F<html/>; the optional date is the file's mtime (GMT).
With C<eval>: C<[[name, body, date], ...]>.

=item init

Perl code run once per block after nginx is up and before the requests
(package Test::Nginx::Util, under strict); dying bails out.

=item request

C<METHOD [URI [HTTP/x.y]]> (defaults C</> and HTTP/1.1), the body on the
following lines (trimmed; sent with C<Content-Length>).  C<Host: localhost>
and C<Connection: close> are added unless given.  With C<eval>, an array
ref of such strings is a sequence of requests on the same nginx; every
expectation section below may then be an array ref, compared pairwise.

=item raw_request, raw_request_middle_delay

Bytes sent as they are (an array ref: several writes, with the delay in
between).

=item more_headers

C<Name: value> lines added to the request (C<#> lines skipped); an array
ref gives one string per request.

=item error_code, error_code_like

Expected status (default 200: every request checks its status).

=item response_headers

C<Name: value> lines compared exactly (repeated headers joined with C<, >);
C<!Name> asserts the header is absent.  When present,
C<response_headers_like> is ignored (as in Test::Nginx).

=item response_headers_like

C<Name: regex> lines, anchored at both ends.

=item raw_response_headers_like, raw_response_headers_unlike

A regex against the raw header text.

=item response_body, response_body_like, response_body_unlike

Exact bytes (an C<eval> qr// turns it into a match), or a regex (C</s>).

=item response_body_filters

Names (C<md5_hex sha1_hex uc lc ucfirst lcfirst length>) or code refs applied
to the body before it is compared, e.g. a gunzip sub for a gzip body.

=item error_log, no_error_log

Lines (each a substring) or an C<eval> array of strings and qr//s that must
(must not) match a line of F<error.log> written since the block started;
for a sequence of requests they are checked after each request against the
lines written since the previous check.  Lines a block expects are waited
for, up to C<TEST_NGINX_LOG_WAIT> seconds (default 10): nginx writes some
after the response has gone out.  C<[alert]>, C<[crit]> and C<[emerg]>
lines are always reported as warnings.

=item grep_error_log, grep_error_log_out

The matched parts of the error-log lines, one per line, compared with the
expected text.

=item access_log, no_access_log

Like C<error_log> for F<access.log>.

=item wait

Seconds to sleep after the requests before the logs are checked.

=item timeout

Longest silence while reading a response (C<1.5>, C<1.5s>, C<300ms>;
default 10 s); exceeding it fails the block unless C<--- abort> is given.

=item ignore_response

Send the requests, check nothing about the responses.

=item ONLY, SKIP, LAST

Test::Base's block selection.

=back

=head1 FUNCTIONS

C<run_tests>, C<plan> and C<blocks> (Test::Base), C<repeat_each(N)> (every
block's requests N times on the same nginx), C<no_shuffle>, C<workers(N)>,
C<worker_connections(N)> (default 1024), C<master_on>, C<master_off>,
C<master_process_enabled>, C<log_level(LEVEL)>, C<no_root_location>,
C<use_hup> (reload with HUP between blocks instead of restarting, so shared
memory zones survive; forces the master on; a second server named
C<Test-Nginx> answers C<GET /ver> so the runner can see the reload
complete), C<env_to_nginx(NAME[=value], ...)>, C<config_preamble(TEXT)>
(put at the top of every server), C<timeout(SECS)>, C<server_name>,
C<server_addr>, C<server_port>, C<server_port_for_client>, C<server_root>,
C<html_dir>, C<no_long_string>, C<check_accum_error_log>,
C<add_block_preprocessor(sub { my $block = shift; ... })>,
C<add_response_body_check(sub { my ($block, $body, $req_idx,
$repeated_req_idx, $dry_run) = @_; ... })>, C<add_cleanup_handler>,
C<bail_out>.  Variables: C<$Test::Nginx::Util::ServRoot>, C<::ServerPort>,
C<::ErrLogFile>, C<::PidFile>, C<::ConfFile>.

=head1 ENVIRONMENT

C<TEST_NGINX_BINARY> (default F</usr/sbin/nginx>), C<TEST_NGINX_PORT> /
C<TEST_NGINX_SERVER_PORT> (default 1984; both are set for the config
substitution), C<TEST_NGINX_CLIENT_PORT>, C<TEST_NGINX_SERVROOT> (default
F<t/servroot>; C<TEST_NGINX_SERVER_ROOT> is set to it), C<TEST_NGINX_USE_HUP>,
C<TEST_NGINX_MASTER_PROCESS>, C<TEST_NGINX_LOG_LEVEL>, C<TEST_NGINX_TIMEOUT>,
C<TEST_NGINX_NO_SHUFFLE>, C<TEST_NGINX_LOAD_MODULES> (space-separated .so
paths, each a C<load_module> line), C<TEST_NGINX_WORKER_USER>,
C<TEST_NGINX_CHECK_ACCUM_ERR_LOG>, C<TEST_NGINX_SLEEP>,
C<TEST_NGINX_NO_CLEAN> (leave nginx running at the end).

=cut
