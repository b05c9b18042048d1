#!/usr/bin/env python
"""AdaSplash's ``adasplash_v1`` called directly (not through the package) and compiled ahead of time for every
default target and dtype at one head dim: why the package keeps head dim 256 off AdaSplash
(``fairseq_rela/kernels/sparse.py``, ``HEAD_DIMS``).  Needs adasplash importable and TRITON_INTERPRET unset::

    PYTHONPATH=/tmp/ada python scripts/adasplash_direct.py --head-dim 256 > examples/benchmark/gpu/check_kernels/adasplash-direct-256.txt
"""
import argparse
import os
import sys
import time


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="adasplash_direct.py", description=__doc__.split("\n")[0])
    p.add_argument("--head-dim", type=int, default=256, choices=(16, 32, 64, 128, 256))
    args = p.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET") == "1":
        sys.exit("adasplash_direct.py: error: unset TRITON_INTERPRET (the interpreter compiles nothing)")
    try:
        from adasplash import adasplash_v1
    except ImportError:
        sys.exit("adasplash_direct.py: error: adasplash is not importable (pip install --no-deps -t DIR adasplash; "
                 "PYTHONPATH=DIR)")
    import torch

    from fairseq_rela.kernels import aot
    from fairseq_rela.kernels.tiles import SHARED_LIMITS

    hd, t0, failed = args.head_dim, time.time(), 0
    print(f"adasplash_v1 called directly, head dim {hd}, 2x4x128, forward and backward, compiled ahead of time "
          f"({time.strftime('%Y-%m-%d %H:%M:%S %Z')})")
    for capability in SHARED_LIMITS:
        for dtype in ("fp16", "bf16", "fp32"):
            def run(dtype=dtype):
                q, k, v = (torch.zeros(2, 4, 128, hd, dtype=aot.DTYPES[dtype], requires_grad=True) for _ in range(3))
                out = adasplash_v1(q, k, v, alpha=1.5, is_causal=False, varlen=torch.full((2,), 128, dtype=torch.int32))
                out.backward(torch.ones_like(out))
            for r in aot.check_launches(capability, dtype, hd, run, "ada", usage=False, names=aot.ADASPLASH_NAMES):
                failed += not r.ok
                shared = r.shared if r.shared is not None else "-"
                print(f"{r.kernel:<12} {r.target:<6} {r.dtype:<5} shared {shared:>7} "
                      f"limit {r.limit:>7}  {'ok' if r.ok else 'FAILED: ' + str(r.error)}")
    print(f"{failed} cells over their target's limit or not compiled ({time.time() - t0:.0f} s wall)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
