package HodeiTap;
# Runs a program that prints TAP (a cmocka test, a C stress test) as a test script.  Its TAP
# passes through unchanged; what it says about a failure (its stderr, such as cmocka's
# fail_msg() text, and the comments that follow a "not ok") is repeated on STDERR, where prove
# shows it without -v, so a failing run of `make test` or .ci/run says why.
#
#     use lib "$FindBin::Bin/lib"; use HodeiTap; run_tap('build/tests/shm_unit');
use strict;
use warnings;
use Exporter 'import';
use POSIX ();

our @EXPORT = qw(run_tap);

sub run_tap {
    my (@cmd) = @_;
    $ENV{CMOCKA_MESSAGE_OUTPUT} = 'TAP';
    my $pid = open(my $out, '-|') // die "fork: $!";
    if (!$pid) {
        open(STDERR, '>&', \*STDOUT) or POSIX::_exit(127);
        # unbuffered, so that stderr and stdout arrive in the order they were written
        { exec('stdbuf', '-o0', '-e0', @cmd) }
        print "Bail out! exec $cmd[0]: $!\n";
        POSIX::_exit(127);
    }
    $| = 1;
    my @since_result;          # what came since the last result line
    my $after_failure = 0;     # the last result was "not ok"
    while (my $line = <$out>) {
        if ($line =~ /^(not )?ok\b/) {
            $after_failure = defined $1;
            print STDERR "# $line", map { "#   $_" } @since_result if $after_failure;
            @since_result = ();
            print $line;
        } elsif ($line =~ /^(?:1\.\.\d+|Bail out!)/) {
            print $line;
        } else {
            (my $comment = $line) =~ s/^(?!#)/# /;
            print $comment;
            if ($after_failure) {
                print STDERR $comment =~ s/^# /#   /r;
            } else {
                push @since_result, $line =~ s/^# //r;
            }
        }
    }
    close $out;
    my $status = $?;
    if ($status & 127) {
        print STDERR "# $cmd[0] was killed by signal ", $status & 127, "; its last words:\n",
            map { "# $_" } @since_result;
        exit 128 + ($status & 127);
    }
    print STDERR map { "# $_" } @since_result if $status;
    exit $status >> 8;
}

1;
