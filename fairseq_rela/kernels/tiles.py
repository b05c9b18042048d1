"""Launch configurations of ReLA's Triton kernels: tiles, warps and pipeline stages per GPU, dtype and head dim.

A block of a Triton kernel holds its tiles (and, with ``num_stages`` > 1, that many copies of the tiles it
prefetches) in shared memory, and a block that needs more than the GPU's per-block limit is refused at launch
(Triton's ``OutOfResources``).  fp32 tiles take twice the bytes of fp16/bf16 ones, so the configuration
that is fastest in fp16 does not fit most GPUs in fp32.  :func:`launch_plan` picks, for one kernel call,
the configuration of the table below for the GPU's compute capability and its shared-memory limit:

- fp16 / bf16: 64x64 tiles (64x32 above head dim 64), 4 warps, 3 stages on every target but the T4 at head
  dim 128 (smaller backward tiles);
- fp32: the same tiles with fewer stages, or smaller tiles, until every kernel fits the limit — chosen
  from the shared memory of the compiled kernels (``scripts/check_kernels.py``, committed output in
  ``examples/benchmark/gpu/``), which the test suite and that script check for every common GPU.

No triton import: the table is plain data, used by the kernels at launch and by the ahead-of-time check.
"""
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import torch

# Opt-in shared memory per block (bytes) by compute capability (CUDA C Programming Guide, "Compute
# Capabilities", table of technical specifications: maximum shared memory per thread block).
SHARED_LIMITS: Dict[int, int] = {
    75: 65536,    # Turing: T4, RTX 20xx
    80: 166912,   # A100, A30
    86: 101376,   # RTX 30xx, A10, A40, A6000
    87: 166912,   # Jetson Orin
    89: 101376,   # RTX 40xx, L4, L40
    90: 232448,   # H100, H200
    100: 232448,  # B200
    120: 101376,  # RTX 50xx
}
COMMON_TARGETS: Tuple[int, ...] = (75, 80, 86, 89, 90)  # what the check compiles for by default
KERNELS = ("forward", "backward_kv", "backward_q")


@dataclass(frozen=True)
class Tiles:
    """One kernel's launch: ``block_m`` queries x ``block_n`` keys per tile, ``num_warps``, ``num_stages``."""
    block_m: int
    block_n: int
    num_warps: int = 4
    num_stages: int = 3


@dataclass(frozen=True)
class LaunchPlan:
    """The launch of each of ReLA's three kernels for one (GPU, dtype, head dim); ``block_d`` is the head dim
    padded to a power of two of at least 16 (``tl.dot``'s minimum)."""
    forward: Tiles
    backward_kv: Tiles
    backward_q: Tiles
    block_d: int

    @classmethod
    def uniform(cls, block_m: int, block_n: int, block_d: int, num_warps: int = 4, num_stages: int = 3):
        """One configuration for all three kernels (tests, benchmarks)."""
        t = Tiles(block_m, block_n, num_warps, num_stages)
        return cls(t, t, t, block_d)

    def tiles(self, kernel: str) -> Tiles:
        return getattr(self, kernel)


def block_d(head_dim: int) -> int:
    """The head dim padded to a power of two, at least 16."""
    if head_dim < 1:
        raise ValueError(f"head_dim must be >= 1, got {head_dim}")
    return max(16, 1 << (head_dim - 1).bit_length())


def _fast(bd: int) -> Tiles:
    """fp16/bf16 (and fp32 where the GPU has room): 64x64 tiles, 64x32 above head dim 64, 3 stages."""
    return Tiles(64, 64 if bd <= 64 else 32)


# fp32 tiles (forward, backward_kv, backward_q) by padded head dim, for the smallest per-block shared memory
# each row fits, largest first: the fastest configuration whose compiled kernels fit, from the shared memory
# scripts/check_kernels.py reports (examples/benchmark/gpu/check_kernels/).  A head dim not listed in a
# row takes the fast tiles.  Fewer pipeline stages first (each stage holds one more copy of the tiles a loop
# prefetches), smaller tiles after; on sm_75 (no asynchronous copies) stages cost no shared memory.
FP32_ROWS: Tuple[Tuple[int, Dict[int, Tuple[Tiles, Tiles, Tiles]]], ...] = (
    (166912, {}),  # A100, H100, H200: the fast tiles (at most 151,552 B: sm_80, backward dK/dV, head dim 128)
    (101376, {     # RTX 30xx/40xx, A10, L4: the fast tiles need up to 122,880 B
        64: (Tiles(64, 64, 4, 2), Tiles(64, 64, 4, 3), Tiles(64, 64, 4, 2)),
        128: (Tiles(64, 32, 4, 2), Tiles(64, 32, 4, 2), Tiles(32, 32, 4, 2)),
    }),
    (65536, {      # T4: 64 KiB
        64: (Tiles(64, 64, 4, 3), Tiles(32, 64, 4, 3), Tiles(64, 32, 4, 3)),
        128: (Tiles(32, 32, 4, 3), Tiles(16, 32, 4, 3), Tiles(32, 16, 4, 3)),
    }),
)
# fp16/bf16 likewise: the fast tiles fit every listed GPU but the T4 at head dim 128, where the backward kernels
# needed 98,304 B (dK/dV) and 81,920 B (dQ) of its 65,536 B (examples/benchmark/gpu/check_kernels).
HALF_ROWS: Tuple[Tuple[int, Dict[int, Tuple[Tiles, Tiles, Tiles]]], ...] = (
    (101376, {}),
    (65536, {128: (Tiles(64, 32, 4, 3), Tiles(32, 32, 4, 3), Tiles(32, 32, 4, 3))}),
)


def launch_plan(capability: Optional[int], dtype: torch.dtype, head_dim: int,
                shared_limit: Optional[int] = None) -> LaunchPlan:
    """The launch of ReLA's kernels on a GPU of compute capability ``capability`` (e.g. 86; None: unknown,
    e.g. Triton's CPU interpreter, where shared memory does not bind) for ``dtype`` and ``head_dim``.

    ``shared_limit``: the device's own per-block limit where known (read from the driver at run time);
    otherwise :data:`SHARED_LIMITS` of the capability; an unknown capability takes the smallest limit of the
    table.  The first row of :data:`FP32_ROWS` (fp32) or :data:`HALF_ROWS` (fp16, bf16) within the limit (a
    limit below every row takes the last row; the self-check then decides whether the kernel runs)."""
    bd = block_d(head_dim)
    fast = _fast(bd)
    if capability is None and shared_limit is None:
        return LaunchPlan(fast, fast, fast, bd)
    if shared_limit is None:
        shared_limit = SHARED_LIMITS.get(capability, min(SHARED_LIMITS.values()))
    rows = FP32_ROWS if dtype == torch.float32 else HALF_ROWS
    row = next((tiles for need, tiles in rows if need <= shared_limit), rows[-1][1])
    return LaunchPlan(*row.get(bd, (fast, fast, fast)), bd)
