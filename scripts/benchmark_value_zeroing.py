#!/usr/bin/env python
"""What value zeroing costs against a plain teacher-forced pass (fairseq_rela/value_zeroing.py).

Times, interleaved over rounds, one teacher-forced forward of a batch of a ``rela_transformer`` (default: the
RWTH example's model, 3+3 layers, 256/1024, 4 heads, a 16,000-word shared vocabulary; untrained: the cost
does not depend on the weights) in four ways: plain (no recorder), with the weights recorded, with the block
decomposition and ALTI (what ``fairseq-rela-analyze`` records by default) and with value zeroing on top
(``--value-zeroing``); per sentence length (source = target length), batches of about ``--tokens`` tokens.
Writes a JSON file and a Markdown table with the date, the machine and the wall time::

    python scripts/benchmark_value_zeroing.py --output-dir examples/benchmark/value_zeroing
"""
import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
import time

PROG = "benchmark_value_zeroing.py"
MODES = ("plain", "weights", "block", "value-zeroing")


def fail(message: str) -> None:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    sys.exit(1)


def build_model(args):
    import torch
    from fairseq import options, tasks

    import fairseq_rela.models  # noqa: F401  (registers rela_transformer)

    folder = tempfile.mkdtemp(prefix="vz-bench-")
    for lang in ("src", "tgt"):
        with open(os.path.join(folder, f"dict.{lang}.txt"), "w") as f:
            f.writelines(f"w{i} 1\n" for i in range(args.vocab))
    parser = options.get_training_parser()
    argv = [folder, "--task", "translation", "--source-lang", "src", "--target-lang", "tgt", "--arch", "rela_transformer",
            "--encoder-layers", str(args.layers), "--decoder-layers", str(args.layers), "--encoder-embed-dim",
            str(args.dim), "--decoder-embed-dim", str(args.dim), "--encoder-ffn-embed-dim", str(4 * args.dim),
            "--decoder-ffn-embed-dim", str(4 * args.dim), "--encoder-attention-heads", "4",
            "--decoder-attention-heads", "4", "--share-all-embeddings", "--attention-activation", args.activation,
            "--cpu"]
    parsed = options.parse_args_and_arch(parser, argv)
    task = tasks.setup_task(parsed)
    torch.manual_seed(0)
    return task.build_model(parsed).eval()


def run(model, net_input, mode: str) -> float:
    import torch

    from fairseq_rela.recording import AttentionRecorder

    start = time.perf_counter()
    with torch.no_grad():
        if mode == "plain":
            model(**net_input)
        else:
            with AttentionRecorder(model, norms=mode != "weights", block=mode in ("block", "value-zeroing"),
                                   value_zeroing=mode == "value-zeroing"):
                model(**net_input)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--lengths", default="16,32,64", help="sentence lengths (source = target), comma-separated")
    parser.add_argument("--tokens", type=int, default=1024, help="source tokens per batch (default 1024)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--vocab", type=int, default=16000)
    parser.add_argument("--activation", default="rela", choices=["rela", "softmax"])
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args()
    try:
        lengths = [int(x) for x in args.lengths.split(",")]
    except ValueError:
        fail(f"--lengths {args.lengths!r}: expected comma-separated integers")
    if not lengths or min(lengths) < 2 or args.tokens < 2 or args.rounds < 1 or args.layers < 1 or args.dim % 4:
        fail("--lengths >= 2, --tokens >= 2, --rounds >= 1, --layers >= 1 and --dim a multiple of 4")
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    wall = time.time()
    model = build_model(args)
    rows = []
    for length in lengths:
        batch = max(1, args.tokens // length)
        gen = torch.Generator().manual_seed(length)
        tokens = torch.randint(4, args.vocab, (batch, length), generator=gen)
        tokens[:, -1] = 2  # </s>
        prev = torch.cat([torch.full((batch, 1), 2), tokens[:, :-1]], 1)
        net_input = {"src_tokens": tokens, "src_lengths": torch.full((batch,), length), "prev_output_tokens": prev}
        for mode in MODES:  # warm-up
            run(model, net_input, mode)
        times = {mode: [] for mode in MODES}
        for _ in range(args.rounds):
            for mode in MODES:
                times[mode].append(run(model, net_input, mode))
        median = {mode: statistics.median(t) for mode, t in times.items()}
        rows.append({"length": length, "batch": batch, "seconds": median,
                     "vs_plain": {mode: median[mode] / median["plain"] for mode in MODES}})
        print(f"length {length}: " + ", ".join(f"{m} {median[m]:.3f}s ({median[m] / median['plain']:.1f}x)"
                                                for m in MODES), flush=True)
    result = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
              "machine": f"{platform.machine()} {platform.processor() or ''} {os.cpu_count()} CPUs".strip(),
              "torch": torch.__version__, "threads": torch.get_num_threads(), "wall_seconds": round(time.time() - wall),
              "command": " ".join([os.path.basename(sys.argv[0])] + sys.argv[1:]),
              "model": {"layers": args.layers, "dim": args.dim, "ffn": 4 * args.dim, "heads": 4, "vocab": args.vocab,
                        "activation": args.activation},
              "rounds": args.rounds, "rows": rows}
    os.makedirs(args.output_dir, exist_ok=True)
    with open(os.path.join(args.output_dir, "results.json"), "w") as f:
        json.dump(result, f, indent=1)
    lines = [f"`{result['command']}`, {result['date']}, {result['machine']}, torch {result['torch']} "
             f"({result['threads']} threads), wall time {result['wall_seconds']} s; {args.layers}+{args.layers} layers, "
             f"{args.dim}/{4 * args.dim}, 4 heads, {args.activation}, vocabulary {args.vocab}; median of "
             f"{args.rounds} interleaved rounds, one teacher-forced forward of the batch",
             "", "| length | sentences | plain (s) | weights | block + ALTI | + value zeroing |", "|---|---|---|---|---|---|"]
    for r in rows:
        s, v = r["seconds"], r["vs_plain"]
        lines.append(f"| {r['length']} | {r['batch']} | {s['plain']:.3f} | {v['weights']:.1f}x | {v['block']:.1f}x | "
                     f"{v['value-zeroing']:.1f}x |")
    with open(os.path.join(args.output_dir, "results.md"), "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
