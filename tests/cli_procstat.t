#!/usr/bin/perl
# The worker agent's /proc parsers (cmocka, TAP output).
$ENV{CMOCKA_MESSAGE_OUTPUT} = 'TAP';
exec 'build/tests/cli_procstat_test' or die "build/tests/cli_procstat_test: $!\n";
