#!/usr/bin/perl
# A bounded libFuzzer run (ASan + UBSan) over the segment reader, validator and renderer, and
# the native-histogram validator: a fixed number of inputs, however slow the machine (the time
# limit only stops a hang); `make fuzz FUZZ_SECONDS=N` runs it for longer.
use strict;
use warnings;
use File::Temp qw(tempdir);
use Test::More tests => 3;

my $runs = $ENV{HODEI_FUZZ_RUNS} || 15000;
my $corpus = tempdir(CLEANUP => 1);
system("cp build/fuzz-corpus/segment build/fuzz-corpus/payload build/fuzz-corpus/native $corpus/") == 0
    or BAIL_OUT('no seed corpus: make build/fuzz-corpus/.seeded');
my @fuzz = ('build/tests/fuzz_segment', "-runs=$runs", '-max_total_time=900', '-max_len=65536',
            "-artifact_prefix=$corpus/", $corpus);
my $log = `@fuzz 2>&1`;
my $rc = $? >> 8;
my ($done) = $log =~ /Done (\d+) runs/;
is($rc, 0, "no crash or sanitizer report in $runs inputs") or diag(substr($log, -3000));
is($done // 0, $runs, "the fuzzer ran all $runs inputs") or diag(substr($log, -1000));
unlike($log, qr/(ERROR: AddressSanitizer|runtime error:)/, 'no sanitizer finding in the log');
