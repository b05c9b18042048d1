#!/usr/bin/env python
"""Write examples/benchmark/README.md from benchmark.json / benchmark.txt (run after scripts/benchmark.py)."""
import json
import os
import sys

BASE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples", "benchmark")


def fmt(ratios: dict, variant: str, key: str, spec: str = ".2f") -> str:
    x = ratios.get(variant, {}).get(key)
    return "n/a" if x is None else f"{x:{spec}}x"


def quart(result: dict, variant: str, key: str) -> str:
    q = result.get("ratio_quartiles", {}).get(variant, {}).get(key)
    return "n/a" if q is None else f"{q[0]:.3f}–{q[1]:.3f}"


def profile_section(result: dict) -> list:
    """Where the time goes: each workload's self time per variant, and the shares of the dense layers'
    products (``mm``/``addmm``) and the attention's own (``bmm``, SDPA), from benchmark.json's ``profile``."""
    c = result["config"]
    lines = ["## Where the time goes", "",
             f"Three profiled calls per variant and workload after the rounds (torch.profiler, self CPU time a call; the full "
             f"tables: `{c.get('profile_file', 'the --profile file')}`). `dense` = the linear layers' `aten::mm` +"
             " `aten::addmm`; `attention` = the attention's batched products (`aten::bmm`) or PyTorch's fused SDPA;"
             " `other` = everything else (element-wise ops, normalisation, dropout masks, the output log-softmax,"
             " beam search's bookkeeping). Profiled once, not interleaved: noisier than the rounds above.", "",
             "| workload | variant | self time (ms) | dense | attention | other |", "|---|---|---|---|---|---|"]
    for p in result["profile"]:
        d, a = p["shares"]["dense"], p["shares"]["attention"]
        lines.append(f"| {p['workload']} | {p['variant']} | {p['self_us'] / 1e3:.1f} | {100 * d:.0f}% | "
                     f"{100 * a:.0f}% | {100 * (1 - d - a):.0f}% |")
    return lines + [""]


HARNESS = os.path.join("train", "cpu-small-multi30k", "benchmark_train.json")  # issue 34's second harness


def harness_lines(base: str) -> list:
    """A reading line from the independent harness (scripts/benchmark_train.py: fairseq's own Trainer), if its
    committed result is there (none otherwise); one group and one batch size expected."""
    path = os.path.join(base, HARNESS)
    if not os.path.exists(path):
        return []
    try:
        with open(path) as f:
            h = json.load(f)
        (g,) = h["groups"].values()
        (key,) = g["median"]["fairseq-softmax"]
        r, q = g["ratio_vs_fairseq_softmax"], g["ratio_quartiles"]
        tokens = key.split("@")[1]
        per_sentence = g["target_tokens_per_batch"][tokens] / g["sentences_per_batch"][tokens]
        c = h["config"]
        figures = {v: f"{r[v][key]:.3f}x [{q[v][key][0]:.2f}–{q[v][key][1]:.2f}]"
                   for v in ("rela-g", "rela-i", "softmax", "fairseq-softmax-2")}
    except (OSError, ValueError, KeyError, TypeError, ZeroDivisionError) as err:
        sys.exit(f"benchmark_readme.py: error: {path}: not one group, batch size and the five variants "
                 f"({type(err).__name__}: {err})")
    return [f"- Independent harness (`scripts/benchmark_train.py`: fairseq's own `Trainer`, {c['batches']}, "
            f"--max-tokens {tokens}, {per_sentence:.0f} target tokens a sentence with `</s>`, {c['rounds']} "
            f"interleaved rounds, {c['time'][:16]} UTC; [`{HARNESS}`]({HARNESS})): ReLA-g {figures['rela-g']}, "
            f"ReLA-i {figures['rela-i']}, our softmax {figures['softmax']}; the identical copy "
            f"{figures['fairseq-softmax-2']}."]


def limits_lines(result: dict) -> list:
    """What bounds ReLA's CPU training speed, with the dense layers' share read from the profile."""
    train = [p for p in result.get("profile", []) if p["workload"].startswith("training step")]

    def span(kind, variants):
        xs = [p["shares"][kind] for p in train if p["variant"] in variants]
        return f"{100 * min(xs):.0f}–{100 * max(xs):.0f}%" if xs else "n/a"

    return ["- What limits the rest: the dense layers take " + span("dense", {p["variant"] for p in train})
            + " of a training step for every variant (below); ReLA's attention itself (batched products) "
            + span("attention", {"rela-g", "rela-i"}) + ", stock softmax's fused SDPA "
            + span("attention", {"fairseq-softmax"}) + ".",
            "  What ReLA adds is its head normaliser: about 15 element-wise passes over (T, B, E) per attention in",
            "  the backward alone (`_RMSNormFunctionBackward` in `profile-cpu.txt`), plus the forward's and the",
            "  gate's. Eager PyTorch cannot fuse them on the CPU (in torch 2.13, `_fused_rms_norm_backward` has",
            "  a CUDA kernel only)."]


def main() -> None:
    base = sys.argv[1] if len(sys.argv) > 1 else BASE
    try:
        with open(os.path.join(base, "benchmark.json")) as f:
            result = json.load(f)
        with open(os.path.join(base, "benchmark.txt")) as f:
            table = f.read().split("\n", 1)[1]
    except (OSError, ValueError, IndexError) as err:
        sys.exit(f"benchmark_readme.py: error: cannot read the benchmark output in {base}: {err}")
    c, r = result["config"], result["ratio_vs_fairseq_softmax"]
    trains = sorted((k for k in r["fairseq-softmax"] if k.startswith("train_tok_s@")), key=lambda k: int(k.split("@")[1]))
    lengths = " / ".join(k.split("@")[1] for k in trains)

    def train(v):
        return " / ".join(fmt(r, v, k) for k in trains)

    noise = "fairseq-softmax-2"
    lines = [
        "# Speed and memory of each attention",
        "",
        "Regenerate (15–25 minutes on 2 idle CPU cores):",
        "",
        "```bash",
        f"python scripts/{c['command']}",
        "python scripts/benchmark_readme.py",
        "```",
        "",
        "(writes `benchmark.json`, `benchmark.txt`, `scaling.png` and, with `--profile`, the profile tables; on a",
        "GPU add `--device cuda --dtype float16` or `bfloat16`; add `sparsemax,entmax15` to `--variants` for the",
        "sparse baselines.)",
        "",
        f"Measured {c['time']} on {c['device']}, torch {c['torch']}, {c['dtype']}; model {c['model']};",
        f"{c['rounds']} rounds of {c['reps']} timed repetitions (after a warm-up)"
        + (f"; wall time {c['wall_s'] / 60:.0f} min, load average at the end {c['load_average'][0]:.2f}"
           if c.get("wall_s") is not None and c.get("load_average") else "") + ".",
        "In each round every measurement runs for every variant side by side, and round r starts with the r-th",
        "variant (no variant is always first). Every figure is the median over rounds of the ratio against stock",
        "fairseq `transformer` (softmax) measured in the same round, except the first row (absolute).",
        "`fairseq-softmax-2` is an identical copy of the baseline: its ratios are the noise floor of this run.",
        "",
        "```",
        table.strip(),
        "```",
        "",
        "Columns: `train_tok_s@L` target tokens/s of forward + backward + Adam at sentence length L (2,048",
        "tokens a batch); `decode_sent_s` beam-4 incremental decoding, 16 sentences of 24 tokens, fixed",
        "output length; `forward_tok_s@64` teacher-forced forward; `beam-shared` beam-4 decoding with the",
        "encoder keys shared across the beam (what `fairseq-generate` now does) over the same decoding",
        "with one copy per hypothesis (stock fairseq); `align w` / `align n` beam-5 decoding with",
        "`--task translation_alignment --print-alignment` (recording + word links; weights / norms) over",
        "the same decoding without; `rec on/off` a teacher-forced pass with norm recording over one",
        "without; `step MiB` how much one training step at the longest length raises a fresh process's",
        "peak RSS.",
        "",
        "![cost vs length](scaling.png)",
        "",
        "Reading:",
        "",
        f"- Noise floor: the identical copy's per-round ratios (quartiles) span "
        + ", ".join(f"{quart(result, noise, k)} at L = {k.split('@')[1]}" for k in trains)
        + f"; its medians are {train(noise)}. Differences inside that band are not resolved by this run.",
        f"- ReLA-g trains at {train('rela-g')} (L = {lengths}) of stock softmax, ReLA-i at {train('rela-i')};"
        f" goal ≥ 1.0x outside the noise band. Per-round quartiles, ReLA-g: "
        + ", ".join(quart(result, "rela-g", k) for k in trains) + "; ReLA-i: "
        + ", ".join(quart(result, "rela-i", k) for k in trains) + ".",
        f"- Decoding (beam 4): ReLA-g {fmt(r, 'rela-g', 'decode_sent_s')}, ReLA-i {fmt(r, 'rela-i', 'decode_sent_s')},"
        f" our softmax {fmt(r, 'softmax', 'decode_sent_s')} (the paper: 0.98x on GPU). Sharing the encoder keys"
        f" across the beam gains {fmt(r, 'rela-g', 'beam_shared_speedup')} (ReLA-g) /"
        f" {fmt(r, 'softmax', 'beam_shared_speedup')} (softmax) at beam 4.",
        f"- Alignment extraction in beam-5 decoding costs {fmt(r, 'rela-g', 'align_weights_over_plain')} (weights) and"
        f" {fmt(r, 'rela-g', 'align_norms_over_plain')} (norms) of plain decoding for ReLA-g,"
        f" {fmt(r, 'rela-i', 'align_weights_over_plain')} / {fmt(r, 'rela-i', 'align_norms_over_plain')} for ReLA-i,"
        f" {fmt(r, 'softmax', 'align_weights_over_plain')} / {fmt(r, 'softmax', 'align_norms_over_plain')} for softmax"
        " (goal ≤ 1.2x for weights).",
        f"- Norm recording in a teacher-forced pass: {fmt(r, 'softmax', 'analysis_recording_on_over_off')} softmax,"
        f" {fmt(r, 'rela-i', 'analysis_recording_on_over_off')} ReLA-i, {fmt(r, 'rela-g', 'analysis_recording_on_over_off')}"
        " ReLA-g (its gate makes `f(x)` depend on the query in every dimension: exact norms cost O(T·S·E²)).",
    ] + harness_lines(base) + limits_lines(result) + [
        "- Threads: on this shared 2-core machine the run uses `--threads 1`; with 2 OpenMP threads and",
        "  other jobs on the cores, single timings were 5–20x slower and erratic (thread spin-waiting).",
        "",
    ]
    if result.get("profile"):
        lines += profile_section(result)
    with open(os.path.join(base, "README.md"), "w") as f:
        f.write("\n".join(lines))


if __name__ == "__main__":
    main()
