"""Collect the RWTH experiment's results into results.md and aer_by_layer.png.

    python examples/rwth_alignment/summarize.py work/rwth [--out examples/rwth_alignment]

Reads every WORK/analysis-MODEL/ (and WORK/translation-MODEL/bleu.txt, WORK/bidirectional-MODEL/) that
evaluate.sh wrote (MODEL = VARIANT or VARIANT@UPDATES; VARIANT-en-de for the En->De models).
The table has one row per model, then the symmetrised two-direction alignments; the figure shows AER
by layer for each variant's most trained model (left) and each variant's best-layer AER per source x
shift against training updates (right).
"""
import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

from fairseq_rela.analysis.plots import pyplot
from fairseq_rela.cli.files import save_figure

CONFIGS = ("weights-AWO", "weights-AWI", "norms-AWO", "norms-AWI")
STYLES = {"norms-AWO": "-", "weights-AWO": "--", "norms-AWI": "-.", "weights-AWI": ":"}


@dataclass
class Run:
    """One scored model: its sweep (alignment.json), statistics (stats.json) and BLEU."""

    name: str
    variant: str
    updates: Optional[int]
    alignment: dict
    stats: dict
    bleu: str

    @classmethod
    def load(cls, d: Path) -> "Run":
        name = d.name[len("analysis-"):]
        stats = json.loads((d / "stats.json").read_text())
        bleu_files = [f for f in (d.parent / f"translation-{name}" / "bleu.txt", d / "bleu.txt") if f.exists()]
        bleu = bleu_files[0].read_text().strip() if bleu_files else ""  # (the second: evaluate.sh before En->De)
        return cls(name, name.split("@")[0], stats.get("num_updates"),
                   json.loads((d / "alignment.json").read_text()), stats, bleu)

    def cross(self, metric: str) -> float:
        cross = self.stats["attention"]["cross"]
        return sum(s[f"{metric}_mean"] for s in cross.values()) / len(cross)

    def best(self, config: str) -> float:
        return min(self.alignment["per_layer"][config].values())


def table(runs: List[Run]) -> List[str]:
    layers = list(runs[0].alignment["per_layer"]["norms-AWI"])
    lines = ["| model | updates | BLEU | best layer (AER) | best head (AER) | "
             + " | ".join(f"{c} L{l}" for c in CONFIGS for l in layers) + " | cross sparsity | cross null |",
             "|" + "---|" * (5 + len(CONFIGS) * len(layers) + 2)]
    for r in runs:
        al = r.alignment
        cells = [f"{100 * al['per_layer'][c][l]:.1f}" for c in CONFIGS for l in al["per_layer"][c]]
        lines.append(f"| {r.variant} | {r.updates if r.updates is not None else '?'} | {r.bleu} | "
                     f"{al['best_layer']['config']} ({100 * al['best_layer']['aer']:.1f}) | "
                     f"{al['best_head']['config']} ({100 * al['best_head']['aer']:.1f}) | " + " | ".join(cells)
                     + f" | {r.cross('sparsity'):.3f} | {r.cross('null_rate'):.3f} |")
    return lines


def bidirectional(work: Path) -> List[str]:
    """One line per symmetrised De->En + En->De pair (bidirectional.py's results)."""
    lines = []
    for f in sorted(work.glob("bidirectional-*/bidirectional.json")):
        r = json.loads(f.read_text())
        model = f.parent.name[len("bidirectional-"):]
        best, pair = r["best_symmetrised"], r["best_pair"]
        sym = r["configs"][best]
        lines.append(f"| {model} | {best} | {100 * sym['forward']['aer']:.1f} | {100 * sym['backward']['aer']:.1f} | "
                     f"{100 * sym['grow-diag-final-and']['aer']:.1f} | {pair['forward_config']} + "
                     f"{pair['backward_config']} | {100 * pair['grow-diag-final-and']['aer']:.1f} |")
    if lines:
        lines = ["| De->En model + its En->De twin | best configuration | De->En | En->De (reversed) | "
                 "grow-diag-final-and | best of each direction | grow-diag-final-and |",
                 "|---|---|---|---|---|---|---|"] + lines
    return lines


def plot(runs: List[Run], baselines: Dict[str, dict], path: str) -> None:
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    variants = sorted({r.variant for r in runs})
    colours = {v: f"C{i}" for i, v in enumerate(variants)}
    for v in variants:
        mine = [r for r in runs if r.variant == v]
        last = mine[-1]
        for cfg in CONFIGS:
            per = last.alignment["per_layer"][cfg]
            left.plot([int(l) for l in per], [100 * x for x in per.values()], STYLES[cfg], color=colours[v],
                      marker="o", markersize=3, label=f"{last.name} {cfg}")
            if all(r.updates is not None for r in mine):
                right.plot([r.updates for r in mine], [100 * r.best(cfg) for r in mine], STYLES[cfg],
                           color=colours[v], marker="o", markersize=3, label=f"{v} {cfg}")
        left.set_xticks([int(l) for l in last.alignment["per_layer"]["norms-AWO"]])
    for ax in (left, right):
        if "eflomal-gdfa" in baselines:
            aer = 100 * baselines["eflomal-gdfa"]["aer"]
            ax.axhline(aer, color="grey", linewidth=0.8, linestyle=":")
            ax.text(ax.get_xlim()[0], aer, " eflomal grow-diag-final-and", fontsize=7, va="bottom")
        ax.set_ylabel("AER (%) on the RWTH gold (En-De models: mirrored)")
        ax.legend(fontsize=6, ncol=2)
    left.set_xlabel("decoder layer (most trained model of each variant)")
    right.set_xlabel("training updates (best layer of each source x shift)")
    fig.tight_layout()
    save_figure(fig, path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("work")
    p.add_argument("--out", default=None, help="where results.md and the plot go (default: WORK)")
    args = p.parse_args()
    work, out = Path(args.work), Path(args.out or args.work)
    runs = [Run.load(d) for d in work.glob("analysis-*") if (d / "alignment.json").exists()]
    if not runs:
        raise SystemExit(f"summarize.py: error: no analysis-*/alignment.json under {work}")
    runs.sort(key=lambda r: (r.variant, r.updates if r.updates is not None else -1))
    baselines = {name: b for r in runs for name, b in r.alignment["baselines"].items()}
    lines = table(runs) + [""] + [f"- {name}: AER {100 * r['aer']:.1f} (precision {100 * r['precision']:.1f}, "
                                  f"recall {100 * r['recall']:.1f})" for name, r in baselines.items()]
    both = bidirectional(work)
    if both:
        lines += ["", "Both directions symmetrised (AER %, `bidirectional.py`):", ""] + both
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    plot(runs, baselines, str(out / "aer_by_layer.png"))


if __name__ == "__main__":
    main()
