"""Bidirectional attention alignment: symmetrise a De->En and an En->De model's links, layer by layer.

    python examples/rwth_alignment/bidirectional.py FORWARD BACKWARD --gold GOLD [--out DIR]

FORWARD and BACKWARD are ``fairseq-rela-analyze --write-links`` output folders of the two directions'
models on the same sentences (``links/SOURCE-SHIFT-L{layer}.txt``, 0-based; BACKWARD's links are
target-source and are reversed here).  For every configuration both folders have, the two directions
are combined with each heuristic of :mod:`fairseq_rela.alignment.symmetrize` (grow-diag-final-and as
in Chen et al. 2020, grow-diag, intersection, union) and scored against GOLD (source-target talp,
1-based); so is the pair of each direction's best configuration.  The forward folder's eflomal
baselines (``alignment.json``) are copied beside them; where that analysis ran without eflomal,
``--eflomal-train PREFIX --eflomal-test PREFIX --langs SRC TGT`` trains it here on the word-level text
``PREFIX.SRC``/``PREFIX.TGT`` (the test text in the gold's order) and scores it the same way.  Writes
``DIR/bidirectional.json`` and ``DIR/bidirectional.md``.  The same combination for one file pair is
``fairseq-rela-symmetrize --forward F --backward B`` then ``fairseq-rela-aer``.
"""
import argparse
import json
import re
import sys
from pathlib import Path
from typing import Dict, List, Set, Tuple

from fairseq_rela.alignment.aer import AlignmentFileError, alignment_error_rate, read_gold, read_hypothesis
from fairseq_rela.alignment.io import read_lines
from fairseq_rela.alignment.symmetrize import METHODS
from fairseq_rela.cli.files import write_json, write_text

LINK_FILE = re.compile(r"(?P<source>\w+(?:-\w+)*)-(?P<shift>AW[IO])-L(?P<layer>\d+)\.txt")  # rollout-alti-AWO-L2
COLUMNS = ("forward", "backward", "intersection", "grow-diag", "grow-diag-final-and", "union")
Links = List[Set[Tuple[int, int]]]


def fail(message: str):
    raise SystemExit(f"bidirectional.py: error: {message}")


def read_links(folder: Path, reverse: bool, sentences: int) -> Dict[str, Links]:
    """Every ``links/*.txt`` of an analysis folder, by configuration name (``norms-AWO-L2``)."""
    files = sorted(f for f in (folder / "links").glob("*.txt") if LINK_FILE.fullmatch(f.name)) \
        if (folder / "links").is_dir() else []
    if not files:
        fail(f"{folder}: no links/SOURCE-SHIFT-L<layer>.txt (run fairseq-rela-analyze with --write-links)")
    out = {}
    for f in files:
        links = read_hypothesis(str(f), base=0, reverse=reverse)
        if len(links) != sentences:
            fail(f"{f}: {len(links)} sentences, but the gold alignment has {sentences}")
        out[f.stem] = links
    return out


def check_eflomal_text(train: str, test: str, langs: List[str], sentences: int):
    """The eflomal text (train source, train target, test source, test target), checked before training."""
    text = []
    for prefix in (train, test):
        sides = [read_lines(f"{prefix}.{lang}") for lang in langs]
        if len(sides[0]) != len(sides[1]):
            fail(f"{prefix}.{langs[0]} has {len(sides[0])} lines but {prefix}.{langs[1]} has {len(sides[1])}")
        text += sides
    if len(text[2]) != sentences:
        fail(f"{test}.{langs[0]}: {len(text[2])} sentences, but the gold alignment has {sentences}")
    return text


def score(gold, links: Links) -> dict:
    return alignment_error_rate(gold, links).as_dict()


def symmetrised(gold, forward: Links, backward: Links) -> Dict[str, dict]:
    """The two directions alone and every heuristic's combination, scored."""
    row = {"forward": score(gold, forward), "backward": score(gold, backward)}
    for name, method in METHODS.items():
        row[name] = score(gold, [method(f, b) for f, b in zip(forward, backward)])
    return row


def table(configs: Dict[str, Dict[str, dict]]) -> List[str]:
    lines = ["| configuration | " + " | ".join(COLUMNS) + " | grow-diag-final-and P / R |",
             "|---|" + "---|" * (len(COLUMNS) + 1)]
    for name, row in configs.items():
        g = row["grow-diag-final-and"]
        lines.append(f"| {name} | " + " | ".join(f"{100 * row[c]['aer']:.1f}" for c in COLUMNS)
                     + f" | {100 * g['precision']:.1f} / {100 * g['recall']:.1f} |")
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("forward", help="fairseq-rela-analyze --write-links folder of the source->target model")
    p.add_argument("backward", help="the same of the target->source model (its links are reversed here)")
    p.add_argument("--gold", required=True, help="source-target talp gold alignment of the sentences")
    p.add_argument("--gold-base", type=int, choices=[0, 1], default=1, help="index base of --gold (default 1)")
    p.add_argument("--out", default=None, help="folder for bidirectional.json/.md (default: only print)")
    p.add_argument("--eflomal-train", default=None, metavar="PREFIX",
                   help="word-level training text PREFIX.{SRC,TGT} for an eflomal baseline (with --eflomal-test, --langs)")
    p.add_argument("--eflomal-test", default=None, metavar="PREFIX", help="word-level text of the gold's sentences")
    p.add_argument("--langs", nargs=2, default=None, metavar=("SRC", "TGT"), help="the language suffixes of the eflomal text")
    args = p.parse_args()
    forward_dir, backward_dir = Path(args.forward), Path(args.backward)
    eflomal_args = (args.eflomal_train, args.eflomal_test, args.langs)
    if any(x is not None for x in eflomal_args) and not all(x is not None for x in eflomal_args):
        fail("--eflomal-train, --eflomal-test and --langs go together")
    if args.eflomal_train:
        try:
            import eflomal  # noqa: F401  (an optional extra: fairseq-rela[align])
        except ImportError:
            fail("--eflomal-train needs the eflomal package (pip install eflomal)")
    try:
        gold = read_gold(args.gold, args.gold_base)
        forward = read_links(forward_dir, False, len(gold))
        backward = read_links(backward_dir, True, len(gold))
        if args.eflomal_train:
            eflomal_text = check_eflomal_text(args.eflomal_train, args.eflomal_test, args.langs, len(gold))
    except (AlignmentFileError, OSError) as err:
        fail(str(err))
    common = [c for c in forward if c in backward]
    if not common:
        fail(f"{forward_dir} and {backward_dir} have no link file in common")
    configs = {c: symmetrised(gold, forward[c], backward[c]) for c in common}
    best_f = min(common, key=lambda c: configs[c]["forward"]["aer"])
    best_b = min(common, key=lambda c: configs[c]["backward"]["aer"])
    best_pair = {"forward_config": best_f, "backward_config": best_b,
                 **symmetrised(gold, forward[best_f], backward[best_b])}
    best_sym = min(common, key=lambda c: configs[c]["grow-diag-final-and"]["aer"])
    baselines = {}
    if (forward_dir / "alignment.json").is_file():
        try:
            baselines = json.loads((forward_dir / "alignment.json").read_text()).get("baselines", {})
        except ValueError as err:
            fail(f"{forward_dir / 'alignment.json'}: not a fairseq-rela-analyze result ({err})")
    if args.eflomal_train:
        from fairseq_rela.alignment.eflomal import eflomal_alignments

        try:
            links = eflomal_alignments(*eflomal_text)
        except (ValueError, OSError) as err:
            fail(f"eflomal failed: {err}")
        baselines = {name: score(gold, found) for name, found in links.items()}
    result = {"forward": str(forward_dir), "backward": str(backward_dir), "gold": args.gold, "sentences": len(gold),
              "configs": configs, "best_symmetrised": best_sym, "best_pair": best_pair, "baselines": baselines}
    pair = best_pair["grow-diag-final-and"]
    lines = table(configs) + [
        "",
        f"- {len(gold)} sentences; every combination is scored against the gold, so 'best' is chosen on the test set",
        f"- best single configuration, grow-diag-final-and: {best_sym} "
        f"(AER {100 * configs[best_sym]['grow-diag-final-and']['aer']:.1f})",
        f"- each direction's best configuration combined: forward {best_f} "
        f"({100 * best_pair['forward']['aer']:.1f}) + backward {best_b} ({100 * best_pair['backward']['aer']:.1f}) "
        f"-> grow-diag-final-and {100 * pair['aer']:.1f} (P {100 * pair['precision']:.1f}, "
        f"R {100 * pair['recall']:.1f})",
    ] + [f"- {name}: AER {100 * b['aer']:.1f} (P {100 * b['precision']:.1f}, R {100 * b['recall']:.1f})"
         for name, b in baselines.items()]
    if args.out:
        out = Path(args.out)
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            fail(f"--out {args.out}: cannot write there ({err.strerror or err})")
        write_json(result, str(out / "bidirectional.json"))
        write_text(str(out / "bidirectional.md"), "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
