"""Prepare English text for the masked-LM study (Kobayashi et al. 2020, §5: BERT).

Train: the English side of Europarl v7 (first 20k lines, ~0.5M words); valid: europarl7-dev (English,
``<d>`` markers dropped); test: the first 1,000 sentences of europarl7-test, the sentences analysed.
Punctuation is split off as in the RWTH preparation (BERT's WordPiece also splits it), then a
SentencePiece unigram model is trained and applied, and ``fairseq-preprocess --only-source``
binarises into ``OUT/bin`` (``dict.txt``, ``{train,valid,test}.{bin,idx}``: what ``--task masked_lm`` reads).

    python examples/masked_lm/prepare.py --data ../shared/data --out work/masked_lm
"""
import argparse
import importlib.util
import subprocess
import sys
from pathlib import Path

_RWTH = Path(__file__).resolve().parents[1] / "rwth_alignment" / "prepare.py"
_spec = importlib.util.spec_from_file_location("rwth_prepare", _RWTH)
rwth_prepare = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(rwth_prepare)

SPLITS = {"train": "europarl-v7-head20k.en.gz", "valid": "europarl7-dev.en.gz", "test": "europarl7-test.en.gz"}
TEST_SENTENCES = 1000


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default="../shared/data")
    p.add_argument("--out", default="work/masked_lm")
    p.add_argument("--vocab-size", type=int, default=8000)
    args = p.parse_args()
    data, out = Path(args.data) / "europarl", Path(args.out)
    missing = [name for name in SPLITS.values() if not (data / name).is_file()]
    if missing:
        sys.exit(f"prepare.py: error: {data} lacks {', '.join(missing)} (set --data to the shared data folder)")
    out.mkdir(parents=True, exist_ok=True)
    for split, name in SPLITS.items():
        lines = [rwth_prepare.tokenize(line) for line in rwth_prepare.read_lines(data / name)]
        lines = [line for line in lines if line and line != "<d>"]
        if split == "test":
            lines = lines[:TEST_SENTENCES]
        (out / f"{split}.tok").write_text("\n".join(lines) + "\n", encoding="utf-8")
        print(f"{split}: {len(lines)} sentences, {sum(len(x.split()) for x in lines)} words ({name})")
    import sentencepiece as spm

    spm.SentencePieceTrainer.train(
        input=str(out / "train.tok"), model_prefix=str(out / "spm"), vocab_size=args.vocab_size,
        character_coverage=1.0, model_type="unigram", bos_id=-1, eos_id=-1, unk_id=0, pad_id=-1, minloglevel=2,
    )
    sp = spm.SentencePieceProcessor(model_file=str(out / "spm.model"))
    for split in SPLITS:
        lines = (out / f"{split}.tok").read_text(encoding="utf-8").split("\n")[:-1]
        pieces = [" ".join(sp.encode(line, out_type=str)) for line in lines]
        (out / f"{split}.spm").write_text("\n".join(pieces) + "\n", encoding="utf-8")
    bin_dir = Path(sys.executable).parent
    subprocess.run([str(bin_dir / "fairseq-preprocess"), "--only-source", "--trainpref", str(out / "train.spm"),
                    "--validpref", str(out / "valid.spm"), "--testpref", str(out / "test.spm"),
                    "--destdir", str(out / "bin"), "--workers", "2"], check=True)


if __name__ == "__main__":
    main()
