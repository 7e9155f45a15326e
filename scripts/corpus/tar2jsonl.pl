#!/usr/bin/perl
# A tar stream on stdin → JSONL on stdout, one document per selected regular file, in archive
# order. Nothing is written to disk: `dpkg-deb --fsys-tarfile X.deb | tar2jsonl.pl ...` reads a
# package's files straight from the .deb (and `xz -dc linux.tar.xz | tar2jsonl.pl` a source tree).
# Understands ustar, GNU long names (type L) and pax headers (type x; path=).
# Options (the path tested is the archive path without a leading "./"):
#   --match REGEX     take the files whose path matches (required)
#   --exclude REGEX   but not those whose path matches this (repeatable)
#   --max-file BYTES  skip files larger than this
#   --sample FRAC     keep a file only if the MD5 of its path, read as a fraction of 2^32, is
#                     below FRAC: a deterministic sample of about FRAC of the files
#   --cap BYTES       stop once this many bytes of files are taken
#   --name NAME       the source name in the summary line
# Usage: dpkg-deb --fsys-tarfile X.deb | tar2jsonl.pl --match '\.go$' [OPTIONS] > out.jsonl
use strict;
use warnings;
use FindBin;
use lib $FindBin::Bin;
use CorpusJsonl;
use Digest::MD5 qw(md5);
use Getopt::Long;

my (%o, @exclude);
$o{name} = 'tar';
GetOptions(\%o, 'match=s', 'exclude=s' => \@exclude, 'max-file=i', 'sample=f', 'cap=i', 'name=s')
  && defined $o{match} && !@ARGV
  or die "usage: $0 --match RE [--exclude RE]... [--max-file B] [--sample F] [--cap B] "
  . "[--name N] < archive.tar\n";
my $match = qr/$o{match}/;
my @excl = map { qr/$_/ } @exclude;

binmode STDIN;
my $out = CorpusJsonl->new($o{name});
my ($taken, $long_name, $pax_path) = (0, undef, undef);

sub read_exact {
  my ($n) = @_;
  my $buf = '';
  while (length($buf) < $n) {
    my $got = read(STDIN, $buf, $n - length($buf), length $buf);
    die "tar2jsonl: read error: $!\n" unless defined $got;
    die "tar2jsonl: truncated archive\n" if $got == 0;
  }
  return $buf;
}
sub skip_bytes {
  my ($n) = @_;
  while ($n > 0) {
    my $chunk = $n > (1 << 20) ? (1 << 20) : $n;
    read_exact($chunk);
    $n -= $chunk;
  }
}
sub octal_field {
  my ($f) = @_;
  if (ord($f) & 0x80) {  # GNU base-256 for big sizes
    my $n = ord($f) & 0x7f;
    $n = $n * 256 + ord($_) for split //, substr($f, 1);
    return $n;
  }
  $f =~ s/[\0 ]+$//;
  $f =~ s/^[\0 ]+//;
  return $f eq '' ? 0 : oct $f;
}
sub cstr { my ($s) = @_; $s =~ s/\0.*//s; return $s; }

while (1) {
  my $h = read_exact(512);
  if ($h =~ /\A\0{512}\z/) {  # end of archive: read the rest (padding), so the writer gets no SIGPIPE
    1 while read(STDIN, my $rest, 1 << 16);
    last;
  }
  my $size = octal_field(substr($h, 124, 12));
  my $type = substr($h, 156, 1);
  my $padded = ($size + 511) & ~511;
  if ($type eq 'L') {  # GNU long name of the next entry
    $long_name = cstr(substr(read_exact($padded), 0, $size));
    next;
  }
  if ($type eq 'x') {  # pax extended header of the next entry
    my $data = substr(read_exact($padded), 0, $size);
    $pax_path = $1 while $data =~ /^\d+ path=([^\n]*)\n/mg;
    next;
  }
  my $path = cstr(substr($h, 0, 100));
  if (substr($h, 257, 5) eq 'ustar') {
    my $prefix = cstr(substr($h, 345, 155));
    $path = "$prefix/$path" if $prefix ne '';
  }
  $path = $long_name if defined $long_name;
  $path = $pax_path if defined $pax_path;
  ($long_name, $pax_path) = (undef, undef);
  $path =~ s{^\./}{};

  my $want = ($type eq '0' || $type eq "\0") && $path =~ $match
    && !grep { $path =~ $_ } @excl;
  $want &&= !($o{'max-file'} && $size > $o{'max-file'});
  $want &&= !(defined $o{cap} && $taken >= $o{cap});
  $want &&= unpack('N', md5($path)) < $o{sample} * 4294967296 if defined $o{sample};
  if ($want) {
    my $text = substr(read_exact($padded), 0, $size);
    $taken += $size;
    $out->doc($text);
  } else {
    skip_bytes($padded);
  }
}
$out->finish;
