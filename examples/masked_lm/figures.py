"""Figures and table of the masked-LM study (Kobayashi et al. 2020, §5, their BERT figures), at small scale.

    python examples/masked_lm/figures.py --stats work/masked_lm/analysis/stats.json \
        --path work/masked_lm/ckpt/checkpoint_last.pt --data work/masked_lm/bin --out examples/masked_lm

Writes, into ``--out``:
- ``shares.png``: per layer, the share of attention on ``<s>`` ([CLS]), ``</s>`` ([SEP]) and punctuation,
  by weight ``α`` (head mean) and by norm ``‖Σ_h α f(x)‖`` (from ``fairseq-rela-analyze``'s ``stats.json``);
- ``scatter.png``: ``α_ij`` against ``‖f(x_j)‖`` per layer (all heads, ``--sentences`` test sentences),
  coloured by token kind, with Spearman's ρ — the paper's "big weight, small norm" picture;
- ``results.md``: the per-layer table (shares, mean ``‖f(x)‖`` per kind, ρ).
"""
import argparse
import json
from pathlib import Path

import numpy as np

KINDS = {"bos": "<s> ([CLS])", "eos": "</s> ([SEP])", "punct": "punctuation"}
COLOURS = {"bos": "tab:red", "eos": "tab:blue", "punct": "tab:green", "other": "0.6"}


def shares_figure(stats: dict):
    import matplotlib.pyplot as plt

    layers = stats["attention"]["encoder_self"]
    xs = sorted(int(k) for k in layers)
    fig, axes = plt.subplots(1, len(KINDS), figsize=(4 * len(KINDS), 3.4), sharey=True)
    for ax, (kind, label) in zip(axes, KINDS.items()):
        for source, style in (("weight", "-o"), ("norm", "--s")):
            ys = [layers[str(x)]["token_share"][kind][source] for x in xs]
            ax.plot([x + 1 for x in xs], ys, style, color=COLOURS[kind], label="weight α" if source == "weight"
                    else "norm ‖αf(x)‖")
        ax.set_title(label)
        ax.set_xlabel("layer")
        ax.set_xticks([x + 1 for x in xs])
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("share of attention")
    axes[0].legend()
    fig.suptitle(f"masked LM, {stats['sentences']} test sentences: weight vs norm share per layer")
    fig.tight_layout()
    return fig


def collect_scatter(path: str, data: str, sentences: int, seed: int = 1):
    """Per layer: α, ‖f(x)‖ and the key's category for every (head, query, key) of the first ``sentences``."""
    from fairseq_rela.analysis.runner import iter_sentences, load_checkpoint, masked_lm_dataset
    from fairseq_rela.analysis.statistics import CATEGORIES, categorise, frequent_tokens
    import torch

    torch.manual_seed(seed)
    model, task = load_checkpoint(path, data=data, device="cpu")
    frequent = frequent_tokens(task.source_dictionary)
    dataset = masked_lm_dataset(task, "test")
    out = {}
    for sent in iter_sentences(model, task, dataset=dataset, kinds=("encoder_self",)):
        if sent.id >= sentences:
            continue
        cats = categorise(sent.src, frequent)
        for (_, layer), rec in sent.records.items():
            w = rec.weights  # (H, T, S)
            fx = np.broadcast_to(rec.fx_norm, w.shape)
            c = np.broadcast_to(cats[None, None], w.shape)
            acc = out.setdefault(layer, ([], [], []))
            acc[0].append(w.ravel())
            acc[1].append(fx.ravel())
            acc[2].append(np.array(CATEGORIES)[c.ravel()])
    return {layer: tuple(np.concatenate(a) for a in acc) for layer, acc in sorted(out.items())}


def scatter_figure(points: dict):
    import matplotlib.pyplot as plt
    from scipy.stats import spearmanr

    fig, axes = plt.subplots(1, len(points), figsize=(3.6 * len(points), 3.4), sharey=True)
    axes = np.atleast_1d(axes)
    for ax, (layer, (w, fx, cat)) in zip(axes, points.items()):
        for kind in ("other", "punct", "eos", "bos"):
            sel = cat == kind if kind != "other" else ~np.isin(cat, list(KINDS))
            ax.scatter(w[sel], fx[sel], s=2, alpha=0.35 if kind == "other" else 0.6, color=COLOURS[kind],
                       label=KINDS.get(kind, "other tokens"), rasterized=True)
        rho = spearmanr(w, fx).statistic
        ax.set_title(f"layer {layer + 1}: ρ(α, ‖f(x)‖) = {rho:.2f}")
        ax.set_xlabel("attention weight α")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("‖f(x)‖")
    axes[0].legend(markerscale=4, fontsize=8)
    fig.tight_layout()
    return fig


def table(stats: dict) -> str:
    rows = ["| layer | `<s>` weight | `<s>` norm | `</s>` weight | `</s>` norm | punct weight | punct norm "
            "| ‖f(x)‖ `<s>` | ‖f(x)‖ `</s>` | ‖f(x)‖ punct | ‖f(x)‖ frequent | ‖f(x)‖ other | ρ(α, ‖f(x)‖) |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for layer, f in sorted(stats["attention"]["encoder_self"].items(), key=lambda kv: int(kv[0])):
        ts, fx = f["token_share"], f["fx_norm_mean"]
        shares = " | ".join(f"{ts[k][s]:.3f}" for k in KINDS for s in ("weight", "norm"))
        norms = " | ".join("–" if fx[k] is None else f"{fx[k]:.2f}" for k in ("bos", "eos", "punct", "frequent", "other"))
        rows.append(f"| {int(layer) + 1} | {shares} | {norms} | {f['spearman_weight_fx']:.3f} |")
    return "\n".join(rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--stats", required=True, help="stats.json of fairseq-rela-analyze on the masked LM")
    p.add_argument("--path", required=True, help="the masked-LM checkpoint (for the scatter)")
    p.add_argument("--data", required=True, help="its binarised data (the test split is read)")
    p.add_argument("--sentences", type=int, default=40, help="test sentences in the scatter")
    p.add_argument("--out", default="examples/masked_lm")
    args = p.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    stats = json.loads(Path(args.stats).read_text(encoding="utf-8"))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    shares_figure(stats).savefig(out / "shares.png", dpi=120)
    scatter_figure(collect_scatter(args.path, args.data, args.sentences)).savefig(out / "scatter.png", dpi=120)
    text = table(stats)
    (out / "results.md").write_text(text + "\n", encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
