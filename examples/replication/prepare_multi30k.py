"""Prepare Multi30k De-En (task 1) for the CPU-scale replication: raw true-case text, one joint
SentencePiece model, one joined dictionary; valid = val (1,014 pairs), test = test_2016_flickr (1,000).

The text is not pre-tokenised: ``fairseq-generate --post-process sentencepiece`` then gives raw text
that SacreBLEU scores against the raw references with its own tokeniser (13a).

    python examples/replication/prepare_multi30k.py --data ../shared/data --out work/multi30k
"""
import argparse
import importlib.util
import sys
from pathlib import Path

_RWTH = Path(__file__).resolve().parents[1] / "rwth_alignment" / "prepare.py"
_spec = importlib.util.spec_from_file_location("rwth_prepare", _RWTH)
rwth_prepare = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(rwth_prepare)

SPLITS = {"train": "train", "valid": "val", "test": "test_2016_flickr"}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default="../shared/data")
    p.add_argument("--out", default="work/multi30k")
    p.add_argument("--vocab-size", type=int, default=8000)
    args = p.parse_args()
    data, out = Path(args.data) / "multi30k", Path(args.out)
    missing = [f"{name}.{lang}.gz" for name in SPLITS.values() for lang in ("de", "en")
               if not (data / f"{name}.{lang}.gz").is_file()]
    if missing:
        sys.exit(f"prepare_multi30k.py: error: {data} lacks {', '.join(missing)} (set --data to the shared data folder)")
    out.mkdir(parents=True, exist_ok=True)
    for split, name in SPLITS.items():
        de, en = (rwth_prepare.read_lines(data / f"{name}.{lang}.gz") for lang in ("de", "en"))
        if len(de) != len(en):
            sys.exit(f"prepare_multi30k.py: error: {data}/{name}: {len(de)} German vs {len(en)} English lines")
        for lang, lines in (("de", de), ("en", en)):
            text = "\n".join(" ".join(line.split()) for line in lines) + "\n"
            (out / f"{split}.tok.{lang}").write_text(text, encoding="utf-8")  # what SentencePiece reads
            (out / f"{split}.raw.{lang}").write_text(text, encoding="utf-8")  # the BLEU references
        print(f"{split}: {len(de)} pairs ({name})")
    rwth_prepare.subword_and_binarise(out, ["train", "valid", "test"], args.vocab_size, ["test"])


if __name__ == "__main__":
    main()
