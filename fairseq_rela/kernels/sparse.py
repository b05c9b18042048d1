"""sparsemax and 1.5-entmax attention through AdaSplash (Gonçalves et al. 2025, ``pip install adasplash``):
fused Triton kernels, CUDA only, an optional dependency.

AdaSplash's kernel (``adasplash_v1``) takes self-attention shapes (``T == S``), a causal flag and
right-padded lengths (``varlen``); it scales the scores by ``1/√d`` itself and zeroes the outputs of
padded queries.  :func:`fused_sparse_attention` translates our masks where they mean the same: no
additive bias, no attention mask, and a key-padding mask that is right padding (checked on the device,
one synchronisation), head sizes 16…128 in powers of two; anything else returns ``None`` and the
caller stays on the eager ``entmax`` path.
Outputs differ from eager only on padded query rows (0 here), which no later computation reads.
"""
import functools
import importlib.util
import math
from typing import Optional

import torch
from torch import Tensor

# entmax α of each activation (sparsemax is 2-entmax)
ALPHAS = {"sparsemax": 2.0, "entmax15": 1.5}
# the head sizes the package gives AdaSplash: its kernels compile for 16…256, but at 256 its ``tau`` kernel needs
# 81,920 B of shared memory in fp16 (adasplash 0.2.2, compiled ahead of time for sm_75), more than a T4's
# 65,536, and would fail at launch with no way back to eager: 256 stays on the eager path everywhere
HEAD_DIMS = (16, 32, 64, 128)


@functools.lru_cache(maxsize=None)
def available() -> bool:
    """Whether ``adasplash`` is installed (not imported); looked up once, not on every attention call."""
    return importlib.util.find_spec("adasplash") is not None


def right_padded_lengths(key_padding_mask: Tensor) -> Optional[Tensor]:
    """Lengths ``(B,)`` if every row of ``key_padding_mask`` (True = pad) is ``n`` keys then pads, else None."""
    lengths = (~key_padding_mask).sum(-1)
    expected = torch.arange(key_padding_mask.size(-1), device=key_padding_mask.device)[None, :] >= lengths[:, None]
    return lengths.to(torch.int32) if torch.equal(expected, key_padding_mask) else None


def fused_sparse_attention(activation: str, q: Tensor, k: Tensor, v: Tensor, key_padding_mask: Optional[Tensor],
                           attn_mask: Optional[Tensor]) -> Optional[Tensor]:
    """``entmax_α(q kᵀ) v`` (``q`` already scaled by ``1/√d``) through AdaSplash, or None where its
    masks cannot express ours (the caller then computes it eagerly)."""
    if attn_mask is not None or q.shape != k.shape or q.size(-1) not in HEAD_DIMS:
        return None
    if key_padding_mask is None:  # lengths always: without them AdaSplash wants a power-of-two length
        lengths = torch.full((q.size(0),), q.size(2), dtype=torch.int32, device=q.device)
    else:
        lengths = right_padded_lengths(key_padding_mask.bool())
        if lengths is None:
            return None
    from adasplash import adasplash_v1

    scale = math.sqrt(q.size(-1))  # AdaSplash divides by √d again
    return adasplash_v1((q * scale).contiguous(), k.contiguous(), v.contiguous(), alpha=ALPHAS[activation],
                        is_causal=False, varlen=lengths)
