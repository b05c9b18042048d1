"""Attention activations: scores -> weights, with blocked positions exactly 0.

Each function takes raw scores ``QKᵀ/√d_h`` of shape ``(..., tgt_len, src_len)``, a boolean mask
(``True`` = may not be attended) broadcastable to it, or ``None``, and an additive float ``bias``
broadcastable to it (0 at blocked positions), or ``None``.  The scores are a fresh tensor the function
may overwrite (the attention passes ``q @ kᵀ``, whose backward does not need it).  Mask and bias are
applied in one pass over the scores, with no host synchronisation.  ReLA's weights are the one-liner
:func:`rela`; the normalisation that makes them trainable lives in :mod:`fairseq_rela.normalization`.

A fully blocked row (a query that may attend nowhere) is all 0 for every activation, with a finite
gradient: the semantics of ReLA's null attention and of PyTorch's ``scaled_dot_product_attention``.

:data:`ACTIVATIONS` maps each ``--attention-activation`` name to an :class:`Activation`: the function
and what the rest of the code needs to know about it.  A new activation is one entry there.
"""
from dataclasses import dataclass
from typing import Callable, Dict, Optional

import torch
from torch import Tensor

from fairseq_rela.errors import OptionError

# Finite stand-in for -inf in sparsemax/entmax, below the row's (shifted) maximum 0: exact zeros need
# z_j < max(z) - 2, and a finite value keeps fully blocked rows from producing NaN in the sort-based solvers.
_SPARSE_FILL = -1e4

WeightsFn = Callable[[Tensor, Optional[Tensor], Optional[Tensor]], Tensor]


def _block(scores: Tensor, mask: Optional[Tensor], bias: Optional[Tensor]) -> Tensor:
    """``scores + bias`` with blocked positions -inf, in place."""
    if bias is not None:
        return scores.add_(bias if mask is None else torch.where(mask, float("-inf"), bias))
    return scores if mask is None else scores.masked_fill_(mask, float("-inf"))


def softmax(scores: Tensor, mask: Optional[Tensor], bias: Optional[Tensor] = None) -> Tensor:
    """``softmax(s + bias)`` in fp32 (as fairseq does); blocked scores are -inf, a fully blocked row is 0."""
    if mask is None:
        return torch.softmax(_block(scores, None, bias), dim=-1, dtype=torch.float32).type_as(scores)
    empty = mask.all(-1, keepdim=True)  # left open for the softmax (finite), then zeroed: no NaN, not even in backward
    w = torch.softmax(_block(scores, mask & ~empty, bias), dim=-1, dtype=torch.float32).type_as(scores)
    return w.masked_fill(empty, 0.0)


def rela(scores: Tensor, mask: Optional[Tensor], bias: Optional[Tensor] = None) -> Tensor:
    """ReLA (Zhang et al. 2021, eq. 4): ``α = ReLU(s + bias)``; blocked positions are exactly 0, as the
    authors' multiplicative mask gives.

    Rows with no positive score are all zero ("null attention"); nothing here can give NaN.
    """
    return torch.relu_(_block(scores, mask, bias))  # masked first: relu_ saves its output for backward


def _entmax_family(solver: Callable[..., Tensor]) -> WeightsFn:
    def weights(scores: Tensor, mask: Optional[Tensor], bias: Optional[Tensor] = None) -> Tensor:
        z = scores.float()
        if bias is not None:
            z = z.add_(bias)
        if mask is None:
            return solver(z, dim=-1).type_as(scores)
        # shift by the row's unblocked maximum (both are shift-invariant) so the fill is below every
        # score that can get weight, however negative the scores; a fully blocked row shifts by 0
        top = z.detach().masked_fill(mask, float("-inf")).amax(-1, keepdim=True)
        top = top.masked_fill_(top == float("-inf"), 0.0)
        p = solver((z - top).masked_fill_(mask, _SPARSE_FILL), dim=-1)
        return p.masked_fill(mask, 0.0).type_as(scores)  # a fully blocked row is uniform over the fill: zero it

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


@dataclass(frozen=True)
class Activation:
    """An attention activation: ``weights(scores, mask, bias)``, and how the attention must treat it."""

    name: str
    weights: WeightsFn
    needs_head_norm: bool = False  # unnormalised weights: the head outputs need ReLA's normaliser
    fused_sdpa: bool = False  # torch's scaled_dot_product_attention computes exactly this (softmax)

    def __call__(self, scores: Tensor, mask: Optional[Tensor], bias: Optional[Tensor] = None) -> Tensor:
        return self.weights(scores, mask, bias)


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
