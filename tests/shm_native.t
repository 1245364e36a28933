#!/usr/bin/perl
# Native histograms and the protobuf exposition's framing (cmocka, TAP output).
$ENV{CMOCKA_MESSAGE_OUTPUT} = 'TAP';
exec 'build/tests/shm_native' or die "exec build/tests/shm_native: $!";
