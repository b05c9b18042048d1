"""Attention activations: scores -> weights, with masked positions exactly 0.

Each function takes raw scores ``QKᵀ/√d_h`` of shape ``(..., tgt_len, src_len)`` and a boolean mask
(``True`` = may not be attended) broadcastable to it, or ``None``.  The scores are a fresh tensor
the function may overwrite (the attention passes ``q @ kᵀ``, whose backward does not need it).  ReLA's weights are the
one-liner :func:`rela`; the normalisation that makes them trainable lives in
:mod:`fairseq_rela.normalization`.

:data:`ACTIVATIONS` maps each ``--attention-activation`` name to an :class:`Activation`: the function
and what the rest of the code needs to know about it.  A new activation is one entry there.
"""
from dataclasses import dataclass
from typing import Callable, Dict, Optional

import torch
from torch import Tensor

from fairseq_rela.errors import OptionError

# Finite stand-in for -inf in sparsemax/entmax: exact zeros need z_j < max(z) - 2, and a finite
# value keeps fully-masked rows from producing NaN inside the sort-based solvers.
_SPARSE_FILL = -1e4


def softmax(scores: Tensor, mask: Optional[Tensor]) -> Tensor:
    """``softmax(s)`` in fp32 (as fairseq does); masked scores are -inf."""
    if mask is not None:
        scores = scores.masked_fill_(mask, float("-inf"))
    return torch.softmax(scores, dim=-1, dtype=torch.float32).type_as(scores)


def rela(scores: Tensor, mask: Optional[Tensor]) -> Tensor:
    """ReLA (Zhang et al. 2021, eq. 4): ``α = ReLU(s)``; masks are multiplicative (exact 0).

    Rows with no positive score are all zero ("null attention"); nothing here can give NaN.
    """
    if mask is not None:
        scores = scores.masked_fill_(mask, 0.0)  # mask first: relu_ saves its output for backward
    return torch.relu_(scores)


def _entmax_family(solver: Callable[..., Tensor]) -> Callable[[Tensor, Optional[Tensor]], Tensor]:
    def weights(scores: Tensor, mask: Optional[Tensor]) -> Tensor:
        z = scores.float()
        if mask is not None:
            z = z.masked_fill(mask, _SPARSE_FILL)
        p = solver(z, dim=-1)
        if mask is not None:  # a fully masked row is uniform over -1e4: zero it
            p = p.masked_fill(mask, 0.0)
        return p.type_as(scores)

    return weights


def _sparsemax(z: Tensor, dim: int) -> Tensor:
    from entmax import sparsemax as solver

    return solver(z, dim=dim)


def _entmax15(z: Tensor, dim: int) -> Tensor:
    from entmax import entmax15 as solver

    return solver(z, dim=dim)


sparsemax = _entmax_family(_sparsemax)
sparsemax.__doc__ = "sparsemax (Martins & Astudillo 2016), from the ``entmax`` package."
entmax15 = _entmax_family(_entmax15)
entmax15.__doc__ = "1.5-entmax (Peters et al. 2019), from the ``entmax`` package."

WeightsFn = Callable[[Tensor, Optional[Tensor]], Tensor]


@dataclass(frozen=True)
class Activation:
    """An attention activation: ``weights(scores, mask)``, and how the attention must treat it."""

    name: str
    weights: WeightsFn
    needs_head_norm: bool = False  # unnormalised weights: the head outputs need ReLA's normaliser
    fused_sdpa: bool = False  # torch's scaled_dot_product_attention computes exactly this (softmax)

    def __call__(self, scores: Tensor, mask: Optional[Tensor]) -> Tensor:
        return self.weights(scores, mask)


ACTIVATIONS: Dict[str, Activation] = {a.name: a for a in (
    Activation("softmax", softmax, fused_sdpa=True),
    Activation("rela", rela, needs_head_norm=True),
    Activation("sparsemax", sparsemax),
    Activation("entmax15", entmax15),
)}


def get_activation(name: str) -> Activation:
    """The :class:`Activation` called ``name``; :class:`~fairseq_rela.errors.OptionError` if none is."""
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise OptionError.unknown("--attention-activation", name, ACTIVATIONS) from None
