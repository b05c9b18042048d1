"""Collect the RWTH experiment's results into results.md and aer_by_layer.png.

    python examples/rwth_alignment/summarize.py work/rwth [--out examples/rwth_alignment]
"""
import argparse
import json
from pathlib import Path

from fairseq_rela.analysis.plots import _plt, _save


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("work")
    p.add_argument("--out", default=None, help="where results.md and the plot go (default: WORK)")
    args = p.parse_args()
    work, out = Path(args.work), Path(args.out or args.work)
    out.mkdir(parents=True, exist_ok=True)
    runs = {}
    for d in sorted(work.glob("analysis-*")):
        if (d / "alignment.json").exists():
            runs[d.name[len("analysis-"):]] = (json.loads((d / "alignment.json").read_text()),
                                               json.loads((d / "stats.json").read_text()),
                                               (d / "bleu.txt").read_text().strip() if (d / "bleu.txt").exists() else "")
    if not runs:
        raise SystemExit(f"summarize.py: error: no analysis-*/alignment.json under {work}")
    lines = ["| model | BLEU | best layer (AER) | best head (AER) | " + " | ".join(
        f"{c} L{l}" for c in ("weights-AWO", "weights-AWI", "norms-AWO", "norms-AWI")
        for l in next(iter(runs.values()))[0]["per_layer"]["norms-AWI"]) + " | cross sparsity | cross null |",
        "|" + "---|" * (5 + 4 * len(next(iter(runs.values()))[0]["per_layer"]["norms-AWI"]) + 1)]
    baselines = {}
    for name, (al, st, bleu) in runs.items():
        cells = [f"{100 * al['per_layer'][c][l]:.1f}" for c in ("weights-AWO", "weights-AWI", "norms-AWO", "norms-AWI")
                 for l in al["per_layer"][c]]
        cross = st["attention"]["cross"]
        sp = sum(s["sparsity_mean"] for s in cross.values()) / len(cross)
        nr = sum(s["null_rate_mean"] for s in cross.values()) / len(cross)
        lines.append(f"| {name} | {bleu} | {al['best_layer']['config']} ({100 * al['best_layer']['aer']:.1f}) | "
                     f"{al['best_head']['config']} ({100 * al['best_head']['aer']:.1f}) | " + " | ".join(cells)
                     + f" | {sp:.3f} | {nr:.3f} |")
        baselines.update(al["baselines"])
    lines.append("")
    for name, r in baselines.items():
        lines.append(f"- {name}: AER {100 * r['aer']:.1f} (precision {100 * r['precision']:.1f}, "
                     f"recall {100 * r['recall']:.1f})")
    (out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for name, (al, _, _) in runs.items():
        for cfg, style in (("norms-AWO", "-"), ("weights-AWO", "--"), ("norms-AWI", "-."), ("weights-AWI", ":")):
            per = al["per_layer"][cfg]
            ax.plot([int(l) for l in per], [100 * x for x in per.values()], style, marker="o", label=f"{name} {cfg}")
        ax.set_xticks([int(l) for l in al["per_layer"]["norms-AWO"]])
    if "eflomal-gdfa" in baselines:
        ax.axhline(100 * baselines["eflomal-gdfa"]["aer"], color="grey", linewidth=0.8, linestyle=":")
        ax.text(0, 100 * baselines["eflomal-gdfa"]["aer"], "eflomal grow-diag-final-and", fontsize=7, va="bottom")
    ax.set_xlabel("decoder layer")
    ax.set_ylabel("AER (%) on RWTH De-En")
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    _save(fig, str(out / "aer_by_layer.png"))


if __name__ == "__main__":
    main()
