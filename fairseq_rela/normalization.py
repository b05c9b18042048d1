"""Normalisers applied to the concatenated head outputs ``z`` before the output projection.

ReLA's weights are unnormalised, so the attention output's scale varies from query to query;
Zhang et al. (2021, §3) normalise it:

* ReLA-i: ``RMSNorm(z) = g ⊙ z / rms(z)``, gain initialised from ``U(-√(3/d), √(3/d))``;
* ReLA-g: ``g ⊙ RMSNorm(z) ⊙ σ(w ⊙ z)``, ``g = 1`` at init and the gate ``w`` from
  ``U(-√(3/d), √(3/d))``, so ``σ(w ⊙ z) ≈ 0.5`` at the start: the authors' code
  (``bzhangGo/zero``, ``modules/rela.py``, ``gated_rms_norm``) leaves ``gate`` to the run's default
  initialiser, ``uniform_unit_scaling`` (TF1 ``variance_scaling``, fan_avg, uniform, gain 1).
  ``--rela-gate-init ones`` keeps the earlier ``w = 1``.

Every normaliser is affine in ``z`` *for a fixed query*: ``N(z) = s ⊙ C(z) + c`` with ``C`` the
identity or (LayerNorm) the centring map, and ``s = r · g ⊙ q``: a per-query scalar ``r``, a fixed
gain ``g`` and (gate, LayerNorm) a per-query vector ``q``.  :meth:`HeadNorm.linearize` returns these
parts so the norm-based analysis can fold them into ``f(x)`` exactly, and cheaply when ``q`` is absent.
"""
import abc
import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fairseq_rela.errors import check_choice

NORMS = ("rms", "layer", "none")
VARIANTS = ("g", "i")
GATE_INITS = ("uniform", "ones")


def uniform_unit_scaling_(weight: Tensor) -> Tensor:
    """``U(-√(3/d), √(3/d))`` for a vector of size d: TF1 ``variance_scaling(1, fan_avg, uniform)``."""
    bound = math.sqrt(3.0 / weight.numel())
    return nn.init.uniform_(weight, -bound, bound)


@dataclass
class Linearization:
    """``N(z) = r · g ⊙ q ⊙ C(z) + shift`` for the queries of ``z`` (T,B,E); None parts are 1 / 0."""

    row_scale: Optional[Tensor] = None  # r: (T,B,1)
    gain: Optional[Tensor] = None  # g: (E,)
    query_vector: Optional[Tensor] = None  # q: (T,B,E), per-query and per-dimension
    centre: bool = False  # C subtracts the mean over E
    shift: Optional[Tensor] = None  # (E,)


def _compute_dtype(z: Tensor) -> torch.dtype:
    return torch.promote_types(z.dtype, torch.float32)


class _RMSNormFunction(torch.autograd.Function):
    """``weight ⊙ z / √(mean(z²) + ε) [⊙ σ(gate ⊙ z)]`` with a hand-written backward.

    Both passes compute in fp32 (float64 stays float64) whatever ``z``'s dtype, and only the results
    are cast back, so fp16/bf16 lose nothing.  At an all-zero row (null attention) the input gradient
    is returned as 0 rather than ``weight ⊙ σ(0)/√ε`` (≈ 5000 weight for ε = 1e-8, which overflows
    fp16 and becomes NaN in the backward of ``weights @ v``), and such a row's upstream gradient is
    ignored (an fp16 inf there would give inf · 0 = NaN in the gain's gradient): every parameter gradient is unchanged,
    in any precision, because such a row comes from all-zero weights (ReLU'(s ≤ 0) = 0, masked or
    dropped positions), and an all-zero weight row passes no gradient to queries, keys or values.
    """

    @staticmethod
    def forward(ctx, z: Tensor, weight: Tensor, gate: Optional[Tensor], eps: float) -> Tensor:
        dt = _compute_dtype(z)
        zf = z.to(dt)
        mean_sq = zf.square().mean(-1, keepdim=True)
        r = torch.rsqrt(mean_sq + eps)
        y = zf * r
        s = None
        if gate is not None:
            s = torch.sigmoid(zf * gate.to(dt))
            y.mul_(s)
        y.mul_(weight.to(dt))
        ctx.save_for_backward(z, weight, gate, r, s, mean_sq == 0)
        return y.to(z.dtype)

    @staticmethod
    def backward(ctx, dy: Tensor):
        z, weight, gate, r, s, null = ctx.saved_tensors
        dt = r.dtype
        # a zero row's upstream gradient is ignored: an inf one (fp16) must not give inf * 0 = NaN, and
        # with it 0 every term below is 0 on that row, so its input gradient is 0 (no host sync needed)
        zf, dyf = z.to(dt), dy.to(dt).masked_fill(null, 0.0)
        red = tuple(range(z.dim() - 1))
        n = zf * r  # the normalised row
        t = n if s is None else n * s  # y / weight
        d_weight = (dyf * t).sum(red) if ctx.needs_input_grad[1] else None
        dz = dyf * weight.to(dt)  # dL/dt
        u = dz * t  # (dL/dn) ⊙ n
        proj = u.mean(-1, keepdim=True)
        d_pre = d_gate = None
        if s is not None:
            d_pre = torch.addcmul(u, u, s, value=-1.0)  # d/d(gate ⊙ z) = (dL/dt) ⊙ n ⊙ s(1 - s)
            d_gate = (d_pre * zf).sum(red) if ctx.needs_input_grad[2] else None
            dz.mul_(s)  # dL/dn
        dz.addcmul_(n, proj, value=-1.0).mul_(r)  # r (dL/dn - n mean(dL/dn ⊙ n))
        if d_pre is not None:
            dz.addcmul_(d_pre, gate.to(dt))
        return (dz.to(z.dtype), None if d_weight is None else d_weight.to(weight.dtype),
                None if d_gate is None else d_gate.to(gate.dtype), None)


def rms_norm(z: Tensor, weight: Tensor, gate: Optional[Tensor] = None, eps: float = 1e-8) -> Tensor:
    """(Gated) RMSNorm over the last dimension: see :class:`_RMSNormFunction`.

    Where no gradient can flow (``torch.no_grad()``, e.g. beam search, or no input requiring one) it
    skips the autograd function and its saved tensors: PyTorch's fused ``rms_norm`` gives the same
    ``z / √(mean(z²) + ε)`` bit for bit, then the gate and gain in the autograd path's order, so the
    two paths agree exactly (tests/test_normalization.py).
    """
    if torch.is_grad_enabled() and (z.requires_grad or weight.requires_grad
                                     or (gate is not None and gate.requires_grad)):
        return _RMSNormFunction.apply(z, weight, gate, eps)
    dt = _compute_dtype(z)
    zf = z.to(dt)
    y = F.rms_norm(zf, (zf.size(-1),), None, eps)
    if gate is not None:
        y.mul_(torch.sigmoid(zf * gate.to(dt)))
    return y.mul_(weight.to(dt)).to(z.dtype)


class HeadNorm(nn.Module, abc.ABC):
    """A normaliser of the concatenated head outputs ``z`` (T,B,E), affine in ``z`` per query."""

    eps: float = 1e-8

    @abc.abstractmethod
    def forward(self, z: Tensor) -> Tensor:
        """``N(z)``, in ``z``'s dtype."""

    @abc.abstractmethod
    def linearize(self, z: Tensor) -> Linearization:
        """The per-query affine form of this normaliser at ``z`` (for the norm decomposition)."""


class IdentityNorm(HeadNorm):
    """No normalisation (softmax, sparsemax, entmax; ReLA with ``--rela-norm none``)."""

    def forward(self, z: Tensor) -> Tensor:
        return z

    def linearize(self, z: Tensor) -> Linearization:
        return Linearization()


class RMSNorm(HeadNorm):
    """``g ⊙ z / √(mean(z²) + ε)``, computed in fp32 so a zero row (null attention) stays 0 (and its
    gradient finite in fp16: :func:`rms_norm`)."""

    def __init__(self, dim: int, uniform_gain: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        if uniform_gain:  # ReLA-i's specialised initialisation
            uniform_unit_scaling_(self.weight)

    def _inv_rms(self, z: Tensor) -> Tensor:
        return torch.rsqrt(z.float().pow(2).mean(-1, keepdim=True) + self.eps)

    def forward(self, z: Tensor) -> Tensor:
        return rms_norm(z, self.weight, None, self.eps)

    def linearize(self, z: Tensor) -> Linearization:
        return Linearization(row_scale=self._inv_rms(z), gain=self.weight.float())


class GatedRMSNorm(RMSNorm):
    """ReLA-g: ``g ⊙ RMSNorm(z) ⊙ σ(w ⊙ z)``; ``w`` starts ``U(-√(3/d), √(3/d))`` (``gate_init="uniform"``,
    the authors') or 1 (``"ones"``)."""

    def __init__(self, dim: int, gate_init: str = "uniform"):
        super().__init__(dim)
        check_choice("--rela-gate-init", gate_init, GATE_INITS)
        self.gate = nn.Parameter(torch.ones(dim))
        if gate_init == "uniform":
            uniform_unit_scaling_(self.gate)

    def forward(self, z: Tensor) -> Tensor:
        return rms_norm(z, self.weight, self.gate, self.eps)

    def linearize(self, z: Tensor) -> Linearization:
        return Linearization(row_scale=self._inv_rms(z), gain=self.weight.float(),
                             query_vector=torch.sigmoid(z.float() * self.gate.float()))


class HeadLayerNorm(HeadNorm):
    """LayerNorm over the concatenated heads (``--rela-norm layer``, an ablation)."""

    eps = 1e-5

    def __init__(self, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, z: Tensor) -> Tensor:
        return F.layer_norm(z.float(), (z.size(-1),), self.weight.float(), self.bias.float(), self.eps).type_as(z)

    def linearize(self, z: Tensor) -> Linearization:
        var = z.float().var(-1, unbiased=False, keepdim=True)
        return Linearization(row_scale=torch.rsqrt(var + self.eps), gain=self.weight.float(), centre=True,
                             shift=self.bias.float())


def build_head_norm(norm: str, variant: str, dim: int, gate_init: str = "uniform") -> HeadNorm:
    """The normaliser for ``--rela-norm`` / ``--rela-variant`` (values as :mod:`fairseq_rela.config`
    checks them; a bad one is an :class:`~fairseq_rela.errors.OptionError`)."""
    check_choice("--rela-norm", norm, NORMS)
    check_choice("--rela-variant", variant, VARIANTS)
    if norm == "none":
        return IdentityNorm()
    if norm == "layer":
        return HeadLayerNorm(dim)
    return GatedRMSNorm(dim, gate_init) if variant == "g" else RMSNorm(dim, uniform_gain=True)
