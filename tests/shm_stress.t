#!/usr/bin/perl
# One writer publishing as fast as it can, four reader processes each checking 25,000 reads
# byte for byte: no torn read, however the machine schedules them.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use HodeiTap;
run_tap('build/tests/shm_stress', $ENV{HODEI_STRESS_READS} || 25000, 4);
