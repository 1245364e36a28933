#!/usr/bin/perl
# A short, bounded libFuzzer run (ASan + UBSan) over the segment reader, validator and
# renderer, and the native-histogram validator; `make fuzz FUZZ_SECONDS=N` runs it for longer.
use strict;
use warnings;
use File::Temp qw(tempdir);
use Test::More tests => 3;

my $seconds = $ENV{HODEI_FUZZ_SECONDS} || 20;
my $corpus = tempdir(CLEANUP => 1);
system("cp build/fuzz-corpus/segment build/fuzz-corpus/payload build/fuzz-corpus/native $corpus/") == 0
    or BAIL_OUT('no seed corpus: make build/fuzz-corpus/.seeded');
my $log = `build/tests/fuzz_segment -max_total_time=$seconds -max_len=65536 -artifact_prefix=$corpus/ $corpus 2>&1`;
my $rc = $? >> 8;
my ($runs) = $log =~ /Done (\d+) runs/;
is($rc, 0, "no crash or sanitizer report in $seconds s") or diag(substr($log, -3000));
cmp_ok($runs // 0, '>', 10000, 'the fuzzer ran (' . ($runs // 0) . ' inputs)');
unlike($log, qr/(ERROR: AddressSanitizer|runtime error:)/, 'no sanitizer finding in the log');
