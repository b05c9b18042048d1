"""Prepare English text for the masked-LM study (Kobayashi et al. 2020, §5: BERT).

Train: the English side of Europarl v7 (first 20k lines, ~0.5M words); valid: europarl7-dev (English,
``<d>`` markers dropped); test: the first 1,000 sentences of europarl7-test, the sentences analysed.
Punctuation is split off as in the RWTH preparation (BERT's WordPiece also splits it), then a
SentencePiece unigram model is trained and applied, and ``fairseq-preprocess --only-source``
binarises into ``OUT/bin`` (``dict.txt``, ``{train,valid,test}.{bin,idx}``: what ``--task masked_lm`` reads).

    python examples/masked_lm/prepare.py --data ../shared/data --out work/masked_lm
"""
import argparse
import itertools
import sys
from pathlib import Path

from fairseq_rela import corpus

SPLITS = {"train": "europarl-v7-head20k.en.gz", "valid": "europarl7-dev.en.gz", "test": "europarl7-test.en.gz"}
TEST_SENTENCES = 1000


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default="../shared/data")
    p.add_argument("--out", default="work/masked_lm")
    p.add_argument("--vocab-size", type=int, default=8000)
    p.add_argument("--workers", type=int, help="threads/processes for encoding and binarising (default: every core)")
    args = p.parse_args()
    data, out = Path(args.data) / "europarl", Path(args.out)
    missing = [name for name in SPLITS.values() if not (data / name).is_file()]
    if missing:
        sys.exit(f"prepare.py: error: {data} lacks {', '.join(missing)} (set --data to the shared data folder)")
    threads = corpus.workers(args.workers)
    out.mkdir(parents=True, exist_ok=True)
    for split, name in SPLITS.items():
        lines = (corpus.split_punctuation(line) for line in corpus.lines(data / name))
        lines = (line for line in lines if line and line != "<d>")
        if split == "test":
            lines = itertools.islice(lines, TEST_SENTENCES)
        words = []
        n = corpus.write_lines((words.append(len(x.split())) or x for x in lines), out / f"{split}.tok")
        print(f"{split}: {n} sentences, {sum(words)} words ({name})")
    sp = corpus.train_sentencepiece([out / "train.tok"], out / "spm", args.vocab_size, sample=10_000_000)
    for split in SPLITS:
        corpus.encode_file(sp, out / f"{split}.tok", out / f"{split}.spm", threads)
    corpus.preprocess(["--only-source", "--trainpref", str(out / "train.spm"), "--validpref", str(out / "valid.spm"),
                       "--testpref", str(out / "test.spm"), "--destdir", str(out / "bin")], threads)


if __name__ == "__main__":
    try:
        main()
    except corpus.CorpusError as err:
        sys.exit(f"prepare.py: error: {err}")
