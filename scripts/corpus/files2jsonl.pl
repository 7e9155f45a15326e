#!/usr/bin/perl
# Text files → JSONL on stdout: one document per file (or per section with --split). The file
# paths come NUL-separated on stdin; they are processed in sorted order, so the output does not
# depend on the order `find` happens to list them in. Files ending in .gz are decompressed.
# Options:
#   --name NAME       the source name in the summary line
#   --root DIR        paths are relative to DIR in messages and in the --cap sample
#   --max-file BYTES  skip files larger than this (generated tables, data blobs)
#   --cap BYTES       a deterministic sample: the files ordered by the MD5 of their relative path,
#                     taken until their sizes sum to BYTES (then written in path order)
#   --html            strip HTML: drop head/script/style/navigation, tags → line breaks or nothing,
#                     whitespace collapsed outside <pre>, entities decoded
#   --mail            RFC 822 messages: keep the Subject header and the body, drop other headers
#   --man             render roff manual pages with groff (plain text, 80 columns); pages that
#                     are only a .so link to another page are skipped
#   --split REGEX     start a new document at each line matching REGEX (e.g. chapter headings)
# Usage: find DIR -name '*.txt' -print0 | files2jsonl.pl [OPTIONS] > out.jsonl
use strict;
use warnings;
use FindBin;
use lib $FindBin::Bin;
use CorpusJsonl;
use Digest::MD5 qw(md5_hex);
use Encode ();
use Getopt::Long;

my %o = (name => 'files', root => '', 'max-file' => 0, cap => 0);
GetOptions(\%o, 'name=s', 'root=s', 'max-file=i', 'cap=i', 'html', 'mail', 'man', 'split=s')
  or die "usage: $0 [--name N] [--root DIR] [--max-file B] [--cap B] [--html|--mail|--man] "
  . "[--split RE] < NUL-separated paths\n";
my $root = $o{root};
$root =~ s{/*$}{/} if $root ne '';

my @files;
{
  local $/ = "\0";
  while (my $path = <STDIN>) {
    chomp $path;
    next if $path eq '';
    my $size = -s $path;
    next unless defined $size && -f _;
    next if $o{'max-file'} && $size > $o{'max-file'};
    push @files, [$path, $size];
  }
}
sub rel { my $p = shift; $p =~ s/^\Q$root\E// if $root ne ''; return $p; }
if ($o{cap}) {
  my ($total, @keep) = (0);
  for my $f (sort { $a->[2] cmp $b->[2] } map { [@$_, md5_hex(rel($_->[0]))] } @files) {
    last if $total >= $o{cap};
    push @keep, $f;
    $total += $f->[1];
  }
  @files = @keep;
}
@files = sort { $a->[0] cmp $b->[0] } @files;

my $out = CorpusJsonl->new($o{name});
for my $f (@files) {
  my $path = $f->[0];
  my $text;
  if ($path =~ /\.gz$/) {
    open my $pipe, '-|', 'gzip', '-dc', '--', $path or die "gzip $path: $!";
    binmode $pipe;
    $text = do { local $/; <$pipe> };
    close $pipe or die "gzip -dc $path failed\n";
  } else {
    open my $in, '<:raw', $path or die "$path: $!";
    $text = do { local $/; <$in> };
    close $in;
  }
  if ($o{man}) {
    next if $text =~ /\A(?:[.']\\".*\n|\s*\n)*\.so\s/;  # a link to another page
    # groff's tty output without escape sequences or overstriking, 80 columns, tables by tbl;
    # a page groff cannot render gives no text and is skipped
    # (-k -K utf-8: the page source is UTF-8, whatever the locale)
    my $render = 'gzip -dcf -- "$1" | groff -k -K utf-8 -t -man -Tutf8 -P-cbou -rLL=80n 2>/dev/null';
    open my $pipe, '-|', 'sh', '-c', $render, 'sh', $path or die "groff $path: $!";
    binmode $pipe;
    $text = do { local $/; <$pipe> } // '';
    close $pipe;
    $text =~ s/\n{3,}/\n\n/g;
  }
  $text = strip_html($text) if $o{html};
  $text = mail_text($text) if $o{mail};
  if (defined $o{split}) {
    my $re = qr/$o{split}/m;
    my @starts = (0);
    while ($text =~ /$re/g) { push @starts, $-[0] if $-[0] > 0; }
    push @starts, length $text;
    $out->doc(substr($text, $starts[$_], $starts[$_ + 1] - $starts[$_])) for 0 .. $#starts - 1;
  } else {
    $out->doc($text);
  }
}
$out->finish;

# ---- HTML --------------------------------------------------------------------------------------

my %ENTITY;
BEGIN {
  %ENTITY = (amp => '&', lt => '<', gt => '>', quot => '"', apos => "'", nbsp => 0xa0,
    mdash => 0x2014, ndash => 0x2013, hellip => 0x2026, lsquo => 0x2018, rsquo => 0x2019,
    ldquo => 0x201c, rdquo => 0x201d, copy => 0xa9, reg => 0xae, trade => 0x2122,
    times => 0xd7, minus => 0x2212, bull => 0x2022, middot => 0xb7, laquo => 0xab,
    raquo => 0xbb, larr => 0x2190, rarr => 0x2192, uarr => 0x2191, darr => 0x2193,
    le => 0x2264, ge => 0x2265, ne => 0x2260, deg => 0xb0, para => 0xb6, sect => 0xa7,
    shy => '', zwsp => '');
}
sub entity {
  my ($e) = @_;
  my $cp;
  if ($e =~ /^#[xX]([0-9a-fA-F]+)$/) { $cp = hex $1; }
  elsif ($e =~ /^#(\d+)$/) { $cp = $1; }
  elsif (exists $ENTITY{$e}) {
    return $ENTITY{$e} unless $ENTITY{$e} =~ /^\d+$/;  # a literal, not a code point
    $cp = $ENTITY{$e};
  } else { return "&$e;"; }
  return '' if $cp > 0x10ffff || ($cp >= 0xd800 && $cp < 0xe000);
  return $cp == 0xa0 ? ' ' : Encode::encode('UTF-8', chr $cp);
}

sub flow {  # text outside <pre>: HTML whitespace rules, block tags → line breaks
  my ($h) = @_;
  $h =~ s/\s+/ /g;
  $h =~ s{<(?:br|hr)\b[^>]*>}{\n}gi;
  $h =~ s{</?(?:p|div|h[1-6]|ul|ol|dl|table|tbody|thead|blockquote|section|article|title)\b[^>]*>}{\n\n}gi;
  $h =~ s{</?(?:li|dt|dd|tr|caption)\b[^>]*>}{\n}gi;
  $h =~ s{</t[dh]>}{\t}gi;
  $h =~ s/<[^>]*>//g;
  $h =~ s/ *\n */\n/g;
  return $h;
}

sub strip_html {
  my ($h) = @_;
  $h =~ s/<!--.*?-->//gs;
  $h =~ s{<(head|script|style)\b.*?</\1\s*>}{}gis;
  $h =~ s{<div class="nav(?:header|footer)">.*?</div>}{}gis;  # DocBook navigation bars
  my $text = '';
  while ($h =~ m{\G(.*?)(<pre\b[^>]*>(.*?)</pre\s*>|\z)}gcis) {
    my ($before, $pre) = ($1, $3);
    $text .= flow($before);
    if (defined $pre) {
      $pre =~ s/<[^>]*>//g;
      $text .= "\n\n$pre\n\n";
    }
    last if pos($h) >= length $h;
  }
  $text =~ s/&(#?[0-9A-Za-z]+);/entity($1)/ge;
  $text =~ s/\xc2\xa0/ /g;  # no-break spaces (DocBook puts them after section numbers)
  $text =~ s/[ \t]+\n/\n/g;
  $text =~ s/\n{3,}/\n\n/g;
  return $text;
}

# ---- mail --------------------------------------------------------------------------------------

sub mail_text {
  my ($m) = @_;
  $m =~ s/\r\n?/\n/g;
  my ($head, $body) = split /\n\n/, $m, 2;
  $body //= '';
  $head =~ s/\n[ \t]+/ /g;  # unfold header lines
  my ($subject) = $head =~ /^Subject:[ \t]*(.*)$/mi;
  return defined $subject && $subject ne '' ? "Subject: $subject\n\n$body" : $body;
}
