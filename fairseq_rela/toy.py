"""A synthetic parallel corpus with known word alignments, for demos and tests.

Source words ``w0..w{V-1}`` translate one-to-one to ``W0..W{V-1}`` and the target reverses the
word order, so the gold alignment of a pair of length n is ``i-(n-1-i)`` (written 0-based,
Pharaoh order, to ``{split}.align``).  A model that learns the task must attend crosswise.

    python -m fairseq_rela.toy OUTDIR
"""
import argparse
import random
from pathlib import Path

SPLITS = (("train", 2000), ("valid", 60), ("test", 41))  # 41: not a multiple of fairseq's batch multiple


def write_toy_corpus(directory: Path, seed: int = 0, vocab_size: int = 30, splits=SPLITS) -> None:
    """Write ``{split}.src``, ``{split}.tgt`` and ``{split}.align`` under ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(vocab_size)]
    for split, n in splits:
        with open(directory / f"{split}.src", "w") as fs, open(directory / f"{split}.tgt", "w") as ft, \
                open(directory / f"{split}.align", "w") as fa:
            for _ in range(n):
                src = [rng.choice(vocab) for _ in range(rng.randint(3, 9))]
                fs.write(" ".join(src) + "\n")
                ft.write(" ".join(w.upper() for w in reversed(src)) + "\n")
                fa.write(" ".join(f"{i}-{len(src) - 1 - i}" for i in range(len(src))) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("outdir")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    write_toy_corpus(Path(args.outdir), seed=args.seed)


if __name__ == "__main__":
    main()
