#!/usr/bin/perl
# Recorded histograms and their native and exemplar parts in the payload (cmocka): a
# failure's own messages reach prove's output.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use HodeiTap;
run_tap('build/tests/shm_histogram');
