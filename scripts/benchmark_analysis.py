#!/usr/bin/env python
"""Analysis throughput: sentences per second of a teacher-forced pass with each attention source recorded.

For ``rela_transformer`` models with softmax, ReLA-i and ReLA-g attention (same sizes, default 6+6 layers,
512/2048, 8 heads; random init, seed 0: the cost does not depend on the weights), one batch of
``--sentences`` sentence pairs of ``--length`` tokens (source = target, no padding) is passed through the
model as ``fairseq-rela-analyze`` does it (fairseq_rela.analysis.runner.iter_sentences: one
AttentionRecorder for the whole run, cleared per batch, every attention recorded, then cut into
per-sentence records), recording:

* ``plain``: no recorder, the model's forward alone (``plain-2``: the same again, the noise floor);
* ``weights``: the attention weights (``AttentionRecorder(norms=False)``);
* ``norms``: the norm decomposition (``norms=True``; ``--alignment-source norms``);
* ``block``: the attention block's decomposition and its ALTI shares (``block=True``: what
  ``fairseq-rela-analyze`` records by default; ``--alignment-source block`` / ``alti``);
* ``alti``: ``block`` and then ALTI+ rolled out over the layers for every sentence
  (``SentenceAttention.contributions("alti")``, the sweep's ``rollout-alti``).

Rounds interleave the variants and sources (their order rotated each round); per round each source's time is
divided by ``plain``'s of the same variant and round, and the median over rounds is reported with quartiles.
``--package-dir`` times another copy of the package (e.g. ``git worktree add /tmp/before <commit>``) with
the same script.  Writes ``analysis.json`` and ``analysis.txt`` (date, machine, torch, threads, wall time,
command)::

    python scripts/benchmark_analysis.py --threads 1 --output-dir examples/benchmark/analysis/after
"""
import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone

PROG = "benchmark_analysis.py"
VARIANTS = {"softmax": ["--attention-activation", "softmax"],
            "rela-i": ["--attention-activation", "rela", "--rela-variant", "i"],
            "rela-g": ["--attention-activation", "rela", "--rela-variant", "g"]}
SOURCES = ("plain", "plain-2", "weights", "norms", "block", "alti")
RECORDERS = {"weights": {"norms": False}, "norms": {"norms": True}, "block": {"block": True}, "alti": {"block": True}}


def fail(message: str) -> None:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    sys.exit(1)


def add_model_args(p: argparse.ArgumentParser) -> None:
    """The model and batch options (shared with scripts/profile_block.py)."""
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--vocab", type=int, default=8000)
    p.add_argument("--sentences", type=int, default=32, help="sentence pairs per batch")
    p.add_argument("--length", type=int, default=24, help="tokens per sentence, </s> included (source = target)")


def model_problem(args) -> str:
    """What is wrong with the model and batch options, or "" (the caller names itself in the error)."""
    if min(args.layers, args.heads, args.sentences) < 1 or args.length < 2 or args.dim % args.heads:
        return "--layers, --heads, --sentences >= 1, --length >= 2 and --dim a multiple of --heads"
    if args.vocab < 10:
        return f"--vocab {args.vocab}: at least 10 words"
    return ""


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--output-dir", required=True, help="write analysis.json and analysis.txt here")
    p.add_argument("--package-dir", default=None,
                   help="a checkout whose fairseq_rela to time (default: the one this script imports)")
    p.add_argument("--label", default="", help="a note stored with the results (e.g. which commit)")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--sources", default=",".join(SOURCES), help="plain and plain-2 are always measured")
    add_model_args(p)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = p.parse_args(argv)
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown or not args.variants:
        fail(f"--variants {','.join(unknown) or '(none)'}: choose from {', '.join(VARIANTS)}")
    sources = [s.strip() for s in args.sources.split(",") if s.strip()]
    unknown = [s for s in sources if s not in SOURCES]
    if unknown:
        fail(f"--sources {','.join(unknown)}: choose from {', '.join(SOURCES)}")
    args.sources = [s for s in SOURCES if s in sources or s.startswith("plain")]
    if model_problem(args):
        fail(model_problem(args))
    if args.rounds < 1:
        fail(f"--rounds {args.rounds}: at least 1")
    if args.threads is not None and args.threads < 1:
        fail(f"--threads {args.threads}: at least 1")
    if args.package_dir is not None:
        if not os.path.isfile(os.path.join(args.package_dir, "fairseq_rela", "__init__.py")):
            fail(f"--package-dir {args.package_dir}: no fairseq_rela/__init__.py there")
        args.package_dir = os.path.abspath(args.package_dir)
    if os.path.exists(args.output_dir) and not os.path.isdir(args.output_dir):
        fail(f"--output-dir {args.output_dir}: not a directory")
    return args


def build(variant: str, args):
    """A rela_transformer of the benchmark's size with ``variant``'s attention (seed 0) and its dictionary."""
    import torch
    from fairseq import options, tasks

    folder = tempfile.mkdtemp(prefix="analysis-bench-")
    for lang in ("src", "tgt"):
        with open(os.path.join(folder, f"dict.{lang}.txt"), "w") as f:
            f.writelines(f"w{i} 1\n" for i in range(args.vocab))
    argv = [folder, "--task", "translation", "--source-lang", "src", "--target-lang", "tgt",
            "--arch", "rela_transformer", *VARIANTS[variant], "--encoder-layers", str(args.layers),
            "--decoder-layers", str(args.layers), "--encoder-embed-dim", str(args.dim), "--decoder-embed-dim",
            str(args.dim), "--encoder-ffn-embed-dim", str(4 * args.dim), "--decoder-ffn-embed-dim", str(4 * args.dim),
            "--encoder-attention-heads", str(args.heads), "--decoder-attention-heads", str(args.heads),
            "--share-all-embeddings", "--cpu"]
    parsed = options.parse_args_and_arch(options.get_training_parser(), argv)
    task = tasks.setup_task(parsed)
    torch.manual_seed(0)
    return task.build_model(parsed).eval(), task


def sample_of(task, n: int, length: int) -> dict:
    """``n`` random sentence pairs of ``length`` tokens (ending in ``</s>``), collated as fairseq does."""
    import torch

    d = task.source_dictionary
    g = torch.Generator().manual_seed(length)
    src = torch.randint(d.nspecial, len(d), (n, length), generator=g)
    tgt = torch.randint(d.nspecial, len(d), (n, length), generator=g)
    src[:, -1], tgt[:, -1] = d.eos(), d.eos()
    prev = torch.cat([torch.full((n, 1), d.eos()), tgt[:, :-1]], 1)
    return {"id": torch.arange(n), "target": tgt, "nsentences": n, "ntokens": tgt.numel(),
            "net_input": {"src_tokens": src, "src_lengths": torch.full((n,), length), "prev_output_tokens": prev}}


def make_pass(model, task, sample, source: str):
    """One analysis pass of ``sample`` recording ``source``, as a function of no arguments."""
    import torch

    from fairseq_rela.recording import AttentionRecorder, split_sentences

    if source.startswith("plain"):
        def plain():
            with torch.no_grad():
                model(**sample["net_input"])
        return plain
    recorder = AttentionRecorder(model, **RECORDERS[source])  # one per run, as iter_sentences makes it

    def recorded():
        recorder.clear()
        with torch.no_grad(), recorder:
            model(**sample["net_input"])
        for sent in split_sentences(sample, recorder, task.source_dictionary, task.target_dictionary):
            if source == "alti":
                sent.contributions("alti")
    return recorded


def summarise(raw: dict) -> dict:
    """Per variant and source: median seconds and sentences/s over rounds; per-round ratios over ``plain``
    of the same variant and round, their median and quartiles."""
    from benchmark import quartiles  # here: benchmark imports fairseq_rela, which main() imports first (--package-dir)

    out = {}
    for variant, per in raw.items():
        plain = per["plain"]
        out[variant] = {}
        for source, secs in per.items():
            ratios = [s / p for s, p in zip(secs, plain)]
            out[variant][source] = {"seconds": statistics.median(secs), "per_round_seconds": secs,
                                    "over_plain": statistics.median(ratios), "over_plain_quartiles": quartiles(ratios),
                                    "per_round_over_plain": ratios}
    return out


def format_table(result: dict) -> str:
    c = result["config"]
    n = c["sentences"]
    lines = [f"sentences/s of one analysis pass ({n} sentences of {c['length']} tokens) and its time over a plain "
             f"pass (median of per-round ratios, quartiles), {c['rounds']} interleaved rounds",
             f"{'variant':<9}{'source':<9}{'sent/s':>9}{'over plain':>12}{'quartiles':>16}"]
    for variant, per in result["results"].items():
        for source, r in per.items():
            q = r["over_plain_quartiles"]
            lines.append(f"{variant:<9}{source:<9}{n / r['seconds']:>9.2f}{r['over_plain']:>11.2f}x"
                         f"{f'{q[0]:.2f}..{q[1]:.2f}':>16}")
    return "\n".join(lines)


def hardware() -> str:
    import torch

    return (f"CPU {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
            f"{torch.get_num_threads()} torch threads")


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.package_dir:
        sys.path.insert(0, args.package_dir)
    import torch

    import fairseq_rela
    import fairseq_rela.models  # noqa: F401  (registers rela_transformer)

    package = os.path.dirname(os.path.dirname(os.path.abspath(fairseq_rela.__file__)))
    if args.package_dir and package != args.package_dir:
        fail(f"--package-dir {args.package_dir}: fairseq_rela was imported from {package}")
    if args.threads:
        torch.set_num_threads(args.threads)
    wall = time.time()
    passes, raw = {}, {}
    for variant in args.variants:
        model, task = build(variant, args)
        sample = sample_of(task, args.sentences, args.length)
        for source in args.sources:
            passes[(variant, source)] = make_pass(model, task, sample, source)
            passes[(variant, source)]()  # warm-up (and the recorder's first batch)
    keys = list(passes)
    for r in range(args.rounds):
        print(f"round {r + 1}/{args.rounds}", file=sys.stderr, flush=True)
        shift = r % len(keys)
        for variant, source in keys[shift:] + keys[:shift]:  # rotated: no pass always first or last
            start = time.perf_counter()
            passes[(variant, source)]()
            raw.setdefault(variant, {}).setdefault(source, []).append(time.perf_counter() - start)
    raw = {v: {s: raw[v][s] for s in args.sources} for v in args.variants}
    result = {"results": summarise(raw), "config": {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "device": hardware(),
        "torch": torch.__version__, "threads": torch.get_num_threads(), "wall_seconds": round(time.time() - wall),
        "command": " ".join([PROG] + sys.argv[1:]), "package": package, "label": args.label,
        "model": f"rela_transformer {args.layers}+{args.layers} layers, {args.dim}/{4 * args.dim}, {args.heads} heads, "
                 f"vocab {args.vocab}, random init (seed 0)",
        "sentences": args.sentences, "length": args.length, "rounds": args.rounds}}
    text = format_table(result)
    print(text)
    os.makedirs(args.output_dir, exist_ok=True)
    for name, content in (("analysis.json", json.dumps(result, indent=1) + "\n"),
                          ("analysis.txt", f"{json.dumps(result['config'])}\n{text}\n")):
        tmp = os.path.join(args.output_dir, f".{name}.tmp")
        with open(tmp, "w") as f:
            f.write(content)
        os.replace(tmp, os.path.join(args.output_dir, name))


if __name__ == "__main__":
    main()
