package HodeiExposition;
# Checks a text 0.0.4 scrape of nginx against the one schema: every family exactly once, in
# order, HELP then TYPE; each sample of its family with an allowed suffix, the family's labels
# in order (le on buckets), label values properly escaped, a numeric value; and all or nothing
# of the daemon: with hodei_scheduler_up 0 no daemon family has samples, with 1 every one whose
# labels come from fixed sets (or that has none) has them.
use strict;
use warnings;
use Exporter 'import';
use Scalar::Util qw(looks_like_number);
use HodeiTest qw(schema);

our @EXPORT = qw(exposition_problem scheduler_up);

my %SUFFIXES = (counter => [''], gauge => [''], histogram => [qw(_bucket _count _sum)]);

# undef when $text is a well-formed scrape, else what is wrong.
sub exposition_problem {
    my ($text) = @_;
    return 'empty' unless length $text;
    return 'not terminated by a newline' unless $text =~ /\n\z/;
    my @families = @{ schema()->{families} };
    my @lines = split /\n/, $text;
    my ($f, $k, %samples) = (undef, -1);
    for (my $i = 0; $i < @lines; $i++) {
        my $line = $lines[$i];
        if ($line =~ /^# HELP (\S+) /) {
            $f = $families[++$k] or return "line $i: more families than the schema";
            return "line $i: HELP $1 where $f->{name} belongs" unless $1 eq $f->{name};
            my $type = $lines[++$i] // '';
            return "line $i: no TYPE $f->{name} $f->{type}"
                unless $type eq "# TYPE $f->{name} $f->{type}";
            next;
        }
        return "line $i: unexpected comment" if $line =~ /^#/;
        return "line $i: a sample before any family" unless $f;
        my ($name, $labels, $value) = $line =~ /^([a-z_]+)(?:\{(.*)\})? (\S+)$/
            or return "line $i: not a sample: $line";
        my ($suffix) = grep { $name eq $f->{name} . $_ } @{ $SUFFIXES{$f->{type}} };
        return "line $i: $name is not a sample of $f->{name}" unless defined $suffix;
        my @want = map { $_->{name} } @{ $f->{labels} };
        push @want, 'le' if $suffix eq '_bucket';
        my @got;
        my $rest = $labels // '';
        while ($rest =~ s/^(\w+)="((?:[^"\\]|\\[\\"n])*)"(,|$)//) {
            push @got, $1;
            last unless $3;
        }
        return "line $i: malformed labels {$labels}" if length $rest;
        return "line $i: labels (@got), want (@want)" unless "@got" eq "@want";
        return "line $i: value $value is not a number"
            unless looks_like_number($value) || $value =~ /^[+-]Inf$|^NaN$/;
        $samples{$f->{name}}++;
    }
    return 'only ' . ($k + 1) . ' of ' . scalar(@families) . ' families' if $k != $#families;
    my $up = scheduler_up($text) // return 'no hodei_scheduler_up sample';
    my %origin = map { $_->{kind} => $_->{origin} } @{ schema()->{label_kinds} };
    for my $d (grep { $_->{source} eq 'daemon' } @families) {
        my $n = $samples{$d->{name}} // 0;
        return "hodei_scheduler_up 0 but $d->{name} has $n samples" if !$up && $n;
        # the daemon always has the series of families whose labels are fixed sets
        my $always = !grep { $origin{$_->{kind}} !~ /^(?:set|build)$/ } @{ $d->{labels} };
        return "hodei_scheduler_up 1 but $d->{name} has no samples" if $up && $always && !$n;
    }
    return undef;
}

# The value of hodei_scheduler_up in a scrape, or undef.
sub scheduler_up {
    my ($text) = @_;
    return $text =~ /^hodei_scheduler_up ([01])$/m ? $1 : undef;
}

1;
