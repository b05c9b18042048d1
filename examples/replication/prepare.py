"""Prepare the replication corpus: every De-En pair in the shared data usable for training.

Training: Europarl v7 (head 20k, europarl7-dev, europarl7-test; ``<d>`` document markers dropped),
WMT news test sets except newstest2013/2014, Tatoeba, Multi30k train.  Validation: newstest2013.
Tests: newstest2014 (BLEU) and the 508 RWTH gold pairs (BLEU and AER).  Pairs that are empty,
duplicated, or whose German or English side equals an RWTH gold sentence (ignoring case, spacing
and punctuation) are removed.  Text is tokenised like the gold set (punctuation split off) so that
merging SentencePiece pieces at ``▁`` gives back the gold words; one joint SentencePiece model
(10k) and one joined dictionary serve both directions (De→En and En→De read the same binarised
files: fairseq finds ``train.de-en.*`` for ``--source-lang en --target-lang de`` too).

    python examples/replication/prepare.py --data ../shared/data --out work/replication
"""
import argparse
import gzip
import json
import sys
from pathlib import Path

from fairseq_rela.corpus import WMT_NEWS_TRAIN, CorpusError, lines, subword_and_binarise, swap_talp, workers
from fairseq_rela.corpus import gold_key as key
from fairseq_rela.corpus import split_punctuation as tokenize

NEWS_TRAIN = WMT_NEWS_TRAIN


def read_lines(path: Path):
    """A small file's lines (split on \\n only: some files hold U+0085)."""
    return list(lines(path))


EUROPARL = ["europarl-v7-head20k", "europarl7-dev", "europarl7-test"]
NEEDED = ["europarl/europarl-v7-head20k.de.gz", "wmt-news/newstest2013.de.gz", "wmt-news/newstest2014.de.gz",
          "tatoeba/deu-eng.tsv.gz", "multi30k/train.de.gz", "rwth-deen/test.de", "rwth-deen/alignment.talp"]


def tatoeba(path: Path):
    """(German, English) pairs of the manythings.org export (``English<TAB>German[<TAB>attribution]``)."""
    with gzip.open(path, "rt", encoding="utf-8", newline="\n") as f:
        for n, line in enumerate(f, 1):
            cols = line.rstrip("\n").split("\t")
            if len(cols) < 2:
                sys.exit(f"prepare.py: error: {path}:{n}: expected English<TAB>German")
            yield cols[1], cols[0]


def corpus(data: Path):
    """Training pairs by source name, raw."""
    parts = {}
    for name in EUROPARL:
        de, en = read_lines(data / f"europarl/{name}.de.gz"), read_lines(data / f"europarl/{name}.en.gz")
        parts[f"europarl/{name}"] = [(d, e) for d, e in zip(de, en) if not (d == "<d>" and e == "<d>")]
    for name in NEWS_TRAIN:
        parts[f"wmt-news/{name}"] = list(zip(read_lines(data / f"wmt-news/{name}.de.gz"),
                                             read_lines(data / f"wmt-news/{name}.en.gz")))
    parts["tatoeba"] = list(tatoeba(data / "tatoeba/deu-eng.tsv.gz"))
    parts["multi30k/train"] = list(zip(read_lines(data / "multi30k/train.de.gz"), read_lines(data / "multi30k/train.en.gz")))
    for name, pairs in parts.items():
        if not pairs:
            sys.exit(f"prepare.py: error: {data / name}: no pairs read")
    return parts


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default="../shared/data")
    p.add_argument("--out", default="work/replication")
    p.add_argument("--vocab-size", type=int, default=10000)
    p.add_argument("--workers", type=int, help="threads/processes for encoding and binarising (default: every core)")
    args = p.parse_args()
    data, out = Path(args.data), Path(args.out)
    missing = [f for f in NEEDED if not (data / f).is_file()]
    if missing:
        sys.exit(f"prepare.py: error: {data} lacks {', '.join(missing)} (set --data to the shared data folder)")
    out.mkdir(parents=True, exist_ok=True)
    gold_de, gold_en = read_lines(data / "rwth-deen/test.de"), read_lines(data / "rwth-deen/test.en")
    gold_keys = {key(s) for s in gold_de + gold_en}

    seen, kept, report = set(), [], {}
    for name, pairs in corpus(data).items():
        n_kept = 0
        for de, en in pairs:
            de, en = de.strip(), en.strip()
            if not de or not en or key(de) in gold_keys or key(en) in gold_keys or (de, en) in seen:
                continue
            seen.add((de, en))
            kept.append((de, en))
            n_kept += 1
        report[name] = {"read": len(pairs), "kept": n_kept}
    report["total"] = {"read": sum(r["read"] for r in report.values()), "kept": len(kept)}
    print(f"train: {report['total']['read']} pairs read, {len(kept)} kept (empty, duplicate or RWTH gold removed)")
    (out / "corpus.json").write_text(json.dumps(report, indent=1) + "\n")

    gold = read_lines(data / "rwth-deen/alignment.talp")
    (out / "alignment.talp").write_text("\n".join(gold) + "\n", encoding="utf-8")
    (out / "alignment.en-de.talp").write_text("\n".join(map(swap_talp, gold)) + "\n", encoding="utf-8")
    news = lambda name: list(zip(read_lines(data / f"wmt-news/{name}.de.gz"), read_lines(data / f"wmt-news/{name}.en.gz")))
    splits = {"train": kept, "valid": news("newstest2013"), "newstest2014": news("newstest2014"),
              "rwth": list(zip(gold_de, gold_en))}
    for split, rows in splits.items():
        for i, lang in enumerate(("de", "en")):
            text = [r[i] if split == "rwth" else tokenize(r[i]) for r in rows]
            (out / f"{split}.tok.{lang}").write_text("\n".join(text) + "\n", encoding="utf-8")
            if split == "newstest2014":
                (out / f"{split}.raw.{lang}").write_text("\n".join(r[i] for r in rows) + "\n", encoding="utf-8")

    subword_and_binarise(out, list(splits), args.vocab_size, ["newstest2014", "rwth"], workers(args.workers))
    print(f"binarised data in {out / 'bin'}: test = newstest2014 (3,003 pairs), test1 = the 508 RWTH pairs")


if __name__ == "__main__":
    try:
        main()
    except CorpusError as err:
        sys.exit(f"prepare.py: error: {err}")
