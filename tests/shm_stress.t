#!/usr/bin/perl
# One writer, four reader processes, ~10 s: no torn read, at least 10^5 validated reads.
exec 'build/tests/shm_stress', $ENV{HODEI_STRESS_SECONDS} || 10, 4
    or die "exec build/tests/shm_stress: $!";
