#!/usr/bin/env python
"""ReLA's fused Triton kernel against the eager path and fused softmax, on a CUDA GPU.

* op: the attention alone, forward + backward (and the one-query decoding step, forward), at key
  lengths 128…8192 (batch × length = ``--op-tokens``), fp16 and bf16: ReLA fused
  (:func:`fairseq_rela.kernels.rela_triton.rela_attention`), ReLA eager (ReLU, dropout, ``@ v``, as the
  attention computes it), softmax through SDPA's flash kernel, and ``rela-fused-2``, an identical copy
  of the first (the noise floor of the ratios).  Key padding and attention dropout 0.1, except the
  ``-p0`` rows: ReLA fused without dropout, and with ``--flex`` ReLA through FlexAttention (no dropout).
* train: forward + backward + Adam step of a Transformer base (6+6, 512/2048, 8 heads, vocabulary
  32,000, dropout and attention dropout 0.1) at lengths 32, 128, 512, 2048 (``--train-tokens`` target
  tokens per batch): rela_transformer ReLA-g fused and eager, our softmax (SDPA), stock fairseq
  ``transformer`` and an identical copy of it (the noise pair).

* check: before timing, ReLA's kernel against the fp32 eager path, output and the three gradients, for
  every mask kind (none, key padding, a fully padded sentence, causal, fairseq's float mask with
  −1e8/−inf entries, float + padding) and dropout (the kernel's own mask, :func:`dropout_keep`), in
  fp32, fp16 and bf16; and AdaSplash's sparsemax/1.5-entmax against eager ``entmax`` where installed.
  The error of the eager path computed in the same dtype is printed beside it as the yardstick.

Each measurement gives the median time over interleaved rounds and the CUDA allocator's peak; a
variant that runs out of memory is reported as ``oom``.  Before timing, every fused result is checked
against the fp32 eager one (one ``error:`` line and exit 1 if they differ).  ``--cpu-smoke`` runs a
tiny fp32 version of both on the CPU under Triton's interpreter (for the tests)::

    python scripts/benchmark_kernel.py --output results.json
"""
import argparse
import os
import statistics
import sys
import time
from types import SimpleNamespace

PROG = "benchmark_kernel.py"


def fail(message: str) -> None:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    sys.exit(1)


def parse_args():
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("--output", help="write the results as JSON here")
    p.add_argument("--parts", default="check,op,train", help="comma-separated: check, op, train (default: all)")
    p.add_argument("--op-lengths", default="128,256,512,1024,2048,4096,8192")
    p.add_argument("--op-tokens", type=int, default=32768, help="batch × length of the op benchmark")
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--head-dim", type=int, default=64)
    p.add_argument("--dtypes", default="float16,bfloat16")
    p.add_argument("--train-lengths", default="32,128,512,2048")
    p.add_argument("--train-tokens", type=int, default=8192, help="target tokens per training batch")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--flex", action="store_true",
                   help="op: also ReLA through FlexAttention (CUDA, compiled per shape: slow to start; no dropout)")
    p.add_argument("--cpu-smoke", action="store_true", help="tiny fp32 sizes on the CPU, Triton's interpreter")
    args = p.parse_args()
    args.parts = [x for x in args.parts.split(",") if x]
    if args.flex and args.cpu_smoke:
        fail("--flex needs CUDA (FlexAttention has no backward on the CPU)")
    if not args.parts or set(args.parts) - {"check", "op", "train"}:
        fail("--parts: a comma-separated subset of check, op, train")
    if args.cpu_smoke:
        os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported
        args.op_lengths, args.op_tokens, args.heads, args.head_dim = "16,40", 40, 2, 16
        args.dtypes, args.train_lengths, args.train_tokens, args.rounds, args.reps = "float32", "8", 16, 2, 1
    return args


def sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def measure(fn, reps: int) -> dict:
    """Seconds per call (mean of ``reps`` after a warm-up) and the allocator's peak (MiB, CUDA)."""
    import torch

    try:
        fn()
        sync()
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        for _ in range(reps):
            fn()
        sync()
        seconds = (time.perf_counter() - start) / reps
    except torch.OutOfMemoryError:
        torch.cuda.empty_cache()
        return {"s": None, "mib": None}
    peak = torch.cuda.max_memory_allocated() / 2 ** 20 if torch.cuda.is_available() else None
    return {"s": seconds, "mib": peak}


CHECK_TOLERANCE = {"float32": 1e-4, "float16": 1e-2, "bfloat16": 4e-2}  # max error / max |reference|


def check_masks(kind: str, batch: int, t: int, s: int, device):
    """(mask, bias, causal) for one mask kind, as ReLAMultiheadAttention._mask gives them."""
    import torch

    from fairseq_rela.attention import ReLAMultiheadAttention

    g = torch.Generator().manual_seed(1)
    pad = torch.zeros(batch, s, dtype=torch.bool)
    pad[0, :3] = True
    pad[-1, s - 4:] = True
    if kind == "padding_all":
        pad[-1] = True
    attn_mask = torch.randn(t, s, generator=g)
    attn_mask[torch.rand(t, s, generator=g) < 0.3] = -1e8
    attn_mask[:, 0] = float("-inf")
    mask, bias = {"none": (None, None), "causal": (None, None), "padding": (pad[:, None, None, :], None),
                  "padding_all": (pad[:, None, None, :], None)}.get(kind) or ReLAMultiheadAttention._mask(
        pad if kind in ("float+padding", "dropout") else None, attn_mask, 1)
    to = (lambda x: None if x is None else x.to(device))
    return to(mask), to(bias), kind == "causal"


def run_check(args, device) -> list:
    """The kernel against the fp32 eager path: relative errors of the output and gradients."""
    import torch

    from fairseq_rela.activations import ACTIVATIONS, rela
    from fairseq_rela.kernels import sparse
    from fairseq_rela.kernels.rela_triton import dropout_keep, rela_attention

    B, H, T, S, D = (2, 2, 19, 23, 16) if args.cpu_smoke else (3, 4, 200, 260, 64)
    g = torch.Generator().manual_seed(0)
    base = [torch.randn(B, H, n, D, generator=g) * D ** -0.25 for n in (T, S, S)]
    upstream = torch.randn(B, H, T, D, generator=g).to(device)
    rows = []

    def error(got, want):
        return ((got.float() - want).abs().max() / want.abs().max().clamp_min(1e-6)).item()

    def run(fn, dtype):
        q, k, v = (x.to(device, dtype).requires_grad_() for x in base)
        out = fn(q, k, v)
        return [out.detach(), *torch.autograd.grad(out, (q, k, v), upstream.to(dtype))]

    for dtype_name in args.dtypes.split(",") if args.cpu_smoke else ["float32", "float16", "bfloat16"]:
        dtype = getattr(torch, dtype_name)
        for kind in ("none", "padding", "padding_all", "causal", "float", "float+padding", "dropout"):
            mask, bias, causal = check_masks(kind, B, T, S, device)
            p, seed = (0.1, 1234) if kind == "dropout" else (0.0, None)
            keep = dropout_keep((B, H, T, S), p, seed, device) if p else None
            full = mask
            if causal:
                full = torch.ones(T, S, dtype=torch.bool, device=device).triu(1 + S - T)

            def eager(q, k, v):
                w = rela(q @ k.transpose(-1, -2), full, None if bias is None else bias.to(q.dtype))
                return (w * keep / (1 - p) if keep is not None else w) @ v

            fused = run(lambda q, k, v: rela_attention(q, k, v, mask, bias, causal=causal, dropout_p=p, seed=seed),
                        dtype)
            ref, same = run(eager, torch.float32), run(eager, dtype)
            errs = [error(a, b) for a, b in zip(fused, ref)]
            yardstick = [error(a, b) for a, b in zip(same, ref)]
            ok = all(e <= max(CHECK_TOLERANCE[dtype_name], 2 * y) for e, y in zip(errs, yardstick))
            rows.append({"part": "check", "dtype": dtype_name, "kind": kind, "max_rel_err_out_dq_dk_dv": errs,
                         "eager_same_dtype": yardstick, "ok": ok})
            if not ok:
                fail(f"ReLA kernel differs from fp32 eager ({dtype_name}, {kind}): errors {errs}, "
                     f"eager in {dtype_name}: {yardstick}")
        if device.type == "cuda" and sparse.available():
            pad = torch.zeros(B, S, dtype=torch.bool, device=device)
            pad[0, S - 5:] = True  # right padding: what AdaSplash expresses
            keep_rows = ~pad[:, None, :, None]
            for name in sparse.ALPHAS:
                sq = [torch.randn(B, H, S, D, generator=g).to(device, dtype) * D ** -0.25 for _ in range(3)]
                got = sparse.fused_sparse_attention(name, *sq, pad, None)
                want = ACTIVATIONS[name].weights(sq[0].float() @ sq[1].float().transpose(-1, -2),
                                                 pad[:, None, None, :]) @ sq[2].float()
                err = error(got * keep_rows, want * keep_rows)
                ok = err <= CHECK_TOLERANCE[dtype_name] * 10
                rows.append({"part": "check", "dtype": dtype_name, "kind": f"adasplash-{name}",
                             "max_rel_err_out_dq_dk_dv": [err], "eager_same_dtype": [], "ok": ok})
                if not ok:
                    fail(f"AdaSplash {name} differs from eager entmax ({dtype_name}): error {err:.2e}")
        print(f"check {dtype_name} done", file=sys.stderr, flush=True)
    return rows


def op_cases(args, dtype, length: int, device):
    """name -> (forward+backward, decoding-step forward) closures for one dtype and length."""
    import torch
    import torch.nn.functional as F

    from fairseq_rela.activations import rela
    from fairseq_rela.kernels.rela_triton import rela_attention

    batch = max(1, args.op_tokens // length)
    g = torch.Generator(device="cpu").manual_seed(length)
    shape = (batch, args.heads, length, args.head_dim)
    q, k, v = (torch.randn(shape, generator=g).to(device, dtype).mul_(args.head_dim ** -0.25) for _ in range(3))
    for t in (q, k, v):
        t.requires_grad_()
    pad = torch.zeros(batch, length, dtype=torch.bool, device=device)
    pad[0, length - length // 4:] = True  # some key padding
    mask = pad[:, None, None, :]
    grad = torch.randn(shape, generator=g).to(device, dtype)
    q1 = q[:, :, -1:].detach()

    def fused():
        torch.autograd.backward(rela_attention(q, k, v, mask, dropout_p=0.1), grad)

    def eager():
        w = F.dropout(rela(q @ k.transpose(-1, -2), mask), 0.1)
        torch.autograd.backward(w @ v, grad)

    def sdpa():
        from torch.nn.attention import SDPBackend, sdpa_kernel

        backend = SDPBackend.FLASH_ATTENTION if device.type == "cuda" else SDPBackend.MATH
        with sdpa_kernel([backend]):  # flash takes no mask: padding as in fairseq's stock path is left out
            torch.autograd.backward(F.scaled_dot_product_attention(q, k, v, dropout_p=0.1, scale=1.0), grad)

    def fused_p0():
        torch.autograd.backward(rela_attention(q, k, v, mask), grad)

    def fused_step():
        with torch.no_grad():
            rela_attention(q1, k, v, mask)

    def eager_step():
        with torch.no_grad():
            rela(q1 @ k.transpose(-1, -2), mask) @ v

    with torch.no_grad():  # the fused result must be the eager one (fp32 reference)
        ref = rela(q.float() @ k.float().transpose(-1, -2), mask) @ v.float()
        got = rela_attention(q, k, v, mask).float()
        tol = 1e-4 if dtype == torch.float32 else 2e-2
        err = ((got - ref).abs().max() / ref.abs().max().clamp_min(1e-6)).item()
        if not err <= tol:
            fail(f"fused ReLA differs from eager at length {length} {dtype}: relative error {err:.2e} > {tol}")
    cases = {"rela-fused": (fused, fused_step), "rela-fused-2": (fused, fused_step), "rela-eager": (eager, eager_step),
             "softmax-sdpa": (sdpa, None), "rela-fused-p0": (fused_p0, None)}
    if args.flex:
        flex = flex_rela(pad)
        with torch.no_grad():
            err = ((flex(q, k, v).float() - ref).abs().max() / ref.abs().max()).item()
        if not err <= 2 * tol:
            fail(f"FlexAttention ReLA differs from eager at length {length} {dtype}: relative error {err:.2e}")
        cases["rela-flex-p0"] = (lambda: torch.autograd.backward(flex(q, k, v), grad), None)
    return cases


def flex_rela(pad):
    """ReLA through FlexAttention (attention-gym's trick): softmax over ``log(1 + ReLU(s))`` (blocked: -inf)
    times ``exp(lse) = Σ_j (1 + ReLU(s_ij))`` is ``Σ_j ReLU(s_ij) v_j + Σ_j v_j``; subtract the unblocked
    sum of the values.  No attention dropout (FlexAttention has none)."""
    import torch
    from torch.nn.attention.flex_attention import flex_attention

    compiled = torch.compile(flex_attention, dynamic=False)
    keep = (~pad)[:, None, :, None]

    def score_mod(score, b, h, i, j):
        return torch.where(pad[b, j], float("-inf"), torch.log1p(torch.relu(score)))

    def attend(q, k, v):
        out, lse = compiled(q, k, v, score_mod=score_mod, scale=1.0, return_lse=True)
        total = out.float() * lse.exp().unsqueeze(-1) - (v.float() * keep).sum(2, keepdim=True)
        return total.to(q.dtype)

    return attend


def run_op(args, device) -> list:
    import torch

    rows = []
    for dtype_name in args.dtypes.split(","):
        dtype = getattr(torch, dtype_name)
        for length in (int(x) for x in args.op_lengths.split(",")):
            cases = op_cases(args, dtype, length, device)
            times = {(n, part): [] for n in cases for part in ("fwd_bwd", "decode_step")}
            peaks = {}
            for _ in range(args.rounds):
                for name, (train_fn, step_fn) in cases.items():
                    for part, fn in (("fwd_bwd", train_fn), ("decode_step", step_fn)):
                        if fn is None:
                            continue
                        m = measure(fn, args.reps)
                        times[(name, part)].append(m["s"])
                        peaks[(name, part)] = m["mib"]
            for (name, part), values in times.items():
                if not values:
                    continue
                ok = None not in values
                rows.append({"part": f"op_{part}", "dtype": dtype_name, "length": length, "variant": name,
                             "ms": statistics.median(values) * 1e3 if ok else "oom", "peak_mib": peaks[(name, part)]})
            print(f"op {dtype_name} {length} done", file=sys.stderr, flush=True)
    return rows


def run_train(args, device) -> list:
    import importlib.util

    import torch
    from fairseq.modules import MultiheadAttention

    spec = importlib.util.spec_from_file_location("benchmark", os.path.join(os.path.dirname(__file__), "benchmark.py"))
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)  # its model builder and batches: the same models as scripts/benchmark.py
    smoke = args.cpu_smoke
    size = SimpleNamespace(layers=1 if smoke else 6, dim=32 if smoke else 512, heads=2 if smoke else 8)
    vocab = 64 if smoke else 32000
    variants = {"fairseq-softmax": ("fairseq-softmax", None), "fairseq-softmax-2": ("fairseq-softmax-2", None),
                "softmax-sdpa": ("softmax", None), "rela-g-fused": ("rela-g", "fused"),
                "rela-g-eager": ("rela-g", "eager")}
    rows = []
    for dtype_name in args.dtypes.split(","):
        dtype = getattr(torch, dtype_name)
        models = {}
        for name, (variant, kernel) in variants.items():
            model, d = bench.build(variant, size, vocab, device, dtype)
            if kernel:
                model.set_attention_kernel(kernel)
            for module in model.modules():  # attention dropout 0.1 everywhere (ReLA: on the ReLU weights)
                if isinstance(module, MultiheadAttention):
                    module.dropout_module.p = 0.1
            models[name] = (model, d, torch.optim.Adam(model.parameters(), lr=1e-4, eps=1e-4))
        for length in (int(x) for x in args.train_lengths.split(",")):
            times, peaks = {n: [] for n in models}, {}
            for _ in range(args.rounds):
                for name, (model, d, opt) in models.items():
                    src, lens, prev, tgt = bench.batch(d, max(1, args.train_tokens // length), length, device)

                    m = measure(lambda: bench.train_step(model, opt, src, lens, prev, tgt), args.reps)
                    times[name].append(m["s"])
                    peaks[name] = m["mib"]
            for name, values in times.items():
                ok = None not in values
                rows.append({"part": "train_step", "dtype": dtype_name, "length": length, "variant": name,
                             "ms": statistics.median(values) * 1e3 if ok else "oom", "peak_mib": peaks[name]})
            print(f"train {dtype_name} {length} done", file=sys.stderr, flush=True)
        del models
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


def table(rows: list) -> str:
    lines = ["| part | dtype | length | variant | ms | peak MiB |", "|---|---|---|---|---|---|"]
    for r in rows:
        if r["part"] == "check":
            errs = " ".join(f"{e:.1e}" for e in r["max_rel_err_out_dq_dk_dv"])
            same = " ".join(f"{e:.1e}" for e in r["eager_same_dtype"])
            lines.append(f"| check | {r['dtype']} | {r['kind']} | out dq dk dv: {errs} | eager same dtype: {same} "
                         f"| {'ok' if r['ok'] else 'FAIL'} |")
            continue
        ms = r["ms"] if isinstance(r["ms"], str) else f"{r['ms']:.3f}"
        mib = "" if r["peak_mib"] is None else f"{r['peak_mib']:.0f}"
        lines.append(f"| {r['part']} | {r['dtype']} | {r['length']} | {r['variant']} | {ms} | {mib} |")
    return "\n".join(lines)


def main() -> None:
    args = parse_args()
    import torch

    if not args.cpu_smoke and not torch.cuda.is_available():
        fail("needs a CUDA GPU (--cpu-smoke: a tiny fp32 run under Triton's interpreter)")
    import fairseq_rela.kernels as kernels

    if not kernels.triton_available():
        fail("needs triton (pip install triton)")
    device = torch.device("cpu" if args.cpu_smoke else "cuda")
    rows = []
    if "check" in args.parts:
        rows += run_check(args, device)
    if "op" in args.parts:
        rows += run_op(args, device)
    if "train" in args.parts:
        rows += run_train(args, device)
    result = {"config": {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu (interpreter)",
                         "torch": torch.__version__, "command": " ".join([PROG] + sys.argv[1:]),
                         "rounds": args.rounds, "reps": args.reps}, "rows": rows}
    print(table(rows))
    if args.output:
        from fairseq_rela.cli.files import write_json

        write_json(result, args.output)


if __name__ == "__main__":
    main()
