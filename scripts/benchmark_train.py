#!/usr/bin/env python
"""Real fairseq training steps: target tokens/s and memory of each attention, by batch size and precision.

Each (architecture, precision, variant) gets fairseq's own ``Trainer``, built as ``fairseq-train`` builds
it from an argument list (task ``translation``, Adam, inverse-sqrt, label-smoothed cross-entropy, the
replication run's settings), and is fed batches that fairseq's own batching (``--max-tokens``) cut from
synthetic sentence pairs with a realistic length distribution (lognormal, median 13 subword tokens, about
16 a sentence on average as the 254k-pair replication corpus), or from the binarised training data
(``--data BIN``).  Every variant trains on the same batches; rounds interleave the variants, so machine
drift cancels (each round starts with the next variant), and each figure is the median over rounds of
the ratio against stock fairseq softmax measured in the same round; ``fairseq-softmax-2``, an identical
model, prints the noise floor.  Results are written after each group (architecture x precision), marked
PARTIAL until the last.

    python scripts/benchmark_train.py --device cuda --arch iwslt,base --tokens 4096,8192,16384,32768 \\
        --precision fp32,fp16,amp --output-dir OUT [--profile OUT/profile.txt]
    python scripts/benchmark_train.py --arch tiny --tokens 512 --rounds 2     # CPU: tiny sizes, fp32 only

Memory: ``state`` is what a trainer keeps between updates (weights, gradients, fp32 master copies,
Adam's moments: the tensors' bytes), ``measured`` on CUDA the allocated bytes its construction and first
update added, ``step peak`` how far one update rises above what is held before it (CUDA allocator peak;
on CPU the RSS peak, a lower bound once the allocator reuses freed memory).  ``fp32`` on a GPU uses TF32
matmuls, as ``examples/replication/gpu_run.sh``; cuDNN's fused attention is left out on the GPU for every
variant (it re-plans for each new batch shape: ``examples/benchmark/gpu/README.md``).
"""
import argparse
import json
import math
import os
import platform
import random
import sys
import tempfile
import time
from datetime import datetime, timezone

SCRIPTS = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, SCRIPTS)

import torch  # noqa: E402
from fairseq import options, tasks  # noqa: E402
from fairseq.data import Dictionary, LanguagePairDataset  # noqa: E402
from fairseq.dataclass.utils import convert_namespace_to_omegaconf  # noqa: E402
from fairseq.trainer import Trainer  # noqa: E402

import fairseq_rela.models  # noqa: E402,F401  (registers rela_transformer)
from benchmark import ACTIVATIONS, BASELINE, NOISE, STOCK, PeakMemory, hardware, resident_mib, summarise, \
    sync  # noqa: E402

PROG = "benchmark_train.py"
TINY = ["--encoder-embed-dim", "64", "--encoder-ffn-embed-dim", "128", "--encoder-layers", "2",
        "--encoder-attention-heads", "4", "--decoder-layers", "2", "--decoder-attention-heads", "4"]
SMALL = ["--encoder-embed-dim", "256", "--encoder-ffn-embed-dim", "1024", "--encoder-layers", "3",
         "--encoder-attention-heads", "4", "--decoder-embed-dim", "256", "--decoder-ffn-embed-dim", "1024",
         "--decoder-layers", "3", "--decoder-attention-heads", "4"]
ARCHS = {  # name: (stock fairseq arch + options, ours + options) of the same sizes
    "iwslt": (["--arch", "transformer_iwslt_de_en"], ["--arch", "rela_transformer_iwslt_de_en"]),  # Kobayashi et al.
    "base": (["--arch", "transformer"], ["--arch", "rela_transformer"]),  # Transformer base
    "small": (["--arch", "transformer", *SMALL], ["--arch", "rela_transformer", *SMALL]),  # the RWTH/CPU models
    "tiny": (["--arch", "transformer", *TINY], ["--arch", "rela_transformer_tiny"]),  # CPU tests
}
PRECISIONS = {"fp32": [], "fp16": ["--fp16"], "amp": ["--amp"]}
TRAIN = [  # examples/replication/gpu_run.sh's settings (the batch size is the benchmark's)
    "--task", "translation", "--source-lang", "de", "--target-lang", "en", "--share-all-embeddings",
    "--optimizer", "adam", "--adam-betas", "(0.9,0.98)", "--adam-eps", "1e-8", "--lr", "7e-4",
    "--lr-scheduler", "inverse_sqrt", "--warmup-updates", "1000", "--dropout", "0.1", "--attention-dropout", "0.1",
    "--weight-decay", "0.0001", "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1",
    "--seed", "1", "--max-source-positions", "1024", "--max-target-positions", "1024",
]
LENGTH_MEDIAN, LENGTH_SIGMA, LENGTH_MAX = 13, 0.6, 200  # synthetic subword lengths, end of sentence included


def fail(message: str):
    sys.exit(f"{PROG}: error: {message}")


def variant_args(arch: str, variant: str) -> list:
    stock, ours = ARCHS[arch]
    return list(stock) if variant in STOCK else [*ours, *ACTIVATIONS[variant]]


def build_trainer(data: str, arch: str, precision: str, variant: str, max_tokens: int, device) -> Trainer:
    """Task, model, criterion and ``Trainer`` as ``fairseq-train`` builds them from its arguments."""
    argv = [data, *TRAIN, *variant_args(arch, variant), *PRECISIONS[precision], "--max-tokens", str(max_tokens)]
    if device.type != "cuda":
        argv.append("--cpu")
    args = options.parse_args_and_arch(options.get_training_parser(), argv)
    cfg = convert_namespace_to_omegaconf(args)
    task = tasks.setup_task(cfg.task)
    torch.manual_seed(1)
    model = task.build_model(cfg.model)
    criterion = task.build_criterion(cfg.criterion)
    return Trainer(cfg, task, model, criterion)


def synthetic_data(directory: str, vocab: int) -> None:
    """``dict.de.txt`` and ``dict.en.txt`` (one joint dictionary, as the replication corpus's)."""
    d = Dictionary()
    for i in range(vocab - d.nspecial):
        d.add_symbol(f"t{i}", n=vocab - i)
    for lang in ("de", "en"):
        d.save(os.path.join(directory, f"dict.{lang}.txt"))


def synthetic_pairs(d: Dictionary, tokens: int, seed: int) -> LanguagePairDataset:
    """Sentence pairs of about ``tokens`` target tokens: source length lognormal, target 0.8-1.25x it."""
    rng = random.Random(seed)
    g = torch.Generator().manual_seed(seed)
    src, tgt, total = [], [], 0
    while total < tokens:
        n = min(LENGTH_MAX, max(2, round(rng.lognormvariate(math.log(LENGTH_MEDIAN), LENGTH_SIGMA))))
        m = min(LENGTH_MAX, max(2, round(n * rng.uniform(0.8, 1.25))))
        for length, out in ((n, src), (m, tgt)):
            out.append(torch.cat([torch.randint(d.nspecial, len(d), (length - 1,), generator=g),
                                  torch.tensor([d.eos()])]))
        total += m
    return LanguagePairDataset(src, torch.tensor([len(x) for x in src]), d, tgt,
                               torch.tensor([len(x) for x in tgt]), d, left_pad_source=True)


def batches(trainer: Trainer, max_tokens: int, count: int, real: bool) -> list:
    """``count`` batches of at most ``max_tokens`` tokens, cut by fairseq's batching (shuffled, seed 1)."""
    task = trainer.task
    if real:
        task.load_dataset("train", combine=False, epoch=1)
        dataset = task.dataset("train")
    else:
        dataset = synthetic_pairs(task.target_dictionary, (count + 2) * max_tokens, seed=max_tokens)
    itr = task.get_batch_iterator(dataset, max_tokens=max_tokens, max_positions=(1024, 1024),
                                  ignore_invalid_inputs=True, required_batch_size_multiple=8, seed=1,
                                  num_workers=0, data_buffer_size=0).next_epoch_itr(shuffle=True)
    out = [sample for _, sample in zip(range(count), itr)]
    if len(out) < count:
        fail(f"--data: only {len(out)} batches of {max_tokens} tokens in the training data, {count} needed")
    return out


def timed_steps(trainer: Trainer, samples: list, device) -> dict:
    """Train on ``samples`` (fairseq's ``train_step``, one update each): seconds, target tokens, updates made
    (fewer than steps where fp16 gradients overflowed and fairseq skipped the update), step memory peak."""
    seconds, tokens, peak = 0.0, 0, 0.0
    before = trainer.get_num_updates()
    for sample in samples:
        sync(device)
        with PeakMemory(device) as mem:
            start = time.perf_counter()
            trainer.train_step([sample])
            sync(device)
            seconds += time.perf_counter() - start
        tokens += sample["ntokens"]
        peak = max(peak, mem.mib)
    return {"seconds": seconds, "tokens": tokens, "skipped": len(samples) - (trainer.get_num_updates() - before),
            "step_peak_mib": peak}


def profile_step(trainer: Trainer, sample, device, rows: int) -> tuple:
    """One profiled update (after one unprofiled): torch.profiler's table of the top ops by self time, and
    the top ops as ``[(op, share of all self time)]``."""
    from torch.profiler import ProfilerActivity, profile

    trainer.train_step([sample])
    sync(device)
    cuda = device.type == "cuda"
    with profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])) as prof:
        trainer.train_step([sample])
        sync(device)
    events = prof.key_averages()
    key = "self_device_time_total" if cuda else "self_cpu_time_total"
    if cuda and not hasattr(next(iter(events)), key):
        key = "self_cuda_time_total"
    total = sum(getattr(e, key) for e in events) or 1
    top = sorted(events, key=lambda e: getattr(e, key), reverse=True)[:rows]
    return events.table(sort_by=key, row_limit=rows), [(e.key, getattr(e, key) / total) for e in top]


def _with_grads(x) -> list:
    """The tensors of ``x`` (a tensor, or a dict/list of them) and their gradients."""
    if isinstance(x, torch.Tensor):
        return [x, x.grad]
    if isinstance(x, dict):
        x = list(x.values())
    return [t for y in x for t in _with_grads(y)] if isinstance(x, (list, tuple)) else []


def state_mib(trainer) -> float:
    """Bytes of the tensors a trainer keeps between updates (weights, gradients, the fp32 master copies of
    ``--fp16``, the optimizer's state), counted once each."""
    opt = trainer.optimizer
    tensors = _with_grads(list(trainer.model.parameters()))
    for holder in (opt, getattr(opt, "fp32_optimizer", None)):
        tensors += _with_grads(getattr(holder, "fp32_params", None))
    tensors += [t for state in opt.optimizer.state.values() for t in state.values()]
    seen, total = set(), 0
    for t in tensors:
        if isinstance(t, torch.Tensor) and t.data_ptr() not in seen:
            seen.add(t.data_ptr())
            total += t.numel() * t.element_size()
    return total / 2**20


def measure(args, device, report) -> dict:
    """Every group (architecture x precision): build its trainers, then interleaved rounds.  ``report(result)``
    is called after each group (``pending_groups`` lists those still to come) and at the end."""
    start = time.monotonic()
    groups, profiles, skipped = {}, [], []
    order = [f"{arch}/{precision}" for arch in args.arch for precision in args.precision]
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data or tmp
        if not args.data:
            synthetic_data(tmp, args.vocab)
        for arch in args.arch:
            for precision in args.precision:
                group = f"{arch}/{precision}"
                if args.max_seconds and time.monotonic() - start > args.max_seconds:
                    skipped.append(group)
                    continue
                print(f"{group}: building {len(args.variants)} trainers", file=sys.stderr, flush=True)
                trainers, resident = {}, {}
                plan = {}
                for v in args.variants:
                    before = resident_mib(device)
                    trainers[v] = build_trainer(data, arch, precision, v, max(args.tokens), device)
                    if not plan:  # the same batches for every variant
                        plan = {t: batches(trainers[v], t, args.warmup + args.steps, bool(args.data))
                                for t in args.tokens}
                    trainers[v].train_step([plan[min(args.tokens)][0]])  # the first update allocates the optimizer state
                    sync(device)
                    resident[v] = {"state": state_mib(trainers[v]),
                                   "measured": resident_mib(device) - before if device.type == "cuda" else None}
                raw, memory, skips, timings = {}, {}, {}, {}
                rounds = 0
                for r in range(args.rounds):
                    if r and args.max_seconds and time.monotonic() - start > args.max_seconds:
                        break
                    print(f"{group}: round {r + 1}/{args.rounds}", file=sys.stderr, flush=True)
                    rotation = list(trainers)[r % len(trainers):] + list(trainers)[:r % len(trainers)]
                    for t in args.tokens:
                        for v in rotation:  # each round starts with the next variant: no variant is always first
                            trainer = trainers[v]
                            timed_steps(trainer, plan[t][:args.warmup], device)
                            m = timed_steps(trainer, plan[t][args.warmup:], device)
                            raw.setdefault(v, {}).setdefault(f"tok_s@{t}", []).append(m["tokens"] / m["seconds"])
                            timings.setdefault(v, {}).setdefault(t, []).append([m["tokens"], m["seconds"]])
                            memory.setdefault(v, {})[t] = max(memory.get(v, {}).get(t, 0.0), m["step_peak_mib"])
                            skips.setdefault(v, {})[t] = skips.get(v, {}).get(t, 0) + m["skipped"]
                    rounds += 1
                result = summarise(raw)
                result.update(rounds=rounds, resident_mib=resident, timings=timings, step_peak_mib=memory, skipped_updates=skips,
                              target_tokens_per_batch={t: sum(s["ntokens"] for s in plan[t][args.warmup:]) / args.steps
                                                       for t in args.tokens},
                              sentences_per_batch={t: sum(s["nsentences"] for s in plan[t][args.warmup:]) / args.steps
                                                   for t in args.tokens},
                              parameters={v: sum(p.numel() for p in tr.model.parameters()) for v, tr in trainers.items()})
                groups[group] = result
                if args.profile:
                    t = max(args.tokens)
                    for v, trainer in trainers.items():
                        table, top = profile_step(trainer, plan[t][args.warmup], device, args.profile_rows)
                        profiles.append({"group": group, "variant": v, "tokens": t, "table": table, "top": top})
                del trainers
                report({"groups": groups, "skipped_groups": skipped, "profiles": profiles,
                        "pending_groups": order[order.index(group) + 1:]})
                if device.type == "cuda":
                    torch.cuda.empty_cache()
    result = {"groups": groups, "skipped_groups": skipped, "profiles": profiles, "pending_groups": []}
    report(result)
    return result


def format_text(result: dict) -> str:
    c = result["config"]
    lines = [f"{c['time']}  {c['device']}  torch {c['torch']}  fairseq {c['fairseq']}  Python {c['python']}  "
             f"wall {c['wall_seconds']:.0f} s",
             f"command: {c['command']}",
             f"{c['batches']}; {c['warmup']} warm-up + {c['steps']} timed updates per variant, batch size and round"]
    if result["pending_groups"]:
        lines.append(f"PARTIAL: written after {', '.join(result['groups'])}; not measured yet: "
                     f"{', '.join(result['pending_groups'])} (a run stopped here was killed)")
    if result["skipped_groups"]:
        lines.append(f"PARTIAL: --max-seconds reached; not measured: {', '.join(result['skipped_groups'])}")
    for group, g in result["groups"].items():
        keys = list(g["median"][BASELINE])
        tokens = [int(k.split("@")[1]) for k in keys]
        lines += ["", f"== {group}: target tokens/s, {g['rounds']} interleaved rounds; {BASELINE} absolute, the others "
                      "the median of per-round ratios to it [quartiles]",
                  f"{'variant':<18}" + "".join(f"{f'--max-tokens {t}':>24}" for t in tokens)
                  + f"{'state MiB':>11}{'measured':>10}{'params':>12}",
                  f"{'(target tok/batch)':<18}" + "".join(f"{g['target_tokens_per_batch'][t]:>24.0f}" for t in tokens)]
        for v in g["median"]:
            if v == BASELINE:
                cells = "".join(f"{g['median'][v][k]:>24.0f}" for k in keys)
            else:
                cells = "".join(f"{g['ratio_vs_fairseq_softmax'][v][k]:>9.3f}x "
                                f"[{g['ratio_quartiles'][v][k][0]:.2f}..{g['ratio_quartiles'][v][k][1]:.2f}]" .rjust(24)
                                for k in keys)
            held = g["resident_mib"][v]
            measured = "" if held["measured"] is None else f"{held['measured']:.0f}"
            lines.append(f"{v:<18}{cells}{held['state']:>11.0f}{measured:>10}{g['parameters'][v]:>12,}")
        lines.append(f"{'step peak MiB':<18}" + "".join(f"{'':>24}" for _ in tokens))
        for v in g["median"]:
            lines.append(f"  {v:<16}" + "".join(f"{g['step_peak_mib'][v][t]:>24.0f}" for t in tokens))
        skipped = {v: s for v, s in g["skipped_updates"].items() if any(s.values())}
        if skipped:
            lines.append("fp16 overflow (update skipped by fairseq) in timed steps: "
                         + "; ".join(f"{v} " + ", ".join(f"{t}: {n}" for t, n in s.items() if n) for v, s in skipped.items()))
        if NOISE in g["ratio_quartiles"]:
            q = g["ratio_quartiles"][NOISE]
            lines.append(f"noise floor ({NOISE}, an identical model): per-round ratio quartiles "
                         + ", ".join(f"{t}: {q[k][0]:.3f}..{q[k][1]:.3f}" for t, k in zip(tokens, keys)))
    for p in result["profiles"]:
        lines.append(f"profile {p['group']} {p['variant']} @ {p['tokens']}: "
                     + ", ".join(f"{op} {100 * share:.0f}%" for op, share in p["top"][:5]))
    return "\n".join(lines)


def write_atomic(path: str, text: str) -> None:
    """Write ``path`` whole or not at all (a killed run leaves no half-written result)."""
    tmp = f"{path}.part"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    p.add_argument("--arch", default="iwslt,base", help=f"comma-separated, of {', '.join(ARCHS)}")
    p.add_argument("--tokens", default="4096,8192,16384,32768", help="--max-tokens values, comma-separated")
    p.add_argument("--precision", default=None,
                   help=f"comma-separated, of {', '.join(PRECISIONS)} (default: all on cuda, fp32 on cpu)")
    p.add_argument("--variants", default=",".join(ACTIVATIONS), help=f"comma-separated, with {BASELINE}")
    p.add_argument("--data", default=None, help="binarised De-En data (its train split): real batches instead of synthetic")
    p.add_argument("--vocab", type=int, default=10000, help="synthetic data's joint vocabulary (10k: the replication corpus's)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1, help="untimed updates per variant, batch size and round")
    p.add_argument("--steps", type=int, default=4, help="timed updates per variant, batch size and round")
    p.add_argument("--max-seconds", type=float, default=None,
                   help="start no further round or group after this many seconds (the result says what is missing)")
    p.add_argument("--profile", default=None, help="write torch.profiler tables of one update per variant here")
    p.add_argument("--profile-rows", type=int, default=25)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--output-dir", default=None, help="write benchmark_train.json and benchmark_train.txt here")
    args = p.parse_args(argv)
    if args.precision is None:
        args.precision = ",".join(PRECISIONS) if args.device == "cuda" else "fp32"
    lists = {}
    for name, choices in (("arch", ARCHS), ("precision", PRECISIONS), ("variants", ACTIVATIONS)):
        lists[name] = [x.strip() for x in getattr(args, name).split(",") if x.strip()]
        unknown = [x for x in lists[name] if x not in choices]
        if unknown or not lists[name] or len(set(lists[name])) < len(lists[name]):
            fail(f"--{name} {getattr(args, name)}: give distinct values of {', '.join(choices)}")
        setattr(args, name, lists[name])
    if BASELINE not in args.variants:
        fail(f"--variants must include {BASELINE} (the ratios are against it)")
    try:
        args.tokens = sorted({int(x) for x in args.tokens.split(",")})
    except ValueError:
        fail(f"--tokens {args.tokens}: give integers, comma-separated")
    if not args.tokens or args.tokens[0] < 16:
        fail("--tokens: each batch size must be at least 16 tokens")
    for name in ("rounds", "steps", "vocab", "profile_rows"):
        if getattr(args, name) < 1:
            fail(f"--{name.replace('_', '-')} must be at least 1")
    if args.warmup < 0 or (args.max_seconds is not None and args.max_seconds <= 0):
        fail("--warmup must be >= 0 and --max-seconds > 0")
    if args.device == "cuda" and not torch.cuda.is_available():
        fail("--device cuda: no CUDA device here")
    half = [x for x in args.precision if x != "fp32"]
    if half and args.device != "cuda":
        fail(f"--precision {','.join(half)}: needs a CUDA device (on cpu only fp32 is measured)")
    needed = [f"{name}.{lang}" for lang in ("de", "en") for name in ("train.de-en", "dict")]
    if args.data and not all(os.path.isfile(os.path.join(args.data, f"{n}.{'txt' if n.startswith('dict') else 'bin'}"))
                             for n in needed):
        fail(f"--data {args.data}: no binarised De-En train split with dict.de.txt and dict.en.txt")
    for path in filter(None, (args.output_dir, args.profile and os.path.dirname(os.path.abspath(args.profile)))):
        os.makedirs(path, exist_ok=True)
        if not os.access(path, os.W_OK):
            fail(f"{path}: not writable")
    return args


def main(argv=None) -> dict:
    import logging

    args = parse(argv)
    logging.basicConfig(level=logging.WARNING, force=True)  # importing fairseq set DEBUG
    logging.getLogger("fairseq").setLevel(logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        # cuDNN's fused attention re-plans for every new batch shape (examples/benchmark/gpu/README.md); our
        # attention leaves it out itself, stock fairseq's would pay it at nearly every step: left out for both
        torch.backends.cuda.enable_cudnn_sdp(False)
    t0 = time.monotonic()
    import fairseq

    def report(result: dict) -> None:
        """Fill in the config and write the files (whole or not at all), after each group and at the end."""
        result["config"] = {
            "time": datetime.now(timezone.utc).isoformat(timespec="seconds"), "device": hardware(device),
            "torch": torch.__version__, "cuda": torch.version.cuda, "fairseq": fairseq.__version__,
            "python": platform.python_version(), "wall_seconds": time.monotonic() - t0,
            "arch": {a: {"stock": ARCHS[a][0], "ours": ARCHS[a][1]} for a in args.arch},
            "precision": args.precision, "tokens": args.tokens, "variants": args.variants, "rounds": args.rounds,
            "warmup": args.warmup, "steps": args.steps, "train_options": TRAIN,
            "batches": (f"real batches of {args.data}'s train split" if args.data else
                        f"synthetic pairs, vocab {args.vocab}, source length lognormal (median {LENGTH_MEDIAN}, "
                        f"sigma {LENGTH_SIGMA}), target 0.8-1.25x"),
            "command": " ".join([PROG] + (sys.argv[1:] if argv is None else list(argv))),
        }
        text = format_text(result)
        if args.profile:
            write_atomic(args.profile, "\n\n".join(f"== {p['group']} {p['variant']}, one update of --max-tokens "
                                                   f"{p['tokens']} ({result['config']['device']})\n{p['table']}"
                                                   for p in result["profiles"]) + "\n")
        if args.output_dir:
            write_atomic(os.path.join(args.output_dir, "benchmark_train.json"), json.dumps(result, indent=1) + "\n")
            write_atomic(os.path.join(args.output_dir, "benchmark_train.txt"), text + "\n")

    result = measure(args, device, report)
    print(format_text(result))
    return result


if __name__ == "__main__":
    main()
