"""fairseq-rela-kernels: which attention path runs where, whether ReLA's Triton kernel works on this GPU,
and whether it compiles and fits for others.

    fairseq-rela-kernels --dtype fp16 --head-dim 64          # on a GPU: paths, self-check, 20-s timing
    fairseq-rela-kernels compile                             # anywhere: every kernel compiled ahead of
        [--targets sm_75,sm_80,sm_86,sm_89,sm_90]            #   time for each target, dtype, head dim and
        [--dtypes fp16,bf16,fp32] [--head-dims 32,64,128]    #   flag combination; shared memory against
        [--flags all|package|causal|bounds] [--json FILE]    #   the target's limit, registers, spills

``compile`` exits 1 if any cell fails (compile error, or more shared memory than the target allows), 2 on
bad options.  On a machine without a GPU the first form runs ``compile`` for ``--targets``.
"""
import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import List, Optional, Sequence

PROG = "fairseq-rela-kernels"
logger = logging.getLogger(PROG)
# The flag combinations the package launches: ReLAMultiheadAttention never passes causal (the future mask
# arrives as a float attn_mask, i.e. HAS_BIAS).  "all" adds CAUSAL (rela_attention's own argument).
# "causal": the other 8 ("package" + "causal" = "all", in two runs).  "bounds": none and all four, the least
# and the most code and prefetched tiles (a quick table).
FLAG_SETS = {"package": [(m, b, False, d) for m in (False, True) for b in (False, True) for d in (False, True)],
             "causal": [(m, b, True, d) for m in (False, True) for b in (False, True) for d in (False, True)],
             "all": None, "bounds": [(False,) * 4, (True,) * 4]}


class KernelsError(Exception):
    """Bad input: one line."""


def _ints(text: str, flag: str) -> List[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise KernelsError(f"{flag}: expected comma-separated integers, got {text!r}")
    if not values or any(v < 1 or v > 256 for v in values):
        raise KernelsError(f"{flag}: head dims must be 1..256, got {text!r}")
    return values


def architecture_head_dims() -> List[int]:
    """The attention head dims of every ``rela_transformer*`` architecture (encoder and decoder)."""
    from fairseq.models import ARCH_MODEL_REGISTRY, ARCH_CONFIG_REGISTRY

    import fairseq_rela.models  # noqa: F401  (registers the architectures)

    dims = set()
    for name, fn in ARCH_CONFIG_REGISTRY.items():
        if ARCH_MODEL_REGISTRY[name].__name__ != "RelaTransformerModel":
            continue
        args = argparse.Namespace()
        fn(args)
        for side in ("encoder", "decoder"):
            dims.add(getattr(args, f"{side}_embed_dim") // getattr(args, f"{side}_attention_heads"))
    return sorted(dims)


def _targets(text: str) -> List[int]:
    from fairseq_rela.kernels.aot import parse_target

    try:
        return [parse_target(t) for t in text.split(",") if t.strip()]
    except ValueError as e:
        raise KernelsError(f"--targets: {e}")


def _dtypes(text: str) -> List[str]:
    from fairseq_rela.kernels.aot import DTYPES

    names = [t.strip() for t in text.split(",") if t.strip()]
    bad = [n for n in names if n not in DTYPES]
    if bad or not names:
        raise KernelsError(f"--dtypes: unknown {', '.join(bad) or 'empty list'}; choose from {', '.join(DTYPES)}")
    return names


def _adasplash_installed() -> bool:
    from fairseq_rela.kernels import sparse

    return sparse.available()


def _check_compiler() -> None:
    if os.environ.get("TRITON_INTERPRET") == "1":
        raise KernelsError("compile: TRITON_INTERPRET=1 replaces the kernels by Python functions; unset it")
    try:
        import triton  # noqa: F401
    except ImportError:
        raise KernelsError("compile: triton is not installed (pip install triton)")


def run_compile(targets: Sequence[int], dtypes: Sequence[str], head_dims: Sequence[int], flags: str,
                json_path: Optional[Path], usage: bool, out=sys.stdout, fast: bool = False,
                adasplash: str = "auto") -> int:
    """The ahead-of-time table; returns the exit status (0 every cell fits, 1 otherwise).  ``adasplash``:
    ``auto`` adds AdaSplash's kernels where it is installed, ``only`` compiles those alone, ``no`` skips them."""
    import triton

    from fairseq_rela.cli.files import write_text
    from fairseq_rela.kernels import aot
    from fairseq_rela.kernels.aot import DTYPES
    from fairseq_rela.kernels.tiles import launch_plan

    t0 = time.time()
    rows, cells = [], []
    if adasplash == "only":
        from importlib.metadata import PackageNotFoundError, version

        try:
            ada_version = version("adasplash")
        except PackageNotFoundError:  # importable without metadata (a source checkout on PYTHONPATH)
            ada_version = "(no package metadata)"
        print(f"AdaSplash's Triton kernels (adasplash {ada_version}) compiled ahead of time as "
              f"fused_sparse_attention launches them (Triton {triton.__version__}, {time.strftime('%Y-%m-%d')})",
              file=out)
    else:
        plan_name = "fast tiles everywhere (before 2026-12-07)" if fast else "the package"
        print(f"ReLA Triton kernels compiled ahead of time (Triton {triton.__version__}, {time.strftime('%Y-%m-%d')}), "
              f"flags: {flags}, plan: {plan_name}", file=out)
    head = f"{'kernel':<12} {'target':<6} {'dtype':<5} {'hd':>3}  {'tiles':<12} {'w':>1} {'st':>2}  " \
           f"{'shared (max)':>12} {'limit':>7}  {'regs':>7} {'spills':>7}  {'cells':>5}  result"
    print(head, file=out)
    from fairseq_rela.kernels import sparse

    ada_dims = [hd for hd in head_dims if hd in sparse.HEAD_DIMS] if adasplash != "no" and sparse.available() else []
    if adasplash != "no" and not sparse.available():
        print("AdaSplash (sparsemax, 1.5-entmax) is not installed: its kernels are not compiled "
              "(pip install adasplash)",
              file=out)
    for capability in targets if adasplash != "only" else []:
        for dtype in dtypes:
            for hd in head_dims:
                by_kernel = {}
                plan = launch_plan(None, DTYPES[dtype], hd) if fast else None  # None: no limit, the fast tiles
                for r in aot.check(capability, dtype, hd, FLAG_SETS[flags], usage=usage, plan=plan):
                    cells.append(r)
                    by_kernel.setdefault(r.kernel, []).append(r)
                for kernel, rs in by_kernel.items():
                    rows.append(_summary(kernel, rs))
                    print(rows[-1], file=out, flush=True)
        keep = aot.check_dropout_keep(capability)
        cells.append(keep)
        rows.append(_summary("dropout_keep", [keep]))
        print(rows[-1], file=out, flush=True)
    for capability in targets:
        for dtype in dtypes:
            for hd in ada_dims:  # as fused_sparse_attention launches adasplash_v1; one row a kernel
                for r in aot.check_adasplash(capability, dtype, hd, usage=usage):
                    cells.append(r)
                    rows.append(_summary(r.kernel, [r]))
                    print(rows[-1], file=out, flush=True)
    failed = [c for c in cells if not c.ok]
    print(f"{len(cells) - len(failed)} of {len(cells)} cells compiled within their target's shared memory "
          f"({time.time() - t0:.0f} s wall)", file=out)
    for c in failed[:20]:
        print(f"FAILED {c.kernel} sm_{c.target[3:]} {c.dtype} head dim {c.head_dim} "
              f"mask={c.HAS_MASK} bias={c.HAS_BIAS} causal={c.CAUSAL} dropout={c.DROPOUT}: {c.error}", file=out)
    if json_path is not None:
        meta = {"triton": triton.__version__, "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                "wall_seconds": round(time.time() - t0, 1), "flags": flags if adasplash != "only" else None,
                "adasplash": adasplash}
        write_text(json_path, json.dumps({"meta": meta, "cells": [c.as_dict() for c in cells]}, indent=1) + "\n")
    return 1 if failed else 0


def _summary(kernel: str, rs) -> str:
    r = rs[0]
    shared = [c.shared for c in rs if c.shared is not None]
    regs = [c.registers for c in rs if c.registers is not None]
    spills = [c.spills for c in rs if c.spills is not None]
    ok = sum(c.ok for c in rs)
    span = (lambda xs: "-" if not xs else (f"{min(xs)}" if min(xs) == max(xs) else f"{min(xs)}-{max(xs)}"))
    tiles = f"{r.block_m}x{r.block_n}x{r.block_d}"
    return (f"{kernel:<12} {r.target:<6} {r.dtype:<5} {r.head_dim:>3}  {tiles:<12} {r.num_warps:>1} {r.num_stages:>2}  "
            f"{(max(shared) if shared else '-'):>12} {r.limit:>7}  {span(regs):>7} {(max(spills) if spills else '-'):>7}  "
            f"{ok:>2}/{len(rs):<2}  {'ok' if ok == len(rs) else 'FAILED: ' + next(c.error for c in rs if not c.ok)}")


def run_device(dtype_name: str, head_dim: int, seconds: float, device_name: str, out=sys.stdout) -> int:
    """On a GPU (or the CPU under TRITON_INTERPRET=1, for tests): the path each attention takes, the
    self-check of every mask kind, and a timing of fused against eager ReLA and softmax SDPA."""
    import torch

    from fairseq_rela.attention import ReLAMultiheadAttention
    from fairseq_rela.kernels import selfcheck
    from fairseq_rela.kernels.aot import DTYPES
    from fairseq_rela.kernels.rela_triton import device_plan

    device = torch.device(device_name)
    dtype = DTYPES[dtype_name]
    heads = 4
    embed = heads * head_dim
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (Triton interpreter)"
    plan = device_plan(device, dtype, head_dim)
    print(f"{where}, {dtype_name}, head dim {head_dim}; launch plan: {plan}", file=out)
    print("path per attention (--attention-kernel auto; the weights are not needed):", file=out)
    ok = True
    for kind, training_len, step in (("encoder self", 40, None), ("decoder self", 40, 1), ("cross", 40, 1)):
        attn = ReLAMultiheadAttention(embed, heads, activation="rela", self_attention=kind != "cross",
                                      encoder_decoder_attention=kind == "cross", kernel="auto").to(device)
        for label, tgt_len in (("training / full pass", training_len), ("decoding step", step)):
            if tgt_len is None:
                continue
            path = attn._fused_path(device, tgt_len, 0.1)
            print(f"  {kind:<13} {label:<21} {path or 'eager'}", file=out)
    print("self-check of ReLA's kernel (forward and backward against fp32 eager):", file=out)
    for has_mask, has_bias, _, dropout in FLAG_SETS["package"]:
        key = (has_mask, has_bias, dropout)
        reason = selfcheck.verdict(device, dtype, head_dim, *key)
        good = reason is None
        ok &= good
        print(f"  mask={has_mask!s:<5} bias={has_bias!s:<5} dropout={dropout!s:<5} "
              f"{'ok' if good else 'FAILED: ' + reason}", file=out)
    if seconds > 0:
        _timing(device, dtype, head_dim, seconds, out)
    return 0 if ok else 1


def _timing(device, dtype, head_dim: int, seconds: float, out) -> None:
    """Forward + backward of one attention at a training batch (4,096 tokens, length 64, 8 heads, key padding,
    dropout 0.1): fused ReLA, eager ReLA, softmax SDPA, interleaved, ``seconds`` in all."""
    import torch
    import torch.nn.functional as F

    from fairseq_rela.activations import rela
    from fairseq_rela.kernels.rela_triton import rela_attention

    length, heads = (64, 8) if device.type == "cuda" else (16, 2)
    batch = 4096 // length if device.type == "cuda" else 2
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(batch, heads, length, head_dim, generator=g).mul(head_dim ** -0.25)
               .to(device, dtype).requires_grad_() for _ in range(3))
    grad = torch.randn(q.shape, generator=g).to(device, dtype)
    pad = torch.zeros(batch, 1, 1, length, dtype=torch.bool, device=device)
    pad[::2, ..., -length // 4:] = True

    def fused():
        torch.autograd.backward(rela_attention(q, k, v, pad, dropout_p=0.1), grad)

    def eager():
        torch.autograd.backward(F.dropout(rela(q @ k.transpose(-1, -2), pad), 0.1) @ v, grad)

    def sdpa():
        torch.autograd.backward(F.scaled_dot_product_attention(q, k, v, attn_mask=~pad, dropout_p=0.1, scale=1.0),
                                grad)

    fns = {"ReLA fused": fused, "ReLA eager": eager, "softmax SDPA": sdpa}
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for fn in fns.values():  # compile and warm up
        fn()
    sync()
    times = {name: [] for name in fns}
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - t)
    print(f"timing, forward+backward, batch {batch} x {heads} heads x length {length}, median of "
          f"{min(len(t) for t in times.values())} rounds, interleaved:", file=out)
    base = sorted(times["ReLA eager"])[len(times["ReLA eager"]) // 2]
    for name, ts in times.items():
        med = sorted(ts)[len(ts) // 2]
        print(f"  {name:<13} {med * 1e3:8.3f} ms  ({base / med:.2f}x eager ReLA's speed)", file=out)


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command")
    c = sub.add_parser("compile", help="compile every kernel ahead of time for GPUs this machine need not have")
    for q in (p, c):
        q.add_argument("--targets", default="sm_75,sm_80,sm_86,sm_89,sm_90",
                       help="compute capabilities to compile for (compile, or on a machine without a GPU)")
    c.add_argument("--dtypes", default="fp16,bf16,fp32")
    c.add_argument("--head-dims", default=None,
                   help="default: 32,64,128 and every head dim of the rela_transformer architectures")
    c.add_argument("--flags", choices=tuple(FLAG_SETS), default="all",
                   help="the mask/bias/causal/dropout combinations: all 16, the 8 the package launches, the 8 "
                        "with causal (rela_attention(..., causal=True) only), or bounds (none and all four)")
    c.add_argument("--json", type=Path, help="write every cell as JSON")
    c.add_argument("--no-usage", action="store_true", help="skip ptxas's register and spill report (faster)")
    c.add_argument("--adasplash", choices=("auto", "only", "no"), default="auto",
                   help="AdaSplash's kernels (sparsemax, 1.5-entmax) as the package launches them: auto (where "
                        "adasplash is installed), only (those alone), no")
    c.add_argument("--plan", choices=("package", "fast"), default="package",
                   help="package: the launch plan the package uses on each target; fast: 64x64 tiles (64x32 above "
                        "head dim 64), 3 stages everywhere, the plan before 2026-12-07 (for comparison)")
    p.add_argument("--dtype", default="fp32", choices=("fp16", "bf16", "fp32"))
    p.add_argument("--head-dim", type=int, default=64)
    p.add_argument("--seconds", type=float, default=20.0, help="timing of fused vs eager vs SDPA (0: none)")
    p.add_argument("--device", default=None, help="default: cuda where available")
    args = p.parse_args(argv)
    try:
        targets = _targets(args.targets)
        if args.command == "compile":
            _check_compiler()
            dims = _ints(args.head_dims, "--head-dims") if args.head_dims else \
                sorted({32, 64, 128, *architecture_head_dims()})
            if args.adasplash == "only" and not _adasplash_installed():
                raise KernelsError("compile --adasplash only: adasplash is not installed (pip install adasplash)")
            return run_compile(targets, _dtypes(args.dtypes), dims, args.flags, args.json, not args.no_usage,
                               adasplash=args.adasplash,
                               fast=args.plan == "fast")
        import torch

        device = args.device or ("cuda" if torch.cuda.is_available() else None)
        if not 1 <= args.head_dim <= 256:
            raise KernelsError(f"--head-dim: must be 1..256, got {args.head_dim}")
        if device is None:
            print(f"{PROG}: no GPU here: compiling ahead of time for {args.targets} instead "
                  f"({args.dtype}, head dim {args.head_dim})", file=sys.stderr)
            _check_compiler()
            return run_compile(targets, [args.dtype], [args.head_dim], "package", None, True)
        if torch.device(device).type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
            raise KernelsError(f"--device {device}: the kernel runs on CUDA (on the CPU only under TRITON_INTERPRET=1)")
        return run_device(args.dtype, args.head_dim, args.seconds, device)
    except KernelsError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2


def cli_main() -> None:
    logging.basicConfig(format="%(levelname)s: %(message)s", level=logging.WARNING, force=True)
    sys.exit(main())


if __name__ == "__main__":
    cli_main()
