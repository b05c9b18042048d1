#!/usr/bin/env python
"""Training step time of softmax attention on a GPU with varying sentence lengths, per SDPA backend.

Translation batches change shape at every step.  This times forward + backward of one
``ReLAMultiheadAttention`` (softmax, the fused ``scaled_dot_product_attention`` path) and of stock
fairseq ``MultiheadAttention`` over batches of random shapes, in fp16, with PyTorch's default
backend choice and with cuDNN's fused attention left out:

    python scripts/gpu/sdpa_backends.py [--steps 200]
"""
import argparse
import random
import time

import torch
from fairseq.modules import MultiheadAttention
from torch.nn.attention import SDPBackend, sdpa_kernel

from fairseq_rela import attention as rela_attention
from fairseq_rela.attention import ReLAMultiheadAttention

ALL = [SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
NO_CUDNN = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


def run(module, shapes, dim):
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for b, t in shapes:
        x = torch.randn(t, b, dim, device="cuda", dtype=torch.float16, requires_grad=True)
        pad = torch.zeros(b, t, dtype=torch.bool, device="cuda")
        pad[: b // 2, t - 3:] = True
        out, _ = module(x, x, x, key_padding_mask=pad, need_weights=False)
        out.float().sum().backward()
    torch.cuda.synchronize()
    return 1000 * (time.perf_counter() - t0) / len(shapes)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--heads", type=int, default=4)
    args = p.parse_args()
    rng = random.Random(0)
    shapes = [(rng.randint(64, 256), rng.randint(8, 80)) for _ in range(args.steps)]
    ours = ReLAMultiheadAttention(args.dim, args.heads, activation="softmax", self_attention=True, dropout=0.1)
    stock = MultiheadAttention(args.dim, args.heads, self_attention=True, dropout=0.1)
    ours, stock = ours.cuda().half().train(), stock.cuda().half().train()
    print(f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}; {args.steps} steps of random (batch, length), "
          f"fp16, dim {args.dim}, {args.heads} heads; ms per forward+backward (2nd pass over the same shapes in brackets)")
    for name, backends in (("default backends (cuDNN allowed)", ALL), ("cuDNN left out", NO_CUDNN)):
        rela_attention.SDPA_BACKENDS = backends
        with sdpa_kernel(backends):
            res = {m: (run(mod, shapes, args.dim), run(mod, shapes, args.dim)) for m, mod in (("rela_transformer softmax", ours), ("stock fairseq", stock))}
        print(f"{name:<34}" + "  ".join(f"{m}: {a:.2f} ({b:.2f})" for m, (a, b) in res.items()))


if __name__ == "__main__":
    main()
