#!/usr/bin/env python
"""Speed and memory of each attention, measured side by side in one run.

For stock fairseq ``transformer`` (softmax) and ``rela_transformer`` with softmax, rela-g, rela-i,
sparsemax and entmax15 (same sizes, same init seed), rounds interleave the variants so machine
drift cancels, and the median of the rounds is reported:

* training: target tokens/s of forward + backward + Adam update, at two sentence lengths;
* decoding: sentences/s of incremental beam search (beam 4, fixed output length), and for
  ``rela_transformer`` the same with the beam-shared cross-attention switched off;
* alignment: beam-5 decoding with the word alignments ``fairseq-generate --task translation_alignment
  --print-alignment`` computes (weights, norms) over the same decoding without;
* analysis: a teacher-forced forward with norm recording off and on;
* memory: peak memory of one training step (CUDA: allocator peak; CPU: peak RSS of a fresh process);
* scaling: forward+backward time per sentence for lengths 64..1024.

Ratios are against stock fairseq softmax measured in the same round, and the median over rounds
is reported; ``fairseq-softmax-2``, an identical model, shows the noise floor of such a ratio.  CPU by default; on a GPU use ``--device cuda --dtype
fp16|bf16``.  Writes JSON and a text table:

    python scripts/benchmark.py --output-dir examples/benchmark [--quick]
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import date, datetime, timezone
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from fairseq import options
from fairseq.data import Dictionary
from fairseq.models import ARCH_MODEL_REGISTRY
from fairseq.sequence_generator import SequenceGenerator

import fairseq_rela.models  # noqa: F401  (registers rela_transformer)
from fairseq_rela.recording import AlignmentSource, AttentionRecorder

ACTIVATIONS = {  # each variant's attention options; the "fairseq-*" ones are stock fairseq (--arch transformer*)
    "fairseq-softmax": [],
    "fairseq-softmax-2": [],  # identical model: the noise floor of the ratios
    "softmax": ["--attention-activation", "softmax"],
    "rela-g": ["--attention-activation", "rela", "--rela-variant", "g"],
    "rela-i": ["--attention-activation", "rela", "--rela-variant", "i"],
    "sparsemax": ["--attention-activation", "sparsemax"],
    "entmax15": ["--attention-activation", "entmax15"],
}
STOCK = ("fairseq-softmax", "fairseq-softmax-2")
VARIANTS = {v: ["--arch", "transformer" if v in STOCK else "rela_transformer", *a] for v, a in ACTIVATIONS.items()}
BASELINE = "fairseq-softmax"
NOISE = "fairseq-softmax-2"
ALIGN_VARIANTS = ("softmax", "rela-g", "rela-i")  # alignment extraction is timed for these


def build(variant: str, size: argparse.Namespace, vocab: int, device, dtype):
    d = Dictionary()
    for i in range(vocab - d.nspecial):
        d.add_symbol(f"t{i}")
    parser = options.get_training_parser()
    args = options.parse_args_and_arch(parser, [
        "unused-data", *VARIANTS[variant], "--encoder-layers", str(size.layers), "--decoder-layers", str(size.layers),
        "--encoder-embed-dim", str(size.dim), "--decoder-embed-dim", str(size.dim),
        "--encoder-ffn-embed-dim", str(4 * size.dim), "--decoder-ffn-embed-dim", str(4 * size.dim),
        "--encoder-attention-heads", str(size.heads), "--decoder-attention-heads", str(size.heads),
        "--share-all-embeddings", "--dropout", "0.1", "--max-source-positions", "2048",
        "--max-target-positions", "2048"])
    torch.manual_seed(0)
    task = SimpleNamespace(source_dictionary=d, target_dictionary=d)
    model = ARCH_MODEL_REGISTRY[args.arch].build_model(args, task).to(device=device, dtype=dtype)
    return model, d


def batch(d: Dictionary, n: int, length: int, device):
    g = torch.Generator().manual_seed(length)
    body = torch.randint(d.nspecial, len(d), (n, length - 1), generator=g)
    eos = torch.full((n, 1), d.eos())
    src = torch.cat([body, eos], 1).to(device)
    tgt = torch.cat([torch.randint(d.nspecial, len(d), (n, length - 1), generator=g), eos], 1).to(device)
    prev = torch.cat([eos.to(device), tgt[:, :-1]], 1)
    return src, torch.full((n,), length, device=device), prev, tgt


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def train_step(model, opt, src, lens, prev, tgt) -> None:
    """One training update: forward, token cross-entropy, backward, optimizer step."""
    model.train()
    out, _ = model(src, lens, prev)
    loss = F.cross_entropy(out.float().view(-1, out.size(-1)), tgt.view(-1))
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def timed(fn, device, reps: int) -> float:
    fn()  # warm-up
    sync(device)
    start = time.perf_counter()
    for _ in range(reps):
        fn()
    sync(device)
    return (time.perf_counter() - start) / reps


def measurements(models, args, device):
    """``(key, variant, fn)`` for every figure of a round: ``fn()`` returns the figure (or a dict of them)."""
    out = []
    for length in args.train_lengths:
        for name, (model, d, opt) in models.items():
            src, lens, prev, tgt = batch(d, max(1, args.train_tokens // length), length, device)
            out.append((f"train_tok_s@{length}", name, lambda m=model, o=opt, b=(src, lens, prev, tgt):
                        b[3].numel() / timed(lambda: train_step(m, o, *b), device, args.reps)))
    for name, (model, d, _) in models.items():
        src, lens, _, _ = batch(d, args.decode_sentences, args.decode_length, device)
        sample = {"net_input": {"src_tokens": src, "src_lengths": lens}}
        out.append(("decode_sent_s", name, lambda m=model, d=d, s=sample: decode_speed(m, d, s, args, device)))
    for name, (model, d, _) in models.items():
        if hasattr(model.decoder, "reporting") and name in ALIGN_VARIANTS:
            sample = {"net_input": dict(zip(("src_tokens", "src_lengths"),
                                            batch(d, args.decode_sentences, args.decode_length, device)[:2]))}
            out.append(("alignment", name, lambda m=model, d=d, s=sample: alignment_costs(m, d, s, args)))
    for name, (model, d, _) in models.items():
        b = batch(d, max(1, args.train_tokens // 64), 64, device)
        if hasattr(model.decoder, "reporting"):
            out.append(("analysis_recording_on_over_off", name, lambda m=model, b=b: recording_cost(m, b, args, device)))
        out.append(("forward_tok_s@64", name, lambda m=model, b=b: b[3].numel() / forward_seconds(m, b, args, device)))
    return out


def measure_round(models, args, device, results, round_index: int = 0) -> None:
    """One round: each measurement in turn, every variant side by side; the variants' order rotates
    from round to round (round r starts with the r-th), so no variant is always measured first."""
    names = list(models)
    rotation = names[round_index % len(names):] + names[:round_index % len(names)]
    by_key: dict = {}
    for key, name, fn in measurements(models, args, device):
        by_key.setdefault(key, {})[name] = fn
    for key, fns in by_key.items():
        for v in (v for v in rotation if v in fns):
            x = fns[v]()
            for k, value in (x.items() if isinstance(x, dict) else [(key, x)]):
                results.setdefault(v, {}).setdefault(k, []).append(value)


def decode_speed(model, d, sample, args, device) -> dict:
    """Beam-4 sentences/s; for ``rela_transformer`` also the speed-up of sharing the encoder keys across
    the beam (over one copy per hypothesis, as stock fairseq)."""
    model.eval()
    gen = SequenceGenerator([model], d, beam_size=4, max_len_a=0, max_len_b=args.decode_length,
                            min_len=args.decode_length)
    with torch.no_grad():
        sec = timed(lambda: gen.generate([model], sample), device, 1)
    out = {"decode_sent_s": sample["net_input"]["src_tokens"].size(0) / sec}
    if hasattr(model.decoder, "reporting"):
        model.decoder.set_beam_size(1)  # cross-attention keys per hypothesis, as stock fairseq
        with torch.no_grad():
            unshared = timed(lambda: gen.generate([model], sample), device, 1)
        model.set_beam_size(4)
        out["beam_shared_speedup"] = unshared / sec
    return out


def forward_seconds(model, b, args, device) -> float:
    """A teacher-forced forward pass (no gradient)."""
    model.eval()
    src, lens, prev, _ = b
    with torch.no_grad():
        return timed(lambda: model(src, lens, prev), device, args.reps)


def recording_cost(model, b, args, device) -> float:
    """A teacher-forced pass with norm recording over the same pass without."""
    model.eval()
    src, lens, prev, _ = b
    recorder = AttentionRecorder(model)
    with torch.no_grad():
        off = timed(lambda: model(src, lens, prev), device, args.reps)

        def recorded():
            recorder.clear()
            with recorder:
                model(src, lens, prev)

        on = timed(recorded, device, args.reps)
    return on / off


def profile_tables(models, args, device, rows: int) -> list:
    """torch.profiler's table (top ops by self time) of :data:`PROFILED_CALLS` calls per variant of each
    workload: a training step at every length, beam-4 decoding, a teacher-forced forward at length 64 (after
    one unprofiled call)."""
    from torch.profiler import ProfilerActivity, profile

    cuda = device.type == "cuda"
    key = "self_device_time_total" if cuda else "self_cpu_time_total"
    tables = []
    for name, (model, d, opt) in models.items():
        work = []
        for length in args.train_lengths:
            b = batch(d, max(1, args.train_tokens // length), length, device)
            work.append((f"training step @ {length} ({b[3].numel()} target tokens)",
                         lambda b=b: train_step(model, opt, *b), torch.enable_grad))
        src, lens, _, _ = batch(d, args.decode_sentences, args.decode_length, device)
        sample = {"net_input": {"src_tokens": src, "src_lengths": lens}}
        gen = SequenceGenerator([model], d, beam_size=4, max_len_a=0, max_len_b=args.decode_length,
                                min_len=args.decode_length)
        work.append((f"beam-4 decoding ({args.decode_sentences} sentences of {args.decode_length})",
                     lambda: (model.eval(), gen.generate([model], sample)), torch.no_grad))
        b = batch(d, max(1, args.train_tokens // 64), 64, device)
        work.append(("teacher-forced forward @ 64", lambda: (model.eval(), model(*b[:3])), torch.no_grad))
        for what, fn, mode in work:
            with mode():
                fn()
                sync(device)
                with profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])) as prof:
                    for _ in range(PROFILED_CALLS):
                        fn()
                    sync(device)
            events = prof.key_averages()
            total = sum(getattr(e, key) for e in events)  # over the PROFILED_CALLS calls
            shares = {group: sum(getattr(e, key) for e in events if any(p in e.key for p in ops)) / (total or 1)
                      for group, ops in PROFILE_GROUPS.items()}
            tables.append({"variant": name, "workload": what, "self_us": total / PROFILED_CALLS, "shares": shares,
                           "table": events.table(sort_by=key, row_limit=rows)})
    return tables


PROFILED_CALLS = 3  # calls per profiled workload (the table sums them; self_us is per call)
# op groups of the profile summary (by self time): the dense layers, the attention's own products
PROFILE_GROUPS = {"dense": ("aten::mm", "aten::addmm"), "attention": ("aten::bmm", "scaled_dot_product")}


def format_profiles(tables: list, device) -> str:
    """The profile tables, each headed by its variant, workload and total self time."""
    return "\n\n".join(f"== {t['variant']}: {t['workload']} on {hardware(device)}, {PROFILED_CALLS} calls; self time "
                       f"{t['self_us'] / 1e3:.1f} ms a call"
                       f"\n{t['table']}" for t in tables) + "\n"


def alignment_costs(model, d, sample, args) -> dict:
    """Beam-5 decoding with ``--print-alignment`` (the generator ``translation_alignment`` builds:
    recording, then word links per hypothesis) over the same decoding without, for weights and norms."""
    from fairseq_rela.tasks.translation_alignment import (AlignmentSequenceGenerator, TranslationAlignmentConfig,
                                                          WordAligner)

    kwargs = dict(beam_size=5, max_len_a=0, max_len_b=args.decode_length, min_len=args.decode_length)
    device = sample["net_input"]["src_tokens"].device
    plain = SequenceGenerator([model], d, **kwargs)
    out = {}
    with torch.no_grad():
        base = timed(lambda: plain.generate([model], sample), device, 1)
        for source in ("weights", "norms"):
            cfg = TranslationAlignmentConfig(alignment_source=source, alignment_merge="none")
            aligned = AlignmentSequenceGenerator([model], d, aligner=WordAligner(cfg, d, d, soft=False),
                                                 source=AlignmentSource(source), **kwargs)
            out[f"align_{source}_over_plain"] = timed(lambda: aligned.generate([model], sample), device, 1) / base
    return out


def scaling(models, args, device) -> dict:
    out = {}
    for length in args.scaling_lengths:
        for name, (model, d, _) in models.items():
            src, lens, prev, tgt = batch(d, 1, length, device)

            def step():
                model.train()
                out_, _ = model(src, lens, prev)
                F.cross_entropy(out_.float().view(-1, out_.size(-1)), tgt.view(-1)).backward()

            out.setdefault(name, {})[length] = timed(step, device, 1)
    return out


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class PeakMemory:
    """Peak memory of a block above the memory at its start, in MiB (``.mib`` after the block): the
    CUDA allocator's peak, or on CPU the process's RSS sampled every millisecond by a thread."""

    def __init__(self, device):
        self.device, self.mib = device, None

    def __enter__(self):
        import threading

        if self.device.type == "cuda":
            sync(self.device)
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
            return self
        self.base = _rss_mib()
        self.peak, self.done = self.base, threading.Event()

        def sample():
            while not self.done.is_set():
                self.peak = max(self.peak, _rss_mib())
                time.sleep(0.001)

        self.sampler = threading.Thread(target=sample, daemon=True)
        self.sampler.start()
        return self

    def __exit__(self, *exc):
        sync(self.device)
        if self.device.type == "cuda":
            self.mib = (torch.cuda.max_memory_allocated() - self.base) / 2**20
        else:
            self.done.set()
            self.sampler.join()
            self.mib = self.peak - self.base
        return False


def resident_mib(device) -> float:
    """Memory held now: CUDA allocated bytes, or the process's RSS on CPU (MiB)."""
    return torch.cuda.memory_allocated() / 2**20 if device.type == "cuda" else _rss_mib()


def hardware(device) -> str:
    """The device in words, for a result's config."""
    if device.type == "cuda":
        return torch.cuda.get_device_name()
    return f"CPU {platform.processor() or platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"


def step_peak_mib(variant: str, args) -> float:
    """Peak memory of one training step: CUDA allocator peak, or on CPU the RSS peak above the
    RSS before the step, sampled every millisecond by a thread."""
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    model, d = build(variant, args, args.vocab, device, dtype)
    length = args.train_lengths[-1]
    src, lens, prev, tgt = batch(d, max(1, args.train_tokens // length), length, device)
    model.train()
    with PeakMemory(device) as peak:
        out, _ = model(src, lens, prev)
        F.cross_entropy(out.float().view(-1, out.size(-1)), tgt.view(-1)).backward()
    return peak.mib


def peak_memory(variant: str, args) -> float:
    """Run :func:`step_peak_mib` in a fresh process, so variants do not share allocator state."""
    argv = [sys.executable, os.path.abspath(__file__), "--probe-memory", variant, "--device", args.device,
            "--dtype", args.dtype, "--layers", str(args.layers), "--dim", str(args.dim), "--heads", str(args.heads),
            "--vocab", str(args.vocab), "--train-tokens", str(args.train_tokens),
            "--train-lengths", ",".join(map(str, args.train_lengths))]
    proc = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    if proc.returncode != 0:
        raise RuntimeError(f"memory probe for {variant} failed:\n{proc.stderr[-2000:]}")
    return float(proc.stdout.strip().splitlines()[-1])


def summarise(raw: dict) -> dict:
    """Per-round ratios against the baseline of the same round; medians and quartiles over rounds."""
    med = {v: {k: statistics.median(xs) for k, xs in m.items()} for v, m in raw.items()}
    base = raw[BASELINE]
    per_round = {v: {k: ([x / b for x, b in zip(xs, base[k])] if k in base else xs) for k, xs in m.items()}
                 for v, m in raw.items()}
    ratios = {v: {k: statistics.median(xs) for k, xs in m.items()} for v, m in per_round.items()}
    spread = {v: {k: quartiles(xs) for k, xs in m.items()} for v, m in per_round.items()}
    return {"median": med, "ratio_vs_fairseq_softmax": ratios, "ratio_quartiles": spread, "per_round": per_round}


def quartiles(xs: list) -> list:
    """[lower, upper] quartile of ``xs`` (with fewer than 4 values: [min, max])."""
    xs = sorted(xs)
    if len(xs) < 4:
        return [xs[0], xs[-1]]
    q = statistics.quantiles(xs, n=4)
    return [q[0], q[2]]


def format_table(result: dict) -> str:
    r, m = result["ratio_vs_fairseq_softmax"], result["median"]
    keys = [k for k in m[BASELINE] if k.startswith(("train", "decode", "forward"))]
    extra = [("beam_shared_speedup", "beam-shared"), ("align_weights_over_plain", "align w"),
             ("align_norms_over_plain", "align n"), ("analysis_recording_on_over_off", "rec on/off")]
    head = (f"{'variant':<18}" + "".join(f"{k:>17}" for k in keys) + "".join(f"{h:>12}" for _, h in extra)
            + f"{'step MiB':>10}")
    lines = [f"ratios vs stock fairseq softmax (median of per-round ratios, {result['config']['rounds']} interleaved "
             f"rounds); absolute for {BASELINE}", head]
    for v in r:
        cells = "".join(f"{m[v][k]:>17.1f}" if v == BASELINE else f"{r[v][k]:>16.3f}x" for k in keys)
        for key, _ in extra:
            x = r[v].get(key)
            cells += f"{'' if x is None else f'{x:.2f}x':>12}"
        mem = result["peak_memory_mib"].get(v)
        lines.append(f"{v:<18}{cells}{'' if mem is None else f'{mem:.0f}':>10}")
    if NOISE in r:
        q = result["ratio_quartiles"][NOISE]
        lines.append(f"noise floor ({NOISE}, an identical model): per-round ratio quartiles "
                     + ", ".join(f"{k} {q[k][0]:.3f}..{q[k][1]:.3f}" for k in keys))
    lines.append("scaling (forward+backward seconds per sentence):")
    lengths = list(next(iter(result["scaling_s"].values())))
    lines.append(f"{'variant':<18}" + "".join(f"{l:>10}" for l in lengths))
    for v, per in result["scaling_s"].items():
        lines.append(f"{v:<18}" + "".join(f"{per[l]:>10.3f}" for l in lengths))
    return "\n".join(lines)


def plot_scaling(result: dict, path: str) -> None:
    from fairseq_rela.analysis.plots import pyplot
    from fairseq_rela.cli.files import save_figure

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for v, per in result["scaling_s"].items():
        ax.plot([int(l) for l in per], list(per.values()), marker="o", label=v)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("sentence length (tokens)")
    ax.set_ylabel("seconds per fwd+bwd")
    ax.set_title(f"cost vs length ({result['config']['device']})", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)


def main() -> None:
    p = argparse.ArgumentParser(description="attention speed/memory benchmark (ratios vs stock fairseq softmax)")
    p.add_argument("--output-dir", default=None, help="write benchmark.json, benchmark.txt, scaling.png here")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--layers", type=int, default=3)
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--vocab", type=int, default=8000)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--train-tokens", type=int, default=2048)
    p.add_argument("--train-lengths", default="16,32,128")
    p.add_argument("--decode-sentences", type=int, default=16)
    p.add_argument("--decode-length", type=int, default=24)
    p.add_argument("--scaling-lengths", default="64,128,256,512,1024")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--quick", action="store_true", help="1 round, short: a smoke run")
    p.add_argument("--profile", default=None, help="also write torch.profiler tables (one call per variant and "
                   "workload, after the rounds) to this file")
    p.add_argument("--profile-rows", type=int, default=25)
    p.add_argument("--probe-memory", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    args.train_lengths = [int(x) for x in args.train_lengths.split(",")]
    args.scaling_lengths = [int(x) for x in args.scaling_lengths.split(",")]
    if args.probe_memory:
        print(step_peak_mib(args.probe_memory, args))
        return
    if args.quick:
        args.rounds, args.reps, args.decode_sentences, args.scaling_lengths = 1, 1, 4, [64, 128]
    names = [v.strip() for v in args.variants.split(",")]
    unknown = [v for v in names if v not in VARIANTS]
    if unknown or BASELINE not in names:
        sys.exit(f"benchmark.py: error: --variants must include {BASELINE} and come from {', '.join(VARIANTS)}")
    for path in filter(None, (args.output_dir, args.profile and os.path.dirname(os.path.abspath(args.profile)))):
        os.makedirs(path, exist_ok=True)
        if not os.access(path, os.W_OK):
            sys.exit(f"benchmark.py: error: cannot write to {path}")
    started = time.time()
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    models = {}
    for v in names:
        model, d = build(v, args, args.vocab, device, dtype)
        models[v] = (model, d, torch.optim.Adam(model.parameters(), lr=1e-4, eps=1e-4))
    raw: dict = {}
    for r in range(args.rounds):
        print(f"round {r + 1}/{args.rounds}", file=sys.stderr, flush=True)
        measure_round(models, args, device, raw, r)
    result = summarise(raw)
    result["scaling_s"] = scaling(models, args, device)
    result["peak_memory_mib"] = {v: peak_memory(v, args) for v in names if v != NOISE}
    profiles = profile_tables(models, args, device, args.profile_rows) if args.profile else []
    if profiles:
        result["profile"] = [{k: t[k] for k in ("variant", "workload", "self_us", "shares")} for t in profiles]
    result["config"] = {
        "date": date.today().isoformat(), "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "device": hardware(device),
        "torch": torch.__version__, "dtype": args.dtype, "rounds": args.rounds, "reps": args.reps,
        "model": f"{args.layers}+{args.layers} layers, {args.dim}/{4 * args.dim}, {args.heads} heads, vocab {args.vocab}",
        "command": " ".join([os.path.basename(sys.argv[0])] + sys.argv[1:]),
        "order": "each measurement in turn, every variant side by side; round r starts with the r-th variant",
        "wall_s": round(time.time() - started, 1),
        "profile_file": os.path.basename(args.profile) if args.profile else None,
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }
    text = format_table(result)
    print(text)
    if args.output_dir:
        os.makedirs(args.output_dir, exist_ok=True)
        with open(os.path.join(args.output_dir, "benchmark.json"), "w") as f:
            json.dump(result, f, indent=1)
        with open(os.path.join(args.output_dir, "benchmark.txt"), "w") as f:
            f.write(f"{result['config']}\n{text}\n")
        plot_scaling(result, os.path.join(args.output_dir, "scaling.png"))
    if args.profile:
        with open(args.profile, "w") as f:
            f.write(f"{result['config']['command']} ({result['config']['time']}, load average "
                    f"{result['config']['load_average']})\n\n" + format_profiles(profiles, device))


if __name__ == "__main__":
    main()
