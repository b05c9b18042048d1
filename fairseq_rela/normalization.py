"""Normalisers applied to the concatenated head outputs ``z`` before the output projection.

ReLA's weights are unnormalised, so the attention output's scale varies from query to query;
Zhang et al. (2021, §3) normalise it:

* ReLA-i: ``RMSNorm(z) = g ⊙ z / rms(z)``, gain initialised from ``U(-√(3/d), √(3/d))``;
* ReLA-g: ``g ⊙ RMSNorm(z) ⊙ σ(w ⊙ z)``, ``g = 1`` and ``w = 1`` at init (the authors' default).

Every normaliser is affine in ``z`` *for a fixed query*: ``N(z) = s ⊙ C(z) + c`` with ``C`` the
identity or (LayerNorm) the centring map.  :meth:`HeadNorm.linearize` returns ``(s, centre, c)``
so the norm-based analysis can fold it into ``f(x)`` and stay exact.
"""
import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

NORMS = ("rms", "layer", "none")
VARIANTS = ("g", "i")


class HeadNorm(nn.Module):
    """Identity (``--rela-norm none``)."""

    eps: float = 1e-8

    def forward(self, z: Tensor) -> Tensor:
        return z

    def linearize(self, z: Tensor) -> Tuple[Tensor, bool, Optional[Tensor]]:
        """Per-query ``(s, centre, c)`` with ``N(z) = s ⊙ C(z) + c``; ``s`` broadcasts to ``z``."""
        return z.new_ones(1), False, None


class RMSNorm(HeadNorm):
    """``g ⊙ z / √(mean(z²) + ε)``, computed in fp32 so a zero row (null attention) stays 0."""

    def __init__(self, dim: int, uniform_gain: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        if uniform_gain:  # ReLA-i's specialised initialisation
            bound = math.sqrt(3.0 / dim)
            nn.init.uniform_(self.weight, -bound, bound)

    def _inv_rms(self, z: Tensor) -> Tensor:
        return torch.rsqrt(z.float().pow(2).mean(-1, keepdim=True) + self.eps)

    def forward(self, z: Tensor) -> Tensor:
        return F.rms_norm(z.float(), (z.size(-1),), self.weight.float(), self.eps).type_as(z)

    def linearize(self, z: Tensor) -> Tuple[Tensor, bool, Optional[Tensor]]:
        return self._inv_rms(z) * self.weight.float(), False, None


class GatedRMSNorm(RMSNorm):
    """ReLA-g: ``g ⊙ RMSNorm(z) ⊙ σ(w ⊙ z)``."""

    def __init__(self, dim: int):
        super().__init__(dim)
        self.gate = nn.Parameter(torch.ones(dim))

    def forward(self, z: Tensor) -> Tensor:
        zf = z.float()
        normed = F.rms_norm(zf, (z.size(-1),), self.weight.float(), self.eps)
        return (normed * torch.sigmoid(zf * self.gate.float())).type_as(z)

    def linearize(self, z: Tensor) -> Tuple[Tensor, bool, Optional[Tensor]]:
        zf = z.float()
        return self._inv_rms(z) * self.weight.float() * torch.sigmoid(zf * self.gate.float()), False, None


class HeadLayerNorm(HeadNorm):
    """LayerNorm over the concatenated heads (``--rela-norm layer``, an ablation)."""

    eps = 1e-5

    def __init__(self, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, z: Tensor) -> Tensor:
        return F.layer_norm(z.float(), (z.size(-1),), self.weight.float(), self.bias.float(), self.eps).type_as(z)

    def linearize(self, z: Tensor) -> Tuple[Tensor, bool, Optional[Tensor]]:
        var = z.float().var(-1, unbiased=False, keepdim=True)
        return torch.rsqrt(var + self.eps) * self.weight.float(), True, self.bias.float()


def build_head_norm(norm: str, variant: str, dim: int) -> HeadNorm:
    """The normaliser for ``--rela-norm`` / ``--rela-variant``."""
    if norm not in NORMS:
        raise ValueError(f"--rela-norm: unknown value {norm!r}; choose one of {', '.join(NORMS)}")
    if variant not in VARIANTS:
        raise ValueError(f"--rela-variant: unknown value {variant!r}; choose one of {', '.join(VARIANTS)}")
    if norm == "none":
        return HeadNorm()
    if norm == "layer":
        return HeadLayerNorm(dim)
    return GatedRMSNorm(dim) if variant == "g" else RMSNorm(dim, uniform_gain=True)
