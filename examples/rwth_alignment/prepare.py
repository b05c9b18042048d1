"""Prepare De->En training data for the RWTH alignment experiment.

Training text: Europarl v7 (first 20k pairs) + WMT news test sets 2008-2012, 2015-2019; validation:
newstest2013.  Pairs whose German or English side equals an RWTH gold sentence (ignoring case,
spacing and punctuation) are removed, as Kobayashi et al. did.  Text is tokenised like the gold set
(punctuation split off), then a joint SentencePiece model is trained and applied, so that merging
subwords at ``▁`` boundaries gives back exactly the gold set's words.

    python examples/rwth_alignment/prepare.py --data ../shared/data --out work/rwth
"""
import argparse
import gzip
import re
import subprocess
import sys
import unicodedata
from pathlib import Path

NEWS_TRAIN = ["news-test2008", "newssyscomb2009", "newstest2009", "newstest2010", "newstest2011", "newstest2012",
              "newstest2015", "newstest2016", "newstest2017", "newstest2018", "newstest2019"]
_PUNCT = re.compile(r"""([.,!?;:"()\[\]{}«»„“”]|(?<=\s)'|'(?=\s)|^'|'$)""")


def read_lines(path: Path):
    """Lines split on \\n only (some files hold U+0085, which str.splitlines() would break on)."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8", newline="\n") as f:
        return [line.rstrip("\n").rstrip("\r") for line in f]


def tokenize(line: str) -> str:
    return " ".join(_PUNCT.sub(r" \1 ", line).split())


def swap_talp(line: str) -> str:
    """A talp gold line with each link's two indices swapped (``3-5 2p4`` -> ``5-3 4p2``): the En-De gold."""
    links = []
    for link in line.split():
        sep = "p" if "p" in link else "-"
        i, j = link.split(sep)
        links.append(f"{j}{sep}{i}")
    return " ".join(links)


def key(line: str) -> str:
    return "".join(c for c in line.lower() if unicodedata.category(c)[0] in "LN")


def subword_and_binarise(out: Path, splits, vocab_size: int, tests) -> None:
    """Train a joint SentencePiece model on ``out/train.tok.{de,en}``, apply it to every split's
    ``{split}.tok.*`` and binarise (joined dictionary) into ``out/bin``: ``tests`` become test, test1, ..."""
    import sentencepiece as spm

    spm.SentencePieceTrainer.train(
        input=[str(out / "train.tok.de"), str(out / "train.tok.en")], model_prefix=str(out / "spm"),
        vocab_size=vocab_size, character_coverage=1.0, model_type="unigram", input_sentence_size=2_000_000,
        shuffle_input_sentence=True, bos_id=-1, eos_id=-1, unk_id=0, pad_id=-1, minloglevel=2,
    )
    sp = spm.SentencePieceProcessor(model_file=str(out / "spm.model"))
    for split in splits:
        for lang in ("de", "en"):
            lines = (out / f"{split}.tok.{lang}").read_text(encoding="utf-8").split("\n")[:-1]
            pieces = [" ".join(sp.encode(line, out_type=str)) for line in lines]
            (out / f"{split}.spm.{lang}").write_text("\n".join(pieces) + "\n", encoding="utf-8")
    bin_dir = Path(sys.executable).parent
    subprocess.run([str(bin_dir / "fairseq-preprocess"), "--source-lang", "de", "--target-lang", "en",
                    "--trainpref", str(out / "train.spm"), "--validpref", str(out / "valid.spm"),
                    "--testpref", ",".join(str(out / f"{t}.spm") for t in tests), "--destdir", str(out / "bin"),
                    "--joined-dictionary", "--workers", "2"], check=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default="../shared/data")
    p.add_argument("--out", default="work/rwth")
    p.add_argument("--vocab-size", type=int, default=10000)
    args = p.parse_args()
    data, out = Path(args.data), Path(args.out)
    missing = [d for d in ("europarl", "wmt-news", "rwth-deen") if not (data / d).is_dir()]
    if missing:
        sys.exit(f"prepare.py: error: {data} lacks {', '.join(missing)} (set --data to the shared data folder)")
    out.mkdir(parents=True, exist_ok=True)
    gold_de, gold_en = read_lines(data / "rwth-deen/test.de"), read_lines(data / "rwth-deen/test.en")
    gold_keys = {key(s) for s in gold_de + gold_en}

    pairs = list(zip(read_lines(data / "europarl/europarl-v7-head20k.de.gz"),
                     read_lines(data / "europarl/europarl-v7-head20k.en.gz")))
    for name in NEWS_TRAIN:
        pairs += zip(read_lines(data / f"wmt-news/{name}.de.gz"), read_lines(data / f"wmt-news/{name}.en.gz"))
    kept = [(de, en) for de, en in pairs
            if de.strip() and en.strip() and key(de) not in gold_keys and key(en) not in gold_keys]
    print(f"train: {len(pairs)} pairs read, {len(pairs) - len(kept)} removed (empty or in the RWTH gold set), "
          f"{len(kept)} kept")
    valid = list(zip(read_lines(data / "wmt-news/newstest2013.de.gz"), read_lines(data / "wmt-news/newstest2013.en.gz")))
    splits = {"train": kept, "valid": valid, "rwth": list(zip(gold_de, gold_en))}
    for split, rows in splits.items():
        for i, lang in enumerate(("de", "en")):
            text = [r[i] if split == "rwth" else tokenize(r[i]) for r in rows]
            (out / f"{split}.tok.{lang}").write_text("\n".join(text) + "\n", encoding="utf-8")

    gold = read_lines(data / "rwth-deen/alignment.talp")  # and its mirror, for the En->De models
    (out / "alignment.en-de.talp").write_text("\n".join(map(swap_talp, gold)) + "\n", encoding="utf-8")
    subword_and_binarise(out, list(splits), args.vocab_size, ["rwth"])
    print(f"binarised data in {out / 'bin'} (test = the 508 RWTH pairs)")


if __name__ == "__main__":
    main()
