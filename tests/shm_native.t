#!/usr/bin/perl
# Native histograms and the protobuf exposition's framing (cmocka); a failure's own messages
# reach prove's output.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use HodeiTap;
run_tap('build/tests/shm_native');
