"""Summarise the CPU-scale replication (``multi30k.sh``): one row per attention variant.

Reads ``RUN/de-en-VARIANT/`` (``train.log``, ``times.txt``, ``gen-test.txt`` or its gzipped copy,
``analysis/stats.json``)
and the references of ``prepare_multi30k.py``; writes ``RUN/results.md``, ``RUN/results.json`` and
``RUN/curves.png`` (validation perplexity by update, and over softmax's at the same update;
cross-attention sparsity, null rate and head JSD by layer). Speeds are relative to softmax in the
same run; a part that is missing is reported missing. A model trained in several pieces
(``multi30k.sh`` resumes from ``checkpoint_last.pt``) is read as one run: its training time is the
sum over the pieces, up to the last finished epoch of each. A convergence table says how each
training ended (patience, the epoch limit, or not yet) and how fast its validation perplexity still
moved over the last epochs, and each variant's validation perplexity over softmax's at the same update.
Without softmax in the run, ``--softmax-log`` takes softmax's ``train.log`` from another run of the same
recipe (``multi30k.sh`` trains the same schedule whatever the epoch limit): its validation curve only,
for the ratio; speeds and BLEU are never compared across runs.  A table lists the ratio at every
update both validated.  BLEU has SacreBLEU's 95% bootstrap interval: paired against softmax where
the run has softmax, each variant's own otherwise.

    python examples/replication/summarize_multi30k.py work/m30k --data work/multi30k
"""
import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from summarize import ORDER, bleu, fmt, generation, hypotheses, parse_train_log, read_lines  # noqa: E402

KINDS = ("encoder_self", "decoder_self", "cross")
TREND_EPOCHS = 5  # the window of the convergence trend (multi30k.sh's patience for the long runs)


def _mean(values):
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def summarise(folder: Path, refs) -> dict:
    log = parse_train_log((folder / "train.log").read_text(encoding="utf-8", errors="replace"))
    times = {}
    if (folder / "times.txt").is_file():
        for line in (folder / "times.txt").read_text().split("\n"):
            if line.strip():
                key, value = line.split(maxsplit=1)
                times[key] = value
    epochs = [int(float(v)) for v in _epoch_values(folder)]
    curve = valid_curve(log)
    best = min(curve, key=lambda uv: uv[1]) if curve else None
    row = {
        "variant": folder.name.split("-", 2)[2], "epochs": max(epochs) if epochs else 0,
        "updates": log["train"][-1][0] if log["train"] else 0,
        "best_updates": int(times["best_updates"]) if times.get("best_updates", "None") != "None" else None,
        "train_seconds": training_seconds(folder),
        "train_wps": _mean([float(kv) for kv in _train_wps(folder)]),
        "valid_ppl_best": best[1] if best else None, "valid_curve": curve,
        "stopped": stop_reason(folder), "valid_ppl_trend": trend(curve),
        "decode_seconds": int(times["decode_test_seconds"]) if "decode_test_seconds" in times else None,
        "bleu": None, "bleu_signature": None, "bleu_ci95": None, "bleu_p_vs_softmax": None, "attention": None,
    }
    hyps = hypotheses(generation(folder, "gen-test.txt"), len(refs))
    if hyps is not None:
        row["bleu"], row["bleu_signature"] = bleu(hyps, refs, "13a")
    stats = folder / "analysis" / "stats.json"
    if stats.is_file():
        attention = json.loads(stats.read_text())["attention"]
        row["attention"] = {kind: {layer: {"sparsity": s["sparsity_mean"], "null_rate": s["null_rate_mean"],
                                           "head_jsd": s["head_jsd"],
                                           "eos_weight": s["token_share"]["eos"]["weight"],
                                           "eos_norm": s["token_share"]["eos"]["norm"],
                                           "mixing": s.get("mixing_ratio")}
                                   for layer, s in layers.items()} for kind, layers in attention.items()}
    return row


def valid_curve(log):
    """``[(update, ppl)]`` of a parsed ``train.log``; an epoch validated again after a resume counts once."""
    return sorted(dict(log["valid"]).items())


def training_seconds(folder: Path):
    """Seconds of training to the last finished epoch, summed over the pieces of a resumed run.

    fairseq's ``wall`` restarts at 0 in every process; each piece counts up to its last ``train | epoch``
    line (an epoch cut short by a stop is trained again after the resume, so it is not counted); a
    start from scratch discards the pieces before it.
    """
    total, last = 0.0, None
    for line in (folder / "train.log").read_text(encoding="utf-8", errors="replace").split("\n"):
        if "Preparing to load checkpoint" in line:  # a new process: bank the previous piece
            total, last = total + (last or 0.0), None
        elif "No existing checkpoint found" in line:  # trained from scratch again: earlier pieces are gone
            total = 0.0
        elif "| train | epoch" in line and "| wall " in line:
            last = float(line.split("| wall ")[1].split("|")[0])
    return int(round(total + (last or 0.0))) if total or last is not None else None


def stop_reason(folder: Path):
    """How the last training process ended: ``"patience"`` (validation stopped improving),
    ``"max epoch"``, or None (still running, or interrupted)."""
    text = (folder / "train.log").read_text(encoding="utf-8", errors="replace")
    last_piece = text.rsplit("Preparing to load checkpoint", 1)[-1]
    if "early stop since valid performance hasn't improved" in last_piece:
        return "patience"
    return "max epoch" if "done training in" in last_piece else None


def ratio_to_softmax(curve, soft_curve):
    """``(update, ppl / softmax's ppl)`` at the last update both curves validated, or None."""
    soft = dict(soft_curve)
    common = [(u, p / soft[u]) for u, p in curve if u in soft]
    return common[-1] if common else None


def trend(curve, epochs: int = TREND_EPOCHS):
    """Mean relative change of validation perplexity per epoch over the last ``epochs`` epochs
    (``(p_last / p_last-k) ** (1/k) - 1``; negative: still improving), or None if too short."""
    if len(curve) <= epochs:
        return None
    return (curve[-1][1] / curve[-1 - epochs][1]) ** (1 / epochs) - 1


def _epoch_values(folder: Path):
    for line in (folder / "train.log").read_text(encoding="utf-8", errors="replace").split("\n"):
        if "| valid | epoch" in line:
            yield line.split("| valid | epoch")[1].split("|")[0].strip()


def _train_wps(folder: Path):
    """Words per second of each finished epoch (fairseq's ``train`` lines)."""
    for line in (folder / "train.log").read_text(encoding="utf-8", errors="replace").split("\n"):
        if "| train | epoch" in line and "| wps " in line:
            yield line.split("| wps ")[1].split("|")[0].strip()


def kind_mean(row, kind, key):
    if not row["attention"] or kind not in row["attention"]:
        return None
    return _mean([s[key] for s in row["attention"][kind].values()])


def table(rows) -> str:
    soft = next((r for r in rows if r["variant"] == "softmax"), None)
    lines = ["| variant | epochs (best at update) | valid ppl | BLEU test2016 | train wps (x softmax) | "
             "decode s (x softmax) | cross sparsity | cross null | cross JSD | enc-self sparsity | enc-self null | "
             "dec-self sparsity | dec-self null |", "|" + "---|" * 13]
    for r in rows:
        def rel(key, invert=False):
            if r[key] is None or soft is None or not soft[key]:
                return fmt(r[key], ".0f")
            ratio = r[key] / soft[key]
            return f"{r[key]:.0f} ({(1 / ratio if invert else ratio):.2f}x)"

        lines.append(
            f"| {r['variant']} | {r['epochs']} ({fmt(r['best_updates'], 'd')}) | {fmt(r['valid_ppl_best'], '.2f')} | "
            f"{fmt(r['bleu'], '.1f')} | {rel('train_wps')} | {rel('decode_seconds', invert=True)} | "
            + " | ".join(fmt(kind_mean(r, k, key), ".3f") for k, key in (
                ("cross", "sparsity"), ("cross", "null_rate"), ("cross", "head_jsd"), ("encoder_self", "sparsity"),
                ("encoder_self", "null_rate"), ("decoder_self", "sparsity"), ("decoder_self", "null_rate")))
            + " |")
    return "\n".join(lines)


MIXING = (("encoder_self", "attention_weights"), ("encoder_self", "attention"), ("encoder_self", "block"),
          ("decoder_self", "attention_weights"), ("decoder_self", "block"), ("cross", "block"))


def significance(rows, hyps, refs, samples: int = 1000) -> None:
    """SacreBLEU's paired bootstrap (Koehn 2004) of every variant against softmax on the same test
    sentences: each row gets ``bleu_ci95`` (half-width of the 95% interval) and ``bleu_p_vs_softmax``.
    Without softmax in the run, each variant's own bootstrap interval (SacreBLEU's ``n_bootstrap``)."""
    import sacrebleu
    from sacrebleu.significance import PairedTest

    if hyps.get("softmax") is None:
        for r in rows:
            if hyps.get(r["variant"]) is not None:
                score = sacrebleu.BLEU(tokenize="13a").corpus_score(hyps[r["variant"]], [refs], n_bootstrap=samples)
                r["bleu_ci95"] = round(score._ci, 2)  # SacreBLEU keeps the half-width there (Score.estimate_ci)
        return
    named = [("softmax", hyps["softmax"])] + [(r["variant"], hyps[r["variant"]]) for r in rows
                                               if r["variant"] != "softmax" and hyps.get(r["variant"]) is not None]
    _, results = PairedTest(named, {"BLEU": sacrebleu.BLEU(tokenize="13a")}, [refs], test_type="bs",
                            n_samples=samples)()
    by_variant = {r["variant"]: r for r in rows}
    for (variant, _), result in zip(named, results["BLEU"]):
        by_variant[variant]["bleu_ci95"] = round(result.ci, 2)
        by_variant[variant]["bleu_p_vs_softmax"] = result.p_value


def convergence_table(rows) -> str:
    """How each training ended, how fast validation perplexity still moved at the end, how far it is
    from softmax's at the same update, and whether BLEU differs from softmax's beyond the test set's
    sampling noise."""
    lines = [f"| variant | epochs | stopped by | best at update | valid ppl change per epoch, last {TREND_EPOCHS} | "
             "valid ppl / softmax's (at update) | BLEU ± 95% CI | p (paired bootstrap vs softmax) |", "|" + "---|" * 8]
    for r in rows:
        t, p, g = r["valid_ppl_trend"], r["bleu_p_vs_softmax"], r.get("valid_ppl_vs_softmax")
        lines.append(f"| {r['variant']} | {r['epochs']} | {r['stopped'] or 'not finished'} | "
                     f"{fmt(r['best_updates'], 'd')} | {'missing' if t is None else f'{100 * t:+.2f}%'} | "
                     f"{'missing' if g is None else f'{g[1]:.3f} ({g[0]})'} | "
                     f"{fmt(r['bleu'], '.1f')} ± {fmt(r['bleu_ci95'], '.1f')} | {'—' if p is None else f'{p:.3f}'} |")
    return "\n".join(lines)


def ratio_table(rows, soft_curve) -> str:
    """Validation perplexity over softmax's at every update both validated, one column per variant."""
    soft = dict(soft_curve)
    curves = {r["variant"]: dict(r["valid_curve"]) for r in rows if r["variant"] != "softmax"}
    updates = sorted(u for u in soft if any(u in c for c in curves.values()))
    lines = ["| updates | " + " | ".join(curves) + " |", "|" + "---|" * (len(curves) + 1)]
    for u in updates:
        lines.append(f"| {u} | " + " | ".join(f"{c[u] / soft[u]:.3f}" if u in c else "—" for c in curves.values()) + " |")
    return "\n".join(lines)


def mixing_mean(row, kind, level):
    if not row["attention"] or kind not in row["attention"]:
        return None
    return _mean([(s.get("mixing") or {}).get(level) for s in row["attention"][kind].values()])


def mixing_table(rows) -> str:
    """Kobayashi et al. (2021)'s mixing ratios, mean over layers (rows without a block analysis: missing)."""
    lines = ["| variant | enc-self Attn-W | enc-self Attn-N | enc-self AttnResLn-N | dec-self Attn-W | "
             "dec-self AttnResLn-N | cross AttnResLn-N (source vs own state) |", "|" + "---|" * 7]
    for r in rows:
        lines.append(f"| {r['variant']} | " + " | ".join(fmt(mixing_mean(r, k, lvl), ".3f") for k, lvl in MIXING) + " |")
    return "\n".join(lines)


def colour(row):
    """One colour per variant, the same in every run's plots."""
    return f"C{ORDER.index(row['variant'])}" if row["variant"] in ORDER else None


def plot(rows, path: Path, soft_curve) -> None:
    """Curves; ``soft_curve``: softmax's validation curve (from this run, or ``--softmax-log``)."""
    from fairseq_rela.analysis.plots import pyplot
    from fairseq_rela.cli.files import save_figure

    plt = pyplot()
    fig, axes = plt.subplots(1, 5, figsize=(19, 3.3))
    soft = dict(soft_curve or [])
    if soft_curve and not any(r["variant"] == "softmax" for r in rows):  # another run's: dashed
        axes[0].plot(list(soft), list(soft.values()), ls="--", color=f"C{ORDER.index('softmax')}",
                     label="softmax (--softmax-log)")
        axes[1].axhline(1.0, ls="--", color=f"C{ORDER.index('softmax')}", lw=0.8)
    for r in rows:
        if r["valid_curve"]:
            axes[0].plot([u for u, _ in r["valid_curve"]], [p for _, p in r["valid_curve"]], marker=".",
                         label=r["variant"], color=colour(r))
            gap = [(u, p / soft[u]) for u, p in r["valid_curve"] if u in soft]
            axes[1].plot([u for u, _ in gap], [g for _, g in gap], marker=".", color=colour(r))
        if r["attention"] and "cross" in r["attention"]:
            layers = sorted(r["attention"]["cross"], key=int)
            for ax, key in zip(axes[2:], ("sparsity", "null_rate", "head_jsd")):
                ax.plot([int(l) for l in layers], [r["attention"]["cross"][l][key] or 0 for l in layers],
                        marker="o", color=colour(r))
                ax.set_xticks([int(l) for l in layers])
    axes[0].set(xlabel="updates", ylabel="validation ppl (Multi30k val)", yscale="log")
    axes[1].set(xlabel="updates", ylabel="validation ppl / softmax's")
    for ax, name in zip(axes[2:], ("sparsity", "null rate", "head JSD (nats)")):
        ax.set(xlabel="decoder layer", ylabel=f"cross-attention {name}")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, str(path))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run", type=Path)
    p.add_argument("--data", type=Path, required=True, help="prepare_multi30k.py's folder (test.raw.en)")
    p.add_argument("--softmax-log", type=Path, help="softmax's train.log from another run of the same recipe, "
                   "for the validation perplexity over softmax's when RUN has no softmax")
    args = p.parse_args()
    folders = [f for f in args.run.iterdir() if (f / "train.log").is_file() and f.name.startswith("de-en-")]
    if not folders:
        sys.exit(f"summarize_multi30k.py: error: {args.run}: no de-en-VARIANT/train.log folders (multi30k.sh writes them)")
    refs_path = args.data / "test.raw.en"
    if not refs_path.is_file():
        sys.exit(f"summarize_multi30k.py: error: {refs_path} missing (run prepare_multi30k.py)")
    soft_log = None
    if args.softmax_log is not None:
        if not args.softmax_log.is_file():
            sys.exit(f"summarize_multi30k.py: error: --softmax-log {args.softmax_log}: no such file")
        soft_log = parse_train_log(args.softmax_log.read_text(encoding="utf-8", errors="replace"))
        if not soft_log["valid"]:
            sys.exit(f"summarize_multi30k.py: error: --softmax-log {args.softmax_log}: no validation lines "
                     "(not a fairseq-train log)")
        if any(f.name == "de-en-softmax" for f in folders):
            sys.exit(f"summarize_multi30k.py: error: --softmax-log: {args.run} has its own softmax model")
    refs = read_lines(refs_path)
    rows = sorted((summarise(f, refs) for f in folders), key=lambda r: ORDER.index(r["variant"])
                  if r["variant"] in ORDER else len(ORDER))
    soft_curve = (valid_curve(soft_log) if soft_log is not None
                  else next((r["valid_curve"] for r in rows if r["variant"] == "softmax"), None))
    for r in rows:
        r["valid_ppl_vs_softmax"] = ratio_to_softmax(r["valid_curve"], soft_curve) if soft_curve else None
    significance(rows, {f.name.split("-", 2)[2]: hypotheses(generation(f, "gen-test.txt"), len(refs)) for f in folders}, refs)
    (args.run / "results.json").write_text(json.dumps(rows, indent=1) + "\n")
    text = table(rows) + "\n\nConvergence:\n\n" + convergence_table(rows)
    if any(mixing_mean(r, "encoder_self", "block") is not None for r in rows):
        text += "\n\nMixing ratio (share of a token's new representation from other tokens):\n\n" + mixing_table(rows)
    if soft_curve and any(r["variant"] != "softmax" for r in rows):
        text += "\n\nValidation perplexity over softmax's, at each update both validated:\n\n" + ratio_table(rows, soft_curve)
    if soft_log is not None:
        text += f"\n\nsoftmax's validation curve: {args.softmax_log} (another run of the same recipe)"
    sig = next((r["bleu_signature"] for r in rows if r["bleu_signature"]), None)
    (args.run / "results.md").write_text(text + ("\n\nSacreBLEU: " + sig if sig else "") + "\n")
    plot(rows, args.run / "curves.png", soft_curve)
    print(text)
    if sig:
        print("SacreBLEU:", sig)


if __name__ == "__main__":
    main()
