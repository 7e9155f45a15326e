#!/usr/bin/perl
# The King James Bible, as printed by Debian's `bible` program (package bible-kjv) from
# bible-kjv-text's data: `bible -l 100000 -p DATADIR gen1:1-rev22:21` prints a heading line per
# chapter ("Genesis 1") and then one unwrapped verse per line ("  1 In the beginning ..."). One
# document per chapter: the heading, a blank line, the chapter's verses as numbered lines.
# Usage: bible -l 100000 -p DIR gen1:1-rev22:21 | bible2jsonl.pl [--name NAME] > out.jsonl
use strict;
use warnings;
use FindBin;
use lib $FindBin::Bin;
use CorpusJsonl;
use Getopt::Long;

my $name = 'bible';
GetOptions('name=s' => \$name) or die "usage: $0 [--name NAME] < bible-output\n";
my $out = CorpusJsonl->new($name);
my $doc = '';
my $verses = 0;
while (my $line = <STDIN>) {
  chomp $line;
  next if $line =~ /^\s*$/;
  if ($line =~ /^\s+(\d+)\s+(.*)$/) {
    die "bible2jsonl: a verse before any chapter heading: $line\n" if $doc eq '';
    $doc .= "$1 $2\n";
    $verses++;
  } elsif ($line =~ /^\S.*\s\d+$/) {
    $out->doc($doc) if $doc ne '';
    $doc = "$line\n\n";
  } else {
    die "bible2jsonl: unexpected line: $line\n";
  }
}
$out->doc($doc) if $doc ne '';
die "bible2jsonl: only $verses verses read (the whole Bible has 31,102)\n" if $verses < 31000;
$out->finish;
