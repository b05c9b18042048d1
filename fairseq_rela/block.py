"""The attention block — attention, residual connection and LayerNorm — as per-token contributions.

Kobayashi et al. (2021), "Incorporating Residual and Normalization Layers into Analysis of Masked
Language Models", eq. 8–10.  The attention's output is already a sum over key tokens
(:mod:`fairseq_rela.recording`): ``y_i = Σ_j v_ij + b``.  The residual adds the query token's own
state ``x_i``; a post-norm layer then applies ``LN(u) = γ ⊙ (u − m(u)) / s(u) + β`` to
``u_i = y_i + x_i``.  The mean ``m`` is linear and ``s(u_i)`` is one number per query, so LN
distributes over the sum exactly:

    LN(u_i) = Σ_j F_i(c_ij) + F_i(b) + β,    F_i(c) = γ ⊙ (c − m(c)) / s(u_i)

with ``c_ij = v_ij`` plus ``x_i`` at the query's own position (self-attention), or with the residual
as one more term (cross-attention: the decoder's own state is not a source token).  A pre-norm layer
has no LayerNorm after the residual (its LayerNorm acts on each token before the attention, inside
``v_ij``), so its block output is ``Σ_j c_ij + b``.

The **mixing ratio** (their §5) of query ``i`` is how much of the block's output comes from other
tokens: ``‖Σ_{j≠i} c_ij‖ / (‖Σ_{j≠i} c_ij‖ + ‖c_ii‖)`` (cross-attention: all source tokens against
the residual), at three levels: ``attention`` (the attention's vectors alone, Attn-N), ``residual``
(with the residual, AttnRes-N) and ``block`` (after the LayerNorm, AttnResLn-N; pre-norm: = residual).

The same terms give each block's **ALTI** shares (:func:`fairseq_rela.contributions.alti`: Manhattan
distances of ``F_i(c_ij)`` to the block's output, bias included), computed on the vectors in hand.
"""
from dataclasses import dataclass
from typing import Callable, Optional, Protocol

import torch
from torch import Tensor, nn

from fairseq_rela.contributions import alti

#: the levels of :attr:`BlockParts.mixing` (last axis)
MIXING_LEVELS = ("attention", "residual", "block")


@dataclass
class BlockParts:
    """One attention block's output as per-token contributions (batch tensors, float32)."""

    norms: Tensor  # (B, T, S) ‖F_i(c_ij)‖: key token j's contribution to block output i
    residual_norm: Optional[Tensor]  # (B, T) cross-attention: ‖F_i(x_i)‖ of the residual; None: inside norms
    mixing: Tensor  # (B, T, 3) mixing ratio at each of MIXING_LEVELS; NaN where undefined (cross: attention level)
    vectors: Optional[Tensor] = None  # (B, T, S, E) F_i(c_ij), with keep_vectors
    residual: Optional[Tensor] = None  # (B, T, E) F_i(x_i) (cross-attention), with keep_vectors
    bias: Optional[Tensor] = None  # (B, T, E) F_i(b) + β: Σ_j vectors + residual + bias == block output
    alti: Optional[Tensor] = None  # (B, T, S) ALTI share of key j in output i (contributions.alti)
    alti_residual: Optional[Tensor] = None  # (B, T) cross-attention: the residual's ALTI share; None: inside alti


def _ratio(mixed: Tensor, kept: Tensor) -> Tensor:
    """‖mixed‖ / (‖mixed‖ + ‖kept‖) over the last axis; NaN where both are 0 (a null attention row)."""
    m, k = mixed.norm(dim=-1), kept.norm(dim=-1)
    return m / (m + k)


@torch.no_grad()
def decompose_block(vectors: Tensor, bias: Tensor, residual: Tensor, self_offset: Optional[int],
                    layer_norm: Optional[nn.LayerNorm], keep_vectors: bool = False,
                    overwrite: bool = False) -> BlockParts:
    """Contributions of each key token (and of the residual) to the block's output.

    Args: vectors (B,T,S,E) and bias (E,) of the attention (``Σ_j vectors_ij + bias`` is its output);
    residual (B,T,E), the query tokens' states added back; ``self_offset``: self-attention, query ``i``
    is key ``i + self_offset`` (decoder steps: ``S − T``), None for cross-attention; ``layer_norm``: the
    post-norm LayerNorm after the residual (None: pre-norm, none there); ``overwrite``: ``vectors`` (float32)
    may be used as the workspace (the caller's scratch; then, without ``keep_vectors``, it is left undefined).

    Order (one write and six reads over the (B,T,S,E) vectors, no other tensor of that size when
    ``overwrite``): ``F_i`` is linear, so every sum over keys is taken before it, on (B,T,E) tensors:
    ``Σ_{j≠i} F_i(c_ij) = F_i(Σ_j v_ij − v_ii)``, the block output ``y_i = F_i(u_i) + β`` (the LayerNorm's
    output) and ``F_i(c) = (c − m(c)) ⊙ (γ / s(u_i))``.  Exact algebra; in float32 the mixing ratios, ALTI shares
    and (last bits) norms differ from transforming each term first by rounding only: within 1e-6 (norms:
    relative; ratios: absolute) and 1e-5 (ALTI, absolute) of a float64 evaluation of the definitions
    (tests/test_block.py::test_decompose_block_within_float32_rounding_of_a_float64_reference).
    """
    if vectors.dtype != torch.float32:
        vectors, overwrite = vectors.float(), True  # a copy of our own
    bias, residual = bias.float(), residual.float()
    B, T, S, E = vectors.shape
    rows = torch.arange(T, device=vectors.device)
    total = vectors.sum(2)  # Σ_j v_ij (B,T,E)
    if self_offset is not None:
        cols = rows + self_offset
        attn_own = vectors[:, rows, cols]  # (B,T,E)
        mixed = total - attn_own  # Σ_{j≠i} v_ij: the same at the attention and residual levels
        own = attn_own + residual  # c_ii
        attention_level, residual_level = _ratio(mixed, attn_own), _ratio(mixed, own)
        res = None
    else:
        attention_level = vectors.new_full((B, T), float("nan"))
        mixed, own, res = total, None, residual
        residual_level = _ratio(total, residual)
    u = total + residual + bias  # the block's output before its LayerNorm
    contrib = vectors if overwrite else torch.empty(B, T, S, E, dtype=torch.float32, device=vectors.device)
    if layer_norm is not None:
        scale = (u.var(-1, unbiased=False, keepdim=True) + layer_norm.eps).rsqrt()  # 1 / s(u_i), (B,T,1)
        gamma = layer_norm.weight.float() if layer_norm.weight is not None else vectors.new_ones(E)
        beta = layer_norm.bias.float() if layer_norm.bias is not None else vectors.new_zeros(E)
        w = scale * gamma  # (B,T,E)

        def F(c: Tensor) -> Tensor:  # F_i on (B,T,E)
            return (c - c.mean(-1, keepdim=True)) * w

        torch.sub(vectors, vectors.mean(-1, keepdim=True), out=contrib).mul_(w[:, :, None])
        if res is None:
            own = F(own)
            block_level = _ratio(F(mixed), own)
        else:
            res = F(res)
            block_level = _ratio(F(mixed), res)
        out_bias = F(bias.expand(B, T, E)) + beta
        y = F(u) + beta
    else:
        if not overwrite:
            contrib.copy_(vectors)
        block_level, out_bias, y = residual_level, bias.expand(B, T, E), u
    if own is not None:
        contrib[:, rows, cols] = own
    norms = contrib.norm(dim=-1)
    shares = alti(contrib, res, out_bias, output=y, overwrite=not keep_vectors)
    return BlockParts(
        norms=norms, residual_norm=None if res is None else res.norm(dim=-1),
        mixing=torch.stack([attention_level, residual_level, block_level], -1),
        vectors=contrib if keep_vectors else None, residual=res if keep_vectors else None,
        bias=out_bias if keep_vectors else None, alti=shares.keys, alti_residual=shares.residual,
    )


class ResidualTap(Protocol):
    """A Transformer layer that reports its residual connections (``fairseq_rela.models.layers``):
    while ``residual_observer`` is set, every ``residual_connection(x, residual)`` calls it first with
    ``(layer, x, residual)`` — after an attention, ``x`` is that attention's output."""

    residual_observer: Optional[Callable[[nn.Module, Tensor, Tensor], None]]

    def block_layer_norm(self, kind: str) -> Optional[nn.LayerNorm]:
        """The LayerNorm applied right after the residual of attention ``kind`` (None: pre-norm),
        or an OptionError where the block is not attention + residual + LayerNorm."""
