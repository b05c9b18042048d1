#!/usr/bin/env python
"""Where the time of a ``block``/``alti`` analysis pass goes: torch.profiler's op table (self CPU time) of one
``alti`` pass per variant, the model and batch of ``scripts/benchmark_analysis.py`` (defaults: 6+6 layers, 512
wide, 32 sentences of 24 tokens, one thread; its ``--layers``, ``--dim``, ``--heads``, ``--vocab``,
``--sentences`` and ``--length`` are passed on), after a warm-up.  ``--package-dir`` profiles another copy of
``fairseq_rela`` (a ``git archive`` of one commit)::

    python scripts/profile_block.py --package-dir /tmp/pkg-after \\
        --output examples/benchmark/analysis/block-after/profile.txt
"""
import argparse
import os
import sys
import time
from datetime import datetime, timezone

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchmark_analysis as bench  # noqa: E402


def fail(message: str) -> None:
    print(f"profile_block.py: error: {message}", file=sys.stderr)
    sys.exit(1)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="profile_block.py", description=__doc__.split("\n")[0])
    p.add_argument("--output", required=True, help="write the op tables here")
    p.add_argument("--package-dir", default=None, help="a copy of the repository whose fairseq_rela to profile")
    p.add_argument("--variants", default="softmax,rela-g")
    p.add_argument("--rows", type=int, default=15, help="ops per table")
    bench.add_model_args(p)
    args = p.parse_args(argv)
    variants = [v for v in args.variants.split(",") if v]
    bad = [v for v in variants if v not in bench.VARIANTS]
    if bad or not variants:
        fail(f"--variants {','.join(bad) or '(none)'}: choose from {', '.join(bench.VARIANTS)}")
    if bench.model_problem(args) or args.rows < 1:
        fail(bench.model_problem(args) or f"--rows {args.rows}: at least 1")
    if args.package_dir is not None:
        if not os.path.isfile(os.path.join(args.package_dir, "fairseq_rela", "__init__.py")):
            fail(f"--package-dir {args.package_dir}: no fairseq_rela/__init__.py there")
        sys.path.insert(0, os.path.abspath(args.package_dir))
    import torch
    from torch.profiler import ProfilerActivity, profile

    import fairseq_rela
    import fairseq_rela.models  # noqa: F401  (registers rela_transformer)

    torch.set_num_threads(1)
    load = os.getloadavg()
    wall = time.time()
    lines = []
    for variant in variants:
        model, task = bench.build(variant, args)
        sample = bench.sample_of(task, args.sentences, args.length)
        for source in ("plain", "block"):
            run = bench.make_pass(model, task, sample, source)
            run()
            start = time.perf_counter()
            run()
            lines.append(f"{variant} {source}: {time.perf_counter() - start:.3f} s (one pass, not profiled)")
        run = bench.make_pass(model, task, sample, "alti")
        run()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            run()
        lines += [f"{variant} alti, profiled:",
                  prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows)]
    head = (f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC}, {bench.hardware()}, torch {torch.__version__}, "
            f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, wall {time.time() - wall:.0f} s, package "
            f"{os.path.dirname(os.path.dirname(os.path.abspath(fairseq_rela.__file__)))}\n"
            f"model {args.layers}+{args.layers} layers, {args.dim} wide, {args.heads} heads, vocab {args.vocab}; "
            f"{args.sentences} sentences of {args.length} tokens\n"
            f"command: {' '.join(['profile_block.py'] + (sys.argv[1:] if argv is None else argv))}\n")
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    tmp = args.output + ".tmp"
    with open(tmp, "w") as f:
        f.write(head + "\n".join(lines) + "\n")
    os.replace(tmp, args.output)


if __name__ == "__main__":
    main()
