"""Prepare Multi30k De-En (task 1) for the CPU-scale replication: raw true-case text, one joint
SentencePiece model, one joined dictionary; valid = val (1,014 pairs), test = test_2016_flickr (1,000).

The text is not pre-tokenised: ``fairseq-generate --post-process sentencepiece`` then gives raw text
that SacreBLEU scores against the raw references with its own tokeniser (13a).

    python examples/replication/prepare_multi30k.py --data ../shared/data --out work/multi30k
"""
import argparse
import sys
from pathlib import Path

from fairseq_rela import corpus

SPLITS = {"train": "train", "valid": "val", "test": "test_2016_flickr"}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default="../shared/data")
    p.add_argument("--out", default="work/multi30k")
    p.add_argument("--vocab-size", type=int, default=8000)
    p.add_argument("--workers", type=int, help="threads/processes for encoding and binarising (default: every core)")
    args = p.parse_args()
    data, out = Path(args.data) / "multi30k", Path(args.out)
    missing = [f"{name}.{lang}.gz" for name in SPLITS.values() for lang in ("de", "en")
               if not (data / f"{name}.{lang}.gz").is_file()]
    if missing:
        sys.exit(f"prepare_multi30k.py: error: {data} lacks {', '.join(missing)} (set --data to the shared data folder)")
    out.mkdir(parents=True, exist_ok=True)
    for split, name in SPLITS.items():
        pairs = ((" ".join(de.split()), " ".join(en.split()))
                 for de, en in corpus.parallel(data / f"{name}.de.gz", data / f"{name}.en.gz"))
        n = corpus.write_pairs(pairs, out / f"{split}.tok.de", out / f"{split}.tok.en")  # what SentencePiece reads
        for lang in ("de", "en"):  # the BLEU references: the same text
            corpus.write_lines(corpus.lines(out / f"{split}.tok.{lang}"), out / f"{split}.raw.{lang}")
        print(f"{split}: {n} pairs ({name})")
    corpus.subword_and_binarise(out, ["train", "valid", "test"], args.vocab_size, ["test"], corpus.workers(args.workers))


if __name__ == "__main__":
    try:
        main()
    except corpus.CorpusError as err:
        sys.exit(f"prepare_multi30k.py: error: {err}")
