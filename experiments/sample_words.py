#!/usr/bin/env python3
"""How many words of a model's samples are real words: the share of the alphabetic words in the text
that `unipool sample` printed which occur at least --min-count times in the bundled corpus's sources
(data_cache/corpus/raw/*.jsonl, built by scripts/prepare_corpus.sh). The README's claim "samples
mostly of real words" is this share above one half; docs/zero-gate.md records the measured values.

Usage:
  build/unipool sample --checkpoint runs/tiny --prompt "The history of" ... > samples.txt
  experiments/sample_words.py samples.txt [--corpus data_cache/corpus/raw] [--min-count 3]

The `unipool sample` banner and footer lines are skipped; the prompts count like the rest (pass the
samples without them if that matters). Words are maximal runs of ASCII letters, compared lower-case.
"""
import argparse
import collections
import json
import pathlib
import re
import sys

WORD = re.compile(r"[A-Za-z]+")
SKIP = ("unipool sample", "--- sample", "---", "== samples")


def corpus_words(raw_dir: pathlib.Path) -> collections.Counter:
    counts: collections.Counter = collections.Counter()
    files = sorted(raw_dir.glob("*.jsonl"))
    if not files:
        sys.exit(f"sample_words: no *.jsonl under {raw_dir} (run scripts/prepare_corpus.sh)")
    for path in files:
        with open(path, encoding="utf-8") as f:
            for line in f:
                text = json.loads(line).get("text", "")
                counts.update(w.lower() for w in WORD.findall(text))
    return counts


def sample_text(path: str) -> str:
    stream = sys.stdin if path == "-" else open(path, encoding="utf-8", errors="replace")
    kept = []
    for line in stream:
        if line.startswith(SKIP) or re.match(r"^\d+ tokens in ", line):
            continue
        kept.append(line)
    return "".join(kept)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("samples", help="text printed by unipool sample ('-' = stdin)")
    parser.add_argument("--corpus", default="data_cache/corpus/raw", type=pathlib.Path)
    parser.add_argument("--min-count", default=3, type=int)
    parser.add_argument("--show", action="store_true", help="list the words not found")
    args = parser.parse_args()

    vocab = corpus_words(args.corpus)
    words = [w.lower() for w in WORD.findall(sample_text(args.samples))]
    if not words:
        sys.exit("sample_words: the samples hold no words")
    real = [w for w in words if vocab[w] >= args.min_count]
    print(f"real words: {len(real)}/{len(words)} = {100.0 * len(real) / len(words):.1f}% "
          f"(found at least {args.min_count} times in {args.corpus})")
    if args.show:
        print("not found:", " ".join(w for w in words if vocab[w] < args.min_count))


if __name__ == "__main__":
    main()
