#!/usr/bin/perl
# A dictd database (NAME.index + NAME.dict.dz, as in Debian's dict-* packages) → JSONL on stdout.
# Every entry the index points to is read once (entries shared by several headwords once), in
# dictionary order; consecutive entries are grouped into documents of about --group bytes (a
# "dictionary page"; 0 = one entry per document). The 00-database-* metadata entries are dropped.
# --dedup drops entries whose body (all but the headword line) equals an earlier one; WordNet
# repeats each synset's gloss under every member of the synset.
# Usage: dict2jsonl.pl [--group BYTES] [--dedup] [--name NAME] INDEX DICT.dz > out.jsonl
use strict;
use warnings;
use FindBin;
use lib $FindBin::Bin;
use CorpusJsonl;
use Digest::MD5 qw(md5);
use Getopt::Long;

my ($group, $dedup, $name) = (4096, 0, 'dict');
GetOptions('group=i' => \$group, 'dedup' => \$dedup, 'name=s' => \$name) && @ARGV == 2
  or die "usage: $0 [--group BYTES] [--dedup] [--name NAME] INDEX DICT.dz\n";
my ($index, $dict) = @ARGV;

my %b64;
my @alphabet = ('A' .. 'Z', 'a' .. 'z', '0' .. '9', '+', '/');
@b64{@alphabet} = 0 .. 63;
sub b64 { my $n = 0; $n = $n * 64 + $b64{$_} for split //, $_[0]; return $n; }

my %len_at;  # entry offset -> length
open my $ix, '<', $index or die "$index: $!";
while (<$ix>) {
  chomp;
  my ($head, $off, $len) = split /\t/;
  next unless defined $len;
  next if $head =~ /^00-?database/i;
  $len_at{b64($off)} = b64($len);
}
close $ix;

open my $dz, '-|', 'gzip', '-dc', '--', $dict or die "gzip $dict: $!";
binmode $dz;
my $text = do { local $/; <$dz> };
close $dz or die "gzip -dc $dict failed\n";

my $out = CorpusJsonl->new($name);
my (%seen, $page);
$page = '';
for my $off (sort { $a <=> $b } keys %len_at) {
  my $entry = substr($text, $off, $len_at{$off});
  $entry =~ s/\s+\z/\n/;
  if ($dedup) {
    (my $body = $entry) =~ s/\A[^\n]*\n//;
    next if $seen{md5($body)}++;
  }
  $page .= ($page eq '' ? '' : "\n") . $entry;
  if (length($page) >= $group) {
    $out->doc($page);
    $page = '';
  }
}
$out->doc($page) if $page ne '';
$out->finish;
