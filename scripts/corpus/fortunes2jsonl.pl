#!/usr/bin/perl
# fortune(6) cookie files (lines of "%" separate the quotations) → JSONL on stdout, one document
# per quotation.
# Usage: fortunes2jsonl.pl [--name NAME] FILE... > out.jsonl
use strict;
use warnings;
use FindBin;
use lib $FindBin::Bin;
use CorpusJsonl;
use Getopt::Long;

my $name = 'fortunes';
GetOptions('name=s' => \$name) && @ARGV or die "usage: $0 [--name NAME] FILE...\n";
my $out = CorpusJsonl->new($name);
for my $file (@ARGV) {
  open my $in, '<:raw', $file or die "$file: $!";
  my $doc = '';
  while (my $line = <$in>) {
    if ($line =~ /^%\r?$/) {
      $out->doc($doc);
      $doc = '';
    } else {
      $doc .= $line;
    }
  }
  $out->doc($doc);
  close $in;
}
$out->finish;
