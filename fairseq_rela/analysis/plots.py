"""Figures: per-layer/head heatmaps of sparsity and null rate; weight-vs-norm attention maps; AER by
layer.  Each function returns a matplotlib figure; :func:`fairseq_rela.cli.files.save_figure` saves it."""
from typing import List, Optional

import numpy as np


def pyplot():
    """matplotlib's pyplot on the Agg backend (no display needed), quiet."""
    import logging

    logging.getLogger("matplotlib").setLevel(logging.WARNING)  # fairseq leaves the root logger at DEBUG
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_head_heatmaps(stats: dict, title: str = ""):
    """Rows: attention kinds; columns: sparsity and null rate, each a layer x head heatmap."""
    plt = pyplot()
    kinds = list(stats["attention"])
    fig, axes = plt.subplots(len(kinds), 2, figsize=(8, 2.4 * len(kinds)), squeeze=False)
    for r, kind in enumerate(kinds):
        layers = stats["attention"][kind]
        for c, metric in enumerate(("sparsity", "null_rate")):
            grid = np.array([layers[l][metric] for l in sorted(layers, key=int)])
            ax = axes[r, c]
            im = ax.imshow(grid, vmin=0, vmax=1, cmap="viridis", aspect="auto")
            for (i, j), v in np.ndenumerate(grid):
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7, color="w" if v < 0.6 else "k")
            ax.set_title(f"{kind}: {metric.replace('_', ' ')}", fontsize=9)
            ax.set_xlabel("head")
            ax.set_ylabel("layer")
            ax.set_xticks(range(grid.shape[1]))
            ax.set_yticks(range(grid.shape[0]))
            fig.colorbar(im, ax=ax, fraction=0.04)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_weight_vs_norm(sent, kind: str, layers: Optional[List[int]] = None):
    """For one sentence: per layer, α (mean over heads) beside ‖Σ_h α f(x)‖, same axes."""
    plt = pyplot()
    keys = sorted(l for k, l in sent.records if k == kind)
    keys = [l for l in keys if layers is None or l in layers]
    queries, key_tokens = sent.tokens(kind)
    fig, axes = plt.subplots(len(keys), 2, figsize=(2 + 0.45 * len(key_tokens) * 2, 0.4 * len(queries) * len(keys) + 1),
                             squeeze=False)
    for r, layer in enumerate(keys):
        record = sent.records[(kind, layer)]
        for c, (name, mat) in enumerate((("weight α (head mean)", record.matrix("weights")),
                                         ("norm ‖Σh α f(x)‖", record.matrix("norms") if record.has_norms else None))):
            ax = axes[r, c]
            if mat is None:
                ax.axis("off")
                continue
            ax.imshow(mat, cmap="Greys", aspect="auto", vmin=0)
            ax.set_title(f"layer {layer}: {name}", fontsize=8)
            ax.set_xticks(range(len(key_tokens)))
            ax.set_xticklabels(key_tokens, rotation=90, fontsize=7)
            ax.set_yticks(range(len(queries)))
            ax.set_yticklabels(queries, fontsize=7)
    fig.suptitle(f"sentence {sent.id}, {kind} attention", fontsize=9)
    fig.tight_layout()
    return fig


SWEEP_COLOURS = {"weights": "C0", "norms": "C1", "block": "C2", "alti": "C3", "value-zeroing": "C4"}  # a source's colour in both panels
SWEEP_STYLES = {"AWO": "-", "AWI": "--"}  # a shift's line style


def plot_sweep(out: dict):
    """AER by decoder layer for each source and shift (the sweep's JSON), baselines as lines: the per-layer
    sources on the left, the rolled-out ones (``rollout-*``) on the right when the sweep has them; colour
    names the source, the line style the shift (AWO solid, AWI dashed)."""
    plt = pyplot()
    panels = [("per layer", [n for n in out["per_layer"] if not n.startswith("rollout-")]),
              ("rolled out through the layers below", [n for n in out["per_layer"] if n.startswith("rollout-")])]
    panels = [(title, names) for title, names in panels if names]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 3.6), sharey=True, squeeze=False)
    for ax, (title, names) in zip(axes[0], panels):
        for name in names:
            per_layer = out["per_layer"][name]
            layers = sorted(per_layer, key=int)
            source, shift = name.removeprefix("rollout-").rsplit("-", 1)
            ax.plot([int(l) for l in layers], [100 * per_layer[l] for l in layers], marker="o", markersize=3,
                    color=SWEEP_COLOURS.get(source), linestyle=SWEEP_STYLES.get(shift, ":"), label=name)
        for name, r in out["baselines"].items():
            ax.axhline(100 * r["aer"], color="grey", linewidth=0.8, linestyle=":")
            ax.text(0, 100 * r["aer"], name, fontsize=7, va="bottom")
        ax.set_xticks(sorted({int(l) for name in names for l in out["per_layer"][name]}))
        ax.set_xlabel("decoder layer")
        ax.set_title(f"alignment error by layer (teacher-forced), {title}", fontsize=9)
        ax.legend(fontsize=7, ncol=2)
    axes[0][0].set_ylabel("AER (%)")
    fig.tight_layout()
    return fig
