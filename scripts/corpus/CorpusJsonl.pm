# Shared helpers of the corpus extractors in scripts/corpus/ (core Perl only):
#   clean_text(BYTES)   -> valid UTF-8 bytes: invalid bytes are read as Windows-1252 (the usual
#                          culprit in old text files), CR LF / CR become LF, control characters
#                          other than TAB and LF are dropped, trailing blank lines are trimmed.
#   CorpusJsonl->new(NAME) writes {"text": ...} lines to STDOUT, one per document, and prints
#                          "NAME: N documents, X MB" to STDERR at finish() (and, if the
#                          environment names a file in CORPUS_STATS, documents=N and
#                          text_bytes=B lines into it).
# The JSON is escaped by hand on the UTF-8 bytes (the tokenizer's nlohmann::json parser accepts raw
# UTF-8 in strings); this is much faster than JSON::PP on hundreds of MB.
package CorpusJsonl;
use strict;
use warnings;
use Encode ();
use Exporter 'import';
our @EXPORT_OK = qw(clean_text json_string);

my %ESC = ("\"" => "\\\"", "\\" => "\\\\", "\n" => "\\n", "\t" => "\\t");

sub json_string {
  my ($s) = @_;
  $s =~ s/(["\\\n\t])/$ESC{$1}/g;
  $s =~ s/([\x00-\x1f\x7f])/sprintf('\\u%04x', ord $1)/ge;  # none left after clean_text
  return "\"$s\"";
}

# Valid UTF-8 stays byte-for-byte; each invalid byte is decoded as Windows-1252.
sub to_utf8 {
  my ($bytes) = @_;
  return $bytes unless $bytes =~ /[\x80-\xff]/;
  my $rest = $bytes;
  my $chars = Encode::decode('UTF-8', $rest, Encode::FB_QUIET);
  return $bytes if $rest eq '';
  my $out = $chars;
  while ($rest ne '') {
    $out .= Encode::decode('cp1252', substr($rest, 0, 1, ''));  # U+FFFD for its 5 holes
    $out .= Encode::decode('UTF-8', $rest, Encode::FB_QUIET);
  }
  return Encode::encode('UTF-8', $out);
}

sub clean_text {
  my ($s) = @_;
  $s = to_utf8($s);
  $s =~ s/\r\n?/\n/g;
  $s =~ s/\f/\n/g;
  $s =~ tr/\x00-\x08\x0b\x0e-\x1f\x7f//d;
  $s =~ s/^\xef\xbb\xbf//;      # a byte-order mark
  $s =~ s/[ \t]*\n[\s]*\z/\n/;  # one final newline, no trailing blank lines
  return $s;
}

sub new {
  my ($class, $name) = @_;
  binmode STDOUT;
  return bless { name => $name, docs => 0, bytes => 0 }, $class;
}

# Writes one document (cleaned first); whitespace-only documents are skipped. Returns 1 if written.
sub doc {
  my ($self, $text) = @_;
  $text = clean_text($text);
  $text =~ s/\A\s*\n//;  # leading blank lines
  return 0 unless $text =~ /\S/;
  print STDOUT '{"text": ', json_string($text), "}\n" or die "write: $!";
  $self->{docs}++;
  $self->{bytes} += length $text;
  return 1;
}

sub finish {
  my ($self) = @_;
  close STDOUT or die "write: $!";
  printf STDERR "%s: %d documents, %.1f MB of text\n", $self->{name}, $self->{docs},
    $self->{bytes} / 1e6;
  if (my $stats = $ENV{CORPUS_STATS}) {  # for the caller's records (prepare_corpus.sh)
    open my $fh, '>', $stats or die "$stats: $!";
    print $fh "documents=$self->{docs}\ntext_bytes=$self->{bytes}\n";
    close $fh or die "$stats: $!";
  }
}

1;
