#!/usr/bin/perl
# A dictd database (NAME.index + NAME.dict.dz, as in Debian's dict-* packages) → JSONL on stdout.
# Every entry the index points to is read once (entries shared by several headwords once), in
# dictionary order; consecutive entries are grouped into documents of about --group bytes (a
# "dictionary page"; 0 = one entry per document). The 00-database-* metadata entries are dropped.
# --dedup drops entries whose body (all but the headword line) equals an earlier one; WordNet
# repeats each synset's gloss under every member of the synset.
# --plain normalises the whitespace of each entry: the lines of a paragraph, wrapped and indented
# for a terminal, are joined into one line with single spaces (a line opening a numbered sense,
# "Syn:" or "Note:" starts a new one), blank lines between paragraphs are kept (one), and lines
# that only name the entry's source ("[1913 Webster]", "[WordNet 1.5]", "[PJC]", ...) are dropped.
# (The indentation and the source lines were a quarter of the GPT-2 tokens of GCIDE.)
# --every N keeps the first of every N documents (pages): a deterministic sample spread over the
# whole alphabet.
# Usage: dict2jsonl.pl [--group BYTES] [--dedup] [--plain] [--every N] [--name NAME] INDEX DICT.dz
#        > out.jsonl
use strict;
use warnings;
use FindBin;
use lib $FindBin::Bin;
use CorpusJsonl;
use Digest::MD5 qw(md5);
use Getopt::Long;

my ($group, $dedup, $plain, $every, $name) = (4096, 0, 0, 1, 'dict');
GetOptions('group=i' => \$group, 'dedup' => \$dedup, 'plain' => \$plain, 'every=i' => \$every,
  'name=s' => \$name) && @ARGV == 2 && $every >= 1
  or die "usage: $0 [--group BYTES] [--dedup] [--plain] [--every N] [--name NAME] INDEX DICT.dz\n";
my ($index, $dict) = @ARGV;

# An entry with its paragraphs unwrapped and its source lines dropped (--plain).
my $source_line = qr/^\s*\[[^\[\]\n]*(?:Webster|WordNet|PJC|RDH|Century Dict|\bAS\b)[^\[\]\n]*\]\s*$/;
my $opens_line = qr/^(?:\d+\.|\([a-z]\)|Syn:|Note:)\s/;
sub plain {
  my @out;
  my $line = '';
  for my $l (split /\n/, $_[0]) {
    next if $l =~ $source_line;
    $l =~ s/^\s+//;
    $l =~ s/\s+$//;
    $l =~ s/[ \t]{2,}/ /g;
    if ($l eq '') {  # a paragraph ends
      push @out, $line if $line ne '';
      push @out, '' if @out && $out[-1] ne '';
      $line = '';
    } elsif ($line ne '' && $l !~ $opens_line) {
      $line .= " $l";
    } else {
      push @out, $line if $line ne '';
      $line = $l;
    }
  }
  push @out, $line if $line ne '';
  pop @out while @out && $out[-1] eq '';
  return join("\n", @out) . "\n";
}

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
my $pages = 0;  # pages made so far, kept or not (--every)
sub page_done {
  $out->doc($_[0]) if $pages++ % $every == 0;
}
for my $off (sort { $a <=> $b } keys %len_at) {
  my $entry = substr($text, $off, $len_at{$off});
  $entry =~ s/\s+\z/\n/;
  $entry = plain($entry) if $plain;
  if ($dedup) {
    (my $body = $entry) =~ s/\A[^\n]*\n//;
    next if $seen{md5($body)}++;
  }
  $page .= ($page eq '' ? '' : "\n") . $entry;
  if (length($page) >= $group) {
    page_done($page);
    $page = '';
  }
}
page_done($page) if $page ne '';
$out->finish;
