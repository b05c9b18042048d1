#!/usr/bin/env python3
"""Compile every Triton kernel of fairseq-rela ahead of time for the common NVIDIA GPUs, on any machine.

    python scripts/check_kernels.py [--targets sm_75,sm_80,sm_86,sm_89,sm_90] [--dtypes fp16,bf16,fp32]
                                    [--head-dims 32,64,128] [--flags all|package] [--json FILE] [--no-usage]

Each ReLA kernel (forward, backward dK/dV, backward dQ) for every target, dtype, head dim (default 32, 64, 128
and every head dim of the package's architectures) and flag combination (mask, bias, causal, dropout), with
the launch configuration the package uses on that target (fairseq_rela/kernels/tiles.py), plus the dropout-mask
kernel: shared memory against the target's per-block limit, registers and spills from ptxas.  Exit 1 if any
cell fails.  The same as ``fairseq-rela-kernels compile``; committed output: examples/benchmark/gpu/check_kernels.txt.
"""
import sys

from fairseq_rela.cli.kernels import PROG, main  # noqa: F401

if __name__ == "__main__":
    sys.exit(main(["compile", *sys.argv[1:]]))
