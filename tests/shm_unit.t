#!/usr/bin/perl
# shm/ unit tests (cmocka, TAP output).
$ENV{CMOCKA_MESSAGE_OUTPUT} = 'TAP';
exec 'build/tests/shm_unit' or die "exec build/tests/shm_unit: $!";
