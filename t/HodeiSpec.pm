package HodeiSpec;

# What the nginx specs under t/ share: where the module and hodei-shm-fill are, a temp dir
# holding the segment the blocks read, the schema's families (as hodei-metrics --families
# prints them), and matchers for scrape bodies.
# Loading this file also makes every block load the module, unless it has its own main_config.
#
#     use Test::Nginx::Socket 'no_plan';
#     use lib $FindBin::Bin;    # after Test::Nginx, so nothing in t/ can stand in for it
#     use HodeiSpec;
use strict;
use warnings;

use Exporter 'import';
use File::Basename ();
use File::Spec ();
use File::Temp ();
use JSON::PP ();
use Test::Nginx::Socket ();

our @EXPORT = qw($seg fill lines_re schema_families block_defaults);

my $root = File::Spec->rel2abs(File::Basename::dirname(__FILE__) . '/..');

$ENV{TEST_NGINX_HODEI_MODULE} //= "$root/build/ngx_http_hodei_module.so";
$ENV{TEST_NGINX_HODEI_BUILD}  //= "$root/build";
$ENV{TEST_NGINX_HODEI_DIR} = File::Temp::tempdir('hodei-t-XXXXXX', TMPDIR => 1, CLEANUP => 1);

# The segment file the blocks' hodei_segment points at ($TEST_NGINX_HODEI_DIR/seg).
our $seg = "$ENV{TEST_NGINX_HODEI_DIR}/seg";

# Writes a valid, fresh segment; the arguments go to hodei-shm-fill (e.g. --tenants 3).
# Whatever an earlier block left at the path (a directory too) goes first.
sub fill {
    rmdir $seg;
    system("$ENV{TEST_NGINX_HODEI_BUILD}/hodei-shm-fill", @_, $seg) == 0
        or die "hodei-shm-fill: $?";
}

# Matches a body that has a line matching each of the given line patterns.
sub lines_re {
    my $re = join '', map { "(?=.*^$_\$)" } @_;
    return qr/\A$re/ms;
}

# The families in exposition order, from their one definition (hodei-metrics --families):
# [name, type, source (upper case)], e.g. ["hodei_jobs_queued", "gauge", "DAEMON"].
sub schema_families {
    my $json = `$ENV{TEST_NGINX_HODEI_BUILD}/hodei-metrics --families`;
    die "hodei-metrics --families failed: $?" if $?;
    my @families = map { [$_->{name}, $_->{type}, uc $_->{source}] }
                   @{ JSON::PP->new->decode($json)->{families} };
    die "found only " . scalar(@families) . " families" if @families < 18;
    return @families;
}

# Gives every block the given sections (name => value) that it does not set itself.
sub block_defaults {
    my (%defaults) = @_;
    Test::Nginx::Socket::add_block_preprocessor(sub {
        my ($block) = @_;
        for my $section (sort keys %defaults) {
            $block->set_value($section => $defaults{$section}) unless defined $block->$section;
        }
    });
}

block_defaults(main_config => "load_module $ENV{TEST_NGINX_HODEI_MODULE};\n");

1;
