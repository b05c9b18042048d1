"""Figures and tables of the BERT study (Kobayashi et al. 2020 §4, 2021) from fairseq-rela-analyze's outputs.

    python examples/bert/figures.py RUN_DIR --path work/bert/fairseq-europarl/checkpoint.pt \
        --data work/bert/fairseq-europarl

Reads ``RUN_DIR/analysis-*/stats.json`` (one folder per corpus) and writes into ``RUN_DIR``:
- ``shares.png``: per layer, the share of each query's attention on [CLS], [SEP], punctuation and the other
  tokens, by weight ``α`` (mean over heads) and by norm ``‖Σ_h α f(x)‖`` (Kobayashi et al. 2020, Fig. 3/4);
- ``norms.png``: Spearman's ρ(α, ‖f(x)‖) per layer, and the mean ‖f(x)‖ of each token kind;
- ``mixing.png``: the context-mixing ratio per layer at each level of Kobayashi et al. 2021 (Attn-W, Attn-N,
  AttnRes-W, AttnRes-N, AttnResLn-N) and ALTI's (Ferrando et al. 2022), and the rolled-out own share;
- ``scatter.png``: α against ‖f(x)‖ per layer (all heads, the first ``--sentences`` sentences of the first
  corpus), coloured by token kind;
- ``results.md``: the numbers behind the figures, one table per corpus.
Every number comes from the analysis folders (and, for the scatter, the converted checkpoint).
"""
import argparse
import json
from pathlib import Path

import numpy as np

KINDS = {"bos": "[CLS]", "eos": "[SEP]", "punct": "punctuation", "other": "other tokens"}
COLOURS = {"bos": "tab:red", "eos": "tab:blue", "punct": "tab:green", "other": "0.55"}
LEVELS = (("attention_weights", "Attn-W"), ("attention", "Attn-N"), ("residual_weights", "AttnRes-W"),
          ("residual", "AttnRes-N"), ("block", "AttnResLn-N"))
STYLES = ("-", "--", ":", "-.")


def load(run: Path) -> dict:
    """corpus -> stats.json of RUN/analysis-CORPUS."""
    out = {}
    for folder in sorted(run.glob("analysis-*")):
        out[folder.name[len("analysis-"):]] = json.loads((folder / "stats.json").read_text(encoding="utf-8"))
    if not out:
        raise SystemExit(f"{run}: no analysis-*/stats.json")
    return out


def layers(stats: dict):
    rows = stats["attention"]["encoder_self"]
    return [rows[k] for k in sorted(rows, key=int)]


def model_name(run: Path) -> str:
    """The converted model's folder name (RUN/convert.json), for titles."""
    path = run / "convert.json"
    return Path(json.loads(path.read_text(encoding="utf-8"))["hf"]).name if path.exists() else "the model"


def shares_figure(corpora: dict, name: str):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(KINDS), figsize=(3.6 * len(KINDS), 3.3), sharey=False)
    for ax, (kind, label) in zip(axes, KINDS.items()):
        for (corpus, stats), style in zip(corpora.items(), STYLES):
            rows = layers(stats)
            xs = range(1, len(rows) + 1)
            ax.plot(xs, [r["token_share"][kind]["weight"] for r in rows], style, marker="o", color=COLOURS[kind],
                    label=f"weight α ({corpus})")
            ax.plot(xs, [r["token_share"][kind]["norm"] for r in rows], style, marker="s", color="k",
                    label=f"norm ‖αf(x)‖ ({corpus})")
        ax.set_title(label)
        ax.set_xlabel("layer")
        ax.set_xticks(list(xs))
        ax.set_ylim(0, None)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("share of a query's attention")
    axes[0].legend(fontsize=7)
    fig.suptitle(f"{name}: attention on each token kind, by weight and by norm")
    fig.tight_layout()
    return fig


def norms_figure(corpora: dict):
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.4))
    for (corpus, stats), style in zip(corpora.items(), STYLES):
        rows = layers(stats)
        xs = range(1, len(rows) + 1)
        a.plot(xs, [r["spearman_weight_fx"] for r in rows], style, marker="o", color="k", label=corpus)
        for kind in KINDS:
            b.plot(xs, [r["fx_norm_mean"][kind] for r in rows], style, marker="o", color=COLOURS[kind],
                   label=f"{KINDS[kind]} ({corpus})")
    a.axhline(0, color="0.6", lw=0.8)
    a.set_title("Spearman ρ(α, ‖f(x)‖) per layer")
    b.set_title("mean ‖f(x)‖ of each token kind")
    for ax in (a, b):
        ax.set_xlabel("layer")
        ax.set_xticks(list(xs))
        ax.grid(alpha=0.3)
    a.legend(fontsize=8)
    b.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig


def mixing_figure(corpora: dict):
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    colours = dict(zip([k for k, _ in LEVELS] + ["alti"], plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    for (corpus, stats), style in zip(corpora.items(), STYLES):
        rows = layers(stats)
        xs = range(1, len(rows) + 1)
        for key, label in LEVELS:
            a.plot(xs, [r["mixing_ratio"][key] for r in rows], style, marker="o", color=colours[key],
                   label=f"{label} ({corpus})")
        a.plot(xs, [r["alti_mixing"] for r in rows], style, marker="x", color=colours["alti"], label=f"ALTI ({corpus})")
        for (source, values), colour in zip(stats["contributions"].items(), ("tab:blue", "tab:orange", "tab:green",
                                                                             "tab:red", "tab:purple")):
            b.plot(xs, values["own_share"], style, marker="o", color=colour, label=f"{source} ({corpus})")
    a.set_title("context mixing per layer (share from other tokens)")
    b.set_title("rolled out: a token's own share of its representation")
    for ax in (a, b):
        ax.set_xlabel("layer")
        ax.set_xticks(list(xs))
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    a.legend(fontsize=6, ncol=2, loc="center")
    b.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    return fig


def scatter_figure(path: str, data: str, sentences: int):
    """α_ij against ‖f(x_j)‖ for every (head, query, key) of the first ``sentences`` sentences, per layer."""
    import matplotlib.pyplot as plt
    from scipy.stats import spearmanr

    from fairseq_rela.analysis.runner import iter_sentences, load_checkpoint, text_dataset
    from fairseq_rela.analysis.statistics import CATEGORIES, categorise, frequent_tokens

    model, task = load_checkpoint(path, data=data, device="cpu")
    frequent = frequent_tokens(task.source_dictionary)
    with open(Path(data) / "test.tokens", encoding="utf-8") as f:  # fairseq-rela-convert's tokens of the split
        lines = [line.rstrip("\n") for _, line in zip(range(sentences), f)]
    points = {}
    for sent in iter_sentences(model, task, dataset=text_dataset(task, lines), kinds=("encoder_self",), block=False):
        cats = np.array(CATEGORIES)[categorise(sent.src, frequent)]
        for (_, layer), rec in sent.records.items():
            w = rec.weights
            acc = points.setdefault(layer, ([], [], []))
            acc[0].append(w.ravel())
            acc[1].append(np.broadcast_to(rec.fx_norm, w.shape).ravel())
            acc[2].append(np.broadcast_to(cats[None, None], w.shape).ravel())
    fig, axes = plt.subplots(1, len(points), figsize=(3.2 * len(points), 3.3), sharey=True)
    for ax, layer in zip(np.atleast_1d(axes), sorted(points)):
        w, fx, cat = (np.concatenate(a) for a in points[layer])
        for kind in ("other", "punct", "eos", "bos"):
            sel = cat == kind if kind != "other" else ~np.isin(cat, ["bos", "eos", "punct"])
            ax.scatter(w[sel], fx[sel], s=2, alpha=0.3 if kind == "other" else 0.6, color=COLOURS[kind],
                       label=KINDS[kind], rasterized=True)
        ax.set_title(f"layer {layer + 1}: ρ = {spearmanr(w, fx).statistic:.2f}", fontsize=9)
        ax.set_xlabel("α")
        ax.grid(alpha=0.3)
    np.atleast_1d(axes)[0].set_ylabel("‖f(x)‖")
    np.atleast_1d(axes)[0].legend(markerscale=4, fontsize=7)
    fig.suptitle(f"α against ‖f(x)‖, all heads, first {sentences} sentences")
    fig.tight_layout()
    return fig


def table(stats: dict) -> str:
    head = ("| layer | [CLS] w / n | [SEP] w / n | punct w / n | other w / n | ρ(α, ‖f(x)‖) | ‖f(x)‖ [CLS] / [SEP] / "
            "punct / other | Attn-W | Attn-N | AttnRes-N | AttnResLn-N | ALTI mix |")
    rows = [head, "|" + "---|" * 12]
    for i, r in enumerate(layers(stats), 1):
        ts, fx, mix = r["token_share"], r["fx_norm_mean"], r["mixing_ratio"]
        shares = " | ".join(f"{ts[k]['weight']:.3f} / {ts[k]['norm']:.3f}" for k in KINDS)
        norms = " / ".join(f"{fx[k]:.2f}" for k in KINDS)
        rows.append(f"| {i} | {shares} | {r['spearman_weight_fx']:.3f} | {norms} | {mix['attention_weights']:.3f} | "
                    f"{mix['attention']:.3f} | {mix['residual']:.3f} | {mix['block']:.3f} | {r['alti_mixing']:.3f} |")
    own = stats["contributions"]
    rows += ["", "rolled out, a token's own share after each layer: "
             + "; ".join(f"{s} " + " ".join(f"{v:.3f}" for v in own[s]["own_share"]) for s in own)]
    return "\n".join(rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run", help="folder with analysis-*/stats.json; the figures are written there")
    p.add_argument("--path", help="the converted checkpoint (for scatter.png; left out without it)")
    p.add_argument("--data", help="its folder with the binarised test split")
    p.add_argument("--sentences", type=int, default=30, help="sentences in the scatter")
    args = p.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    run = Path(args.run)
    corpora = load(run)
    shares_figure(corpora, model_name(run)).savefig(run / "shares.png", dpi=110)
    norms_figure(corpora).savefig(run / "norms.png", dpi=110)
    mixing_figure(corpora).savefig(run / "mixing.png", dpi=110)
    if args.path:
        scatter_figure(args.path, args.data, args.sentences).savefig(run / "scatter.png", dpi=110)
    text = [f"# Numbers behind the figures ({', '.join(corpora)})", "",
            "w / n: share of a query's attention on the token kind by weight α (mean over heads) / by norm "
            "‖Σ_h α f(x)‖; layers count from 1 as in the papers; every value a mean over the corpus's tokens.", ""]
    for corpus, stats in corpora.items():
        text += [f"## {corpus} ({stats['sentences']} sentences)", "", table(stats), ""]
    (run / "results.md").write_text("\n".join(text), encoding="utf-8")
    print("\n".join(text))


if __name__ == "__main__":
    main()
