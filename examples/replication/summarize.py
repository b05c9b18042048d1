"""Summarise replication runs: one row per model, from the folders ``gpu_run.sh`` leaves.

Reads each ``RUN/DIR-VARIANT/`` (``train.log``, ``times.txt``, and when evaluation ran
``gen-newstest2014.txt[.gz]``, ``gen-rwth.txt[.gz]``, ``analysis/alignment.json``, ``analysis/stats.json``)
and writes ``RUN/results.md``, ``RUN/results.json`` and ``RUN/curves.png`` (validation perplexity and
fp16 loss scale against updates).  Two tables: training (updates, speed, precision, outcome), and the
papers' quantities (perplexity over softmax's at the same update, BLEU, cross-attention sparsity, null
rate and head JSD, the best layer's AER for weights/norms x AWO/AWI, the best head's).  A translation
cut short by a deadline is scored on the sentences every model of its direction translated, and the
table says how many.  Missing parts are reported as missing, never guessed.

    python examples/replication/summarize.py examples/replication/runs/2026-11-23-h100-fp16 [--data work/replication]
"""
import argparse
import gzip
import json
import math
import re
import sys
from pathlib import Path

_KV = re.compile(r"(\w+)[=\s]([-\d.e+]+|nan|inf)")
_OVERFLOW = re.compile(r"gradient overflow detected")
_CRASH = re.compile(r"^(\w*Error): (.*)$", re.M)


def parse_train_log(text: str) -> dict:
    """Training curve (updates, loss scale), validation curve (updates, ppl), crash, last stats."""
    train, valid, last = [], [], {}
    for line in text.split("\n"):
        if "| train_inner |" in line or "| train |" in line:
            kv = dict(_KV.findall(line.split("|", 3)[-1].replace(",", " ")))
            if "num_updates" in kv:
                train.append((int(float(kv["num_updates"])), float(kv.get("loss_scale", "nan")), float(kv["ppl"])))
                last = kv
        elif "valid on 'valid' subset" in line:
            kv = dict(_KV.findall(line.replace("|", " ")))
            valid.append((int(float(kv["num_updates"])), float(kv["ppl"])))
    crash = _CRASH.findall(text)
    return {"train": train, "valid": valid, "last": last, "overflows": len(_OVERFLOW.findall(text)),
            "crash": f"{crash[-1][0]}: {crash[-1][1]}" if crash else None}


def translated(path: Path) -> dict:
    """``{sentence id: hypothesis}`` of a ``fairseq-generate`` output (``D-`` lines; gzipped when the name
    ends in ``.gz``), complete or not; ``{}`` when there is no such file."""
    if not path.is_file():
        return {}
    hyps = {}
    with (gzip.open if path.suffix == ".gz" else open)(path, "rt", encoding="utf-8", newline="\n") as f:
        for line in f:
            if line.startswith("D-"):
                head, _score, text = (line.rstrip("\n").split("\t") + ["", ""])[:3]
                hyps[int(head[2:])] = text
    return hyps


def generation(folder: Path, name: str) -> Path:
    """``folder/name``, or its gzipped copy where only that was kept."""
    return folder / name if (folder / name).is_file() else folder / f"{name}.gz"


def hypotheses(path: Path, expected: int):
    """Hypotheses in id order, or None if the file is incomplete."""
    hyps = translated(path)
    return [hyps[i] for i in range(expected)] if len(hyps) == expected else None


def bleu(hyps, refs, tokenize: str):
    import sacrebleu

    metric = sacrebleu.BLEU(tokenize=tokenize)
    score = metric.corpus_score(hyps, [refs])
    return round(score.score, 2), str(metric.get_signature())


def read_lines(path: Path):
    with open(path, encoding="utf-8", newline="\n") as f:
        return [line.rstrip("\n") for line in f]


def summarise_model(folder: Path) -> dict:
    log = parse_train_log((folder / "train.log").read_text(encoding="utf-8", errors="replace"))
    times = dict(line.split(maxsplit=1) for line in (folder / "times.txt").read_text().split("\n") if line.strip()) \
        if (folder / "times.txt").is_file() else {}
    row = {
        "model": folder.name, "updates": log["train"][-1][0] if log["train"] else 0,
        "train_seconds": int(times["train_seconds"]) if "train_seconds" in times else None,
        "train_wps": float(log["last"]["wps"]) if "wps" in log["last"] else None,
        "final_loss_scale": log["train"][-1][1] if log["train"] and not math.isnan(log["train"][-1][1]) else None,
        "overflow_steps": log["overflows"], "crash": log["crash"],
        "valid_ppl": log["valid"][-1][1] if log["valid"] else None,
        "valid_curve": log["valid"], "loss_scale_curve": [(u, s) for u, s, _ in log["train"]],
        "bleu_newstest2014": None, "bleu_rwth": None, "aer": None, "cross_attention": None,
    }
    times_decoded = times.get("decode_newstest2014_seconds")
    row["decode_newstest2014_seconds"] = int(times_decoded) if times_decoded else None
    generated = generation(folder, "gen-newstest2014.txt")
    row["newstest2014_translated"] = len(translated(generated)) if generated.is_file() else None
    sweep = folder / "analysis" / "alignment.json"
    if sweep.is_file():
        out = json.loads(sweep.read_text())
        row["aer"] = {"best_layer": out["best_layer"], "best_head": out["best_head"], "per_layer": out["per_layer"]}
    stats = folder / "analysis" / "stats.json"
    if stats.is_file():
        row["cross_attention"] = json.loads(stats.read_text())["attention"].get("cross")  # {layer: statistics}
    return row


ORDER = ["softmax", "sparsemax", "entmax15", "rela-i", "rela-g"]


def model_order(folder: Path):
    """Direction, then softmax, sparsemax, 1.5-entmax, ReLA-i, ReLA-g (others after, by name)."""
    d, v = folder.name[:5], folder.name[6:]
    return d, ORDER.index(v) if v in ORDER else len(ORDER), v


def direction(row) -> str:
    return "-".join(row["model"].split("-")[:2])


def add_bleu(rows, folders, data: Path) -> None:
    """BLEU of newstest2014 (SacreBLEU 13a on Moses-detokenised output) and of the RWTH sentences
    (tokenised as the gold, no further tokenisation).  Where a translation was cut short, every model of
    the direction is scored on the sentences all of them translated (``*_sentences`` says how many)."""
    from sacremoses import MosesDetokenizer

    for d in sorted({direction(r) for r in rows}):
        group = [(r, f) for r, f in zip(rows, folders) if direction(r) == d]
        tgt = d.split("-")[1]
        for key, name, refs_file, tokenize in (("bleu_newstest2014", "gen-newstest2014.txt", f"newstest2014.raw.{tgt}", "13a"),
                                               ("bleu_rwth", "gen-rwth.txt", f"rwth.tok.{tgt}", "none")):
            refs = read_lines(data / refs_file)
            hyps = [translated(generation(f, name)) for _, f in group]
            done = [(row, h) for (row, _), h in zip(group, hyps) if h]  # a model with no output gets no BLEU
            if not done:
                continue
            common = sorted(set.intersection(*(set(h) for _, h in done)) & set(range(len(refs))))
            if not common:
                continue
            detok = MosesDetokenizer(lang=tgt)
            for row, h in done:
                out = [h[i] for i in common]
                if tokenize == "13a":
                    out = [detok.detokenize(x.split()) for x in out]
                row[key], signature = bleu(out, [refs[i] for i in common], tokenize)
                row[f"{key}_sentences"] = [len(common), len(refs)]
                if tokenize == "13a":
                    row["bleu_signature"] = signature


def softmax_row(rows, row):
    """The softmax model of ``row``'s direction, or None."""
    return next((x for x in rows if x["model"] == f"{direction(row)}-softmax"), None)


def add_ratios(rows) -> None:
    """Each model against softmax of its direction: validation perplexity at the last update every
    model of the direction validated (one update for all), and updates trained in the same time (the
    models trained side by side on one GPU)."""
    for r in rows:
        group = [x for x in rows if direction(x) == direction(r)]
        soft = softmax_row(rows, r)
        r["valid_ppl_vs_softmax"] = r["updates_vs_softmax"] = None
        if soft is None:
            continue
        curves = [set(dict(x["valid_curve"])) for x in group if x["valid_curve"]]  # a model without validation is left out
        common = set.intersection(*curves) if curves and r["valid_curve"] and soft["valid_curve"] else set()
        if common:
            u = max(common)
            r["valid_ppl_vs_softmax"] = (u, dict(r["valid_curve"])[u] / dict(soft["valid_curve"])[u])
        if r["train_seconds"] and soft["train_seconds"] and soft["updates"]:
            r["updates_vs_softmax"] = (r["updates"] / r["train_seconds"]) / (soft["updates"] / soft["train_seconds"])


def best_layers(row) -> dict:
    """The best layer's AER (and the layer) for each of weights/norms x AWO/AWI."""
    if not row["aer"]:
        return {}
    return {config: min(((aer, int(layer)) for layer, aer in layers.items()))
            for config, layers in row["aer"]["per_layer"].items()}


def cross_mean(row, key):
    """Mean over the layers that have the statistic (a layer's head JSD is null when too few heads attend)."""
    values = [s.get(key) for s in (row["cross_attention"] or {}).values()]
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def fmt(x, spec=".1f"):
    if isinstance(x, float) and math.isnan(x):
        return "NaN"
    return "—" if x is None else format(x, spec)


def table(rows) -> str:
    """Training: updates, time, speed, fp16 loss scale, how it ended, how much of newstest2014 was translated."""
    lines = ["| model | updates | train s | train wps | valid ppl | final fp16 loss scale | overflow steps | "
             "newstest2014 translated (s) | outcome |", "|" + "---|" * 9]
    for r in rows:
        outcome = r["crash"] or ("valid loss NaN" if r["valid_ppl"] is not None and math.isnan(r["valid_ppl"]) else "trained")
        decoded = r.get("newstest2014_translated")
        seconds = r.get("decode_newstest2014_seconds")
        lines.append(f"| {r['model']} | {r['updates']} | {fmt(r['train_seconds'], 'd')} | {fmt(r['train_wps'], '.0f')} | "
                     f"{fmt(r['valid_ppl'])} | {fmt(r['final_loss_scale'], 'g')} | {r['overflow_steps']} | "
                     f"{decoded if decoded is not None else '—'}{f' ({seconds})' if seconds is not None else ''} | "
                     f"{outcome[:60]} |")
    return "\n".join(lines)


AER_COLUMNS = ("weights-AWO", "weights-AWI", "norms-AWO", "norms-AWI")


def papers_table(rows) -> str:
    """The papers' quantities, one row per model (means over the decoder's layers for the attention)."""
    lines = ["| model | valid ppl / softmax's (at update) | BLEU nt2014 | BLEU RWTH | cross sparsity | cross null | "
             "cross head JSD | " + " | ".join(f"AER {c} (layer)" for c in AER_COLUMNS) +
             " | best head AER | updates / softmax's |", "|" + "---|" * (9 + len(AER_COLUMNS))]
    for r in rows:
        ratio = r.get("valid_ppl_vs_softmax")
        layers = best_layers(r)
        head = r["aer"]["best_head"] if r["aer"] else None

        def sentences(key):
            n = r.get(f"{key}_sentences")
            return f" ({n[0]}/{n[1]})" if n and n[0] < n[1] else ""

        lines.append(
            f"| {r['model']} | {fmt(ratio[1], '.3f') + f' ({ratio[0]})' if ratio else '—'} | "
            f"{fmt(r['bleu_newstest2014'])}{sentences('bleu_newstest2014')} | {fmt(r['bleu_rwth'])}{sentences('bleu_rwth')} | "
            f"{fmt(cross_mean(r, 'sparsity_mean'), '.3f')} | {fmt(cross_mean(r, 'null_rate_mean'), '.3f')} | "
            f"{fmt(cross_mean(r, 'head_jsd'), '.3f')} | "
            + " | ".join(f"{100 * layers[c][0]:.1f} ({layers[c][1]})" if c in layers else "—" for c in AER_COLUMNS)
            + f" | {fmt(100 * head['aer']) + ' (' + head['config'] + ')' if head else '—'} | "
            f"{fmt(r.get('updates_vs_softmax'), '.2f')} |")
    return "\n".join(lines)


def plot(rows, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.4))
    colour = {r["model"]: f"C{i}" for i, r in enumerate(rows)}  # one colour per model in both panels
    fp16 = any(r["final_loss_scale"] is not None for r in rows)
    for r in rows:
        style = {"color": colour[r["model"]], "label": r["model"]}
        if r["valid_curve"]:
            a.plot(*zip(*r["valid_curve"]), marker="o", **style)
        if fp16 and r["final_loss_scale"] is not None:  # an fp32 log has no loss scale
            b.plot(*zip(*r["loss_scale_curve"]), **style)
        soft = dict((softmax_row(rows, r) or {"valid_curve": []})["valid_curve"])
        points = [(u, p / soft[u]) for u, p in r["valid_curve"] if u in soft]
        if not fp16 and points:
            b.plot(*zip(*points), marker="o", linestyle="--" if r["model"].endswith("softmax") else "-", **style)
    a.set(xlabel="updates", ylabel="validation ppl (newstest2013)", yscale="log")
    if fp16:
        b.set(xlabel="updates", ylabel="fp16 loss scale", yscale="log")
        b.axhline(1e-4, color="grey", linestyle=":", linewidth=0.8)
        b.text(0, 1.3e-4, "fairseq's minimum: training stops", fontsize=7)
    else:
        b.set(xlabel="updates", ylabel="validation ppl / softmax's (same direction)")
    a.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run", type=Path)
    p.add_argument("--data", type=Path, default=None, help="prepare.py's folder (references for BLEU)")
    p.add_argument("--no-plot", action="store_true", help="no curves.png (a machine without matplotlib)")
    args = p.parse_args()
    folders = sorted((f for f in args.run.iterdir() if (f / "train.log").is_file()), key=model_order)
    if not folders:
        sys.exit(f"summarize.py: error: {args.run}: no DIR-VARIANT/train.log folders (gpu_run.sh writes them)")
    if args.data is not None:
        needed = sorted({f"{name}.{f.name[3:5]}" for f in folders for name in ("newstest2014.raw", "rwth.tok")})
        missing = [n for n in needed if not (args.data / n).is_file()]
        if missing:
            sys.exit(f"summarize.py: error: --data {args.data}: no {', '.join(missing)} "
                     "(prepare.py's output folder is needed)")
    rows = [summarise_model(f) for f in folders]
    if args.data is not None:
        add_bleu(rows, folders, args.data)
    add_ratios(rows)
    text = table(rows) + "\n\n" + papers_table(rows) + "\n"
    (args.run / "results.json").write_text(json.dumps(rows, indent=1) + "\n")
    (args.run / "results.md").write_text(text)
    if not args.no_plot:
        plot(rows, args.run / "curves.png")
    print(text, end="")


if __name__ == "__main__":
    main()
