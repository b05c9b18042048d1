"""Prepare De->En training data for the RWTH alignment experiment.

Training text: Europarl v7 (first 20k pairs) + WMT news test sets 2008-2012, 2015-2019; validation:
newstest2013.  Pairs whose German or English side equals an RWTH gold sentence (ignoring case,
spacing and punctuation) are removed, as Kobayashi et al. did.  Text is tokenised like the gold set
(punctuation split off), then a joint SentencePiece model is trained and applied, so that merging
subwords at ``▁`` boundaries gives back exactly the gold set's words.

    python examples/rwth_alignment/prepare.py --data ../shared/data --out work/rwth
"""
import argparse
import itertools
import sys
from pathlib import Path

from fairseq_rela import corpus

NEWS_TRAIN = corpus.WMT_NEWS_TRAIN
tokenize = corpus.split_punctuation


def read_lines(path: Path):
    """A small file's lines (split on \\n only: some files hold U+0085)."""
    return list(corpus.lines(path))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default="../shared/data")
    p.add_argument("--out", default="work/rwth")
    p.add_argument("--vocab-size", type=int, default=10000)
    p.add_argument("--workers", type=int, help="threads/processes for encoding and binarising (default: every core)")
    args = p.parse_args()
    data, out = Path(args.data), Path(args.out)
    missing = [d for d in ("europarl", "wmt-news", "rwth-deen") if not (data / d).is_dir()]
    if missing:
        sys.exit(f"prepare.py: error: {data} lacks {', '.join(missing)} (set --data to the shared data folder)")
    out.mkdir(parents=True, exist_ok=True)
    gold_de, gold_en = list(corpus.lines(data / "rwth-deen/test.de")), list(corpus.lines(data / "rwth-deen/test.en"))
    gold_keys = {corpus.gold_key(s) for s in gold_de + gold_en}

    sources = [(data / "europarl/europarl-v7-head20k.de.gz", data / "europarl/europarl-v7-head20k.en.gz")]
    sources += [(data / f"wmt-news/{name}.de.gz", data / f"wmt-news/{name}.en.gz") for name in NEWS_TRAIN]
    counts = {}
    kept = corpus.filtered(itertools.chain.from_iterable(corpus.parallel(*f) for f in sources),
                           lambda de, en: bool(de.strip() and en.strip()) and corpus.gold_key(de) not in gold_keys
                           and corpus.gold_key(en) not in gold_keys, counts)
    tok = corpus.split_punctuation
    n = corpus.write_pairs(((tok(de), tok(en)) for de, en in kept), out / "train.tok.de", out / "train.tok.en")
    print(f"train: {counts['read']} pairs read, {counts['dropped']} removed (empty or in the RWTH gold set), {n} kept")
    valid = corpus.parallel(data / "wmt-news/newstest2013.de.gz", data / "wmt-news/newstest2013.en.gz")
    corpus.write_pairs(((tok(de), tok(en)) for de, en in valid), out / "valid.tok.de", out / "valid.tok.en")
    corpus.write_pairs(zip(gold_de, gold_en), out / "rwth.tok.de", out / "rwth.tok.en")  # tokenised already
    splits = ["train", "valid", "rwth"]

    gold = corpus.lines(data / "rwth-deen/alignment.talp")  # and its mirror, for the En->De models
    corpus.write_lines(map(corpus.swap_talp, gold), out / "alignment.en-de.talp")
    corpus.subword_and_binarise(out, splits, args.vocab_size, ["rwth"], corpus.workers(args.workers))
    print(f"binarised data in {out / 'bin'} (test = the 508 RWTH pairs)")


if __name__ == "__main__":
    try:
        main()
    except corpus.CorpusError as err:
        sys.exit(f"prepare.py: error: {err}")
