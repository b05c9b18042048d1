"""Summarise replication runs: one row per model, from the folders ``gpu_run.sh`` leaves.

Reads each ``RUN/DIR-VARIANT/`` (``train.log``, ``times.txt``, and when evaluation finished
``gen-newstest2014.txt``, ``gen-rwth.txt``, ``analysis/alignment.json``, ``analysis/stats.json``)
and writes ``RUN/results.md``, ``RUN/results.json`` and ``RUN/curves.png`` (validation perplexity and
fp16 loss scale against updates).  Missing parts are reported as missing, never guessed.

    python examples/replication/summarize.py examples/replication/runs/2026-11-23-h100-fp16 [--data work/replication]
"""
import argparse
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


def hypotheses(path: Path, expected: int):
    """Detokenised-by-SentencePiece hypotheses in id order, or None if the file is incomplete."""
    if not path.is_file():
        return None
    hyps = {}
    with open(path, encoding="utf-8", newline="\n") as f:
        for line in f:
            if line.startswith("D-"):
                head, _score, text = (line.rstrip("\n").split("\t") + ["", ""])[:3]
                hyps[int(head[2:])] = text
    return [hyps[i] for i in range(expected)] if len(hyps) == expected else None


def bleu(hyps, refs, tokenize: str):
    import sacrebleu

    metric = sacrebleu.BLEU(tokenize=tokenize)
    score = metric.corpus_score(hyps, [refs])
    return round(score.score, 2), str(metric.get_signature())


def read_lines(path: Path):
    with open(path, encoding="utf-8", newline="\n") as f:
        return [line.rstrip("\n") for line in f]


def summarise_model(folder: Path, data: Path = None) -> dict:
    log = parse_train_log((folder / "train.log").read_text(encoding="utf-8", errors="replace"))
    times = dict(line.split(maxsplit=1) for line in (folder / "times.txt").read_text().split("\n") if line.strip()) \
        if (folder / "times.txt").is_file() else {}
    row = {
        "model": folder.name, "updates": log["train"][-1][0] if log["train"] else 0,
        "train_seconds": int(times["train_seconds"]) if "train_seconds" in times else None,
        "train_wps": float(log["last"]["wps"]) if "wps" in log["last"] else None,
        "final_loss_scale": log["train"][-1][1] if log["train"] else None,
        "overflow_steps": log["overflows"], "crash": log["crash"],
        "valid_ppl": log["valid"][-1][1] if log["valid"] else None,
        "valid_curve": log["valid"], "loss_scale_curve": [(u, s) for u, s, _ in log["train"]],
        "bleu_newstest2014": None, "bleu_rwth": None, "aer": None, "cross_attention": None,
    }
    if data is not None:
        src, tgt = folder.name.split("-")[:2]
        refs = read_lines(data / f"newstest2014.raw.{tgt}")
        hyps = hypotheses(folder / "gen-newstest2014.txt", len(refs))
        if hyps is not None:
            from sacremoses import MosesDetokenizer

            detok = MosesDetokenizer(lang=tgt)
            row["bleu_newstest2014"], row["bleu_signature"] = bleu([detok.detokenize(h.split()) for h in hyps], refs, "13a")
        refs = read_lines(data / f"rwth.tok.{tgt}")
        hyps = hypotheses(folder / "gen-rwth.txt", len(refs))
        if hyps is not None:
            row["bleu_rwth"], _ = bleu(hyps, refs, "none")
    sweep = folder / "analysis" / "alignment.json"
    if sweep.is_file():
        out = json.loads(sweep.read_text())
        row["aer"] = {"best_layer": out["best_layer"], "best_head": out["best_head"], "per_layer": out["per_layer"]}
    stats = folder / "analysis" / "stats.json"
    if stats.is_file():
        row["cross_attention"] = {k: v for k, v in json.loads(stats.read_text()).items() if k.startswith("cross")} or None
    return row


def fmt(x, spec=".1f"):
    if isinstance(x, float) and math.isnan(x):
        return "NaN"
    return "—" if x is None else format(x, spec)


def table(rows) -> str:
    lines = ["| model | updates | train s | train wps | valid ppl | final fp16 loss scale | overflow steps | "
             "BLEU nt2014 | BLEU RWTH | best-layer AER | outcome |", "|" + "---|" * 11]
    for r in rows:
        aer = r["aer"]["best_layer"] if r["aer"] else None
        outcome = r["crash"] or ("valid loss NaN" if r["valid_ppl"] is not None and math.isnan(r["valid_ppl"]) else "trained")
        lines.append(f"| {r['model']} | {r['updates']} | {fmt(r['train_seconds'], 'd')} | {fmt(r['train_wps'], '.0f')} | "
                     f"{fmt(r['valid_ppl'])} | {fmt(r['final_loss_scale'], 'g')} | {r['overflow_steps']} | "
                     f"{fmt(r['bleu_newstest2014'])} | {fmt(r['bleu_rwth'])} | "
                     f"{fmt(100 * aer['aer']) + ' (' + aer['config'] + ')' if aer else '—'} | {outcome[:60]} |")
    return "\n".join(lines)


def plot(rows, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.4))
    for r in rows:
        if r["valid_curve"]:
            a.plot(*zip(*r["valid_curve"]), marker="o", label=r["model"])
        if r["loss_scale_curve"]:
            b.plot(*zip(*r["loss_scale_curve"]), label=r["model"])
    a.set(xlabel="updates", ylabel="validation ppl (newstest2013)", yscale="log")
    b.set(xlabel="updates", ylabel="fp16 loss scale", yscale="log")
    b.axhline(1e-4, color="grey", linestyle=":", linewidth=0.8)
    b.text(0, 1.3e-4, "fairseq's minimum: training stops", fontsize=7)
    a.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run", type=Path)
    p.add_argument("--data", type=Path, default=None, help="prepare.py's folder (references for BLEU)")
    args = p.parse_args()
    folders = sorted(f for f in args.run.iterdir() if (f / "train.log").is_file())
    if not folders:
        sys.exit(f"summarize.py: error: {args.run}: no DIR-VARIANT/train.log folders (gpu_run.sh writes them)")
    rows = [summarise_model(f, args.data) for f in folders]
    (args.run / "results.json").write_text(json.dumps(rows, indent=1) + "\n")
    (args.run / "results.md").write_text(table(rows) + "\n")
    plot(rows, args.run / "curves.png")
    print(table(rows))


if __name__ == "__main__":
    main()
