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


def _mixing(vectors: Tensor, own: Optional[Tensor], residual: Optional[Tensor]) -> Tensor:
    """Mixing ratio of contributions ``vectors`` (B,T,S,E): the query's own term is ``own`` (self-attention,
    the diagonal) or the separate ``residual`` (cross-attention)."""
    total = vectors.sum(2)
    if residual is not None:
        return _ratio(total, residual)
    return _ratio(total - own, own)


@torch.no_grad()
def decompose_block(vectors: Tensor, bias: Tensor, residual: Tensor, self_offset: Optional[int],
                    layer_norm: Optional[nn.LayerNorm], keep_vectors: bool = False) -> BlockParts:
    """Contributions of each key token (and of the residual) to the block's output.

    Args: vectors (B,T,S,E) and bias (E,) of the attention (``Σ_j vectors_ij + bias`` is its output);
    residual (B,T,E), the query tokens' states added back; ``self_offset``: self-attention, query ``i``
    is key ``i + self_offset`` (decoder steps: ``S − T``), None for cross-attention; ``layer_norm``: the
    post-norm LayerNorm after the residual (None: pre-norm, none there).
    """
    vectors, bias, residual = vectors.float(), bias.float(), residual.float()
    B, T, S, E = vectors.shape
    rows = torch.arange(T, device=vectors.device)
    if self_offset is not None:
        cols = rows + self_offset
        attn_own = vectors[:, rows, cols]  # (B,T,E)
        attention_level = _mixing(vectors, attn_own, None)
        contrib = vectors.clone()
        contrib[:, rows, cols] += residual
        own, res = contrib[:, rows, cols], None
    else:
        attention_level = vectors.new_full((B, T), float("nan"))
        contrib, own, res = vectors, None, residual
    residual_level = _mixing(contrib, own, res)
    out_bias = bias.expand(B, T, E)
    if layer_norm is not None:
        total = contrib.sum(2) + bias + (0 if res is None else res)  # u_i, the LayerNorm's input
        scale = (total.var(-1, unbiased=False, keepdim=True) + layer_norm.eps).rsqrt()  # 1 / s(u_i), (B,T,1)
        gamma = layer_norm.weight.float() if layer_norm.weight is not None else vectors.new_ones(E)
        beta = layer_norm.bias.float() if layer_norm.bias is not None else vectors.new_zeros(E)

        def F(c: Tensor, s: Tensor) -> Tensor:
            return (c - c.mean(-1, keepdim=True)) * s * gamma

        contrib = F(contrib, scale[:, :, None])
        res = None if res is None else F(res, scale)
        own = None if own is None else contrib[:, rows, cols]
        out_bias = F(out_bias, scale) + beta
    block_level = residual_level if layer_norm is None else _mixing(contrib, own, res)
    shares = alti(contrib, res, out_bias)
    return BlockParts(
        norms=contrib.norm(dim=-1), residual_norm=None if res is None else res.norm(dim=-1),
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
