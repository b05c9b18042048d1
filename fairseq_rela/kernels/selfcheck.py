"""A fused kernel is trusted only after it has run once, on this device, against the eager computation.

The first time the attention would take ReLA's Triton kernel for a configuration — (device, dtype, head dim,
mask kind, dropout) — :func:`trusted` runs the kernel's forward and backward on a small random problem
of that configuration on that device and compares them with the same attention computed eagerly in fp32
from the same inputs.  Any failure — compile error, ``OutOfResources``, launch error, a non-finite value,
a result outside the tolerance — is one warning naming the configuration and the cause, and that
configuration runs eagerly for the rest of the process (``--attention-kernel auto``); with
``--attention-kernel fused`` it is a :class:`KernelCheckError` instead.  Verdicts are cached: a training
step pays one dictionary look-up after the first.

Tolerance: every element of the output and of the three gradients within ``TOLERANCE[dtype]`` times the
same product computed on absolute values (``|P||V|`` for the output, ``|P|ᵀ|dO|`` for dV, ``|dS||K|`` and
``|dS|ᵀ|Q|`` for dQ and dK, ``|dS| = (|dO||V|ᵀ)·1[s > 0]``), plus 1e-6 absolute.  The kernel rounds the
weights (or dS) to the input dtype once and its result once, and sums in fp32: ``2u`` of that magnitude,
``u`` the dtype's unit roundoff (fp16 2⁻¹¹, bf16 2⁻⁸), plus fp32 summation; the tolerance allows 8u
(fp32: 1e-5).
"""
import logging
from dataclasses import dataclass
from typing import Dict, Optional

import torch

logger = logging.getLogger(__name__)

TOLERANCE = {torch.float32: 1e-5, torch.float16: 8 * 2.0 ** -11, torch.bfloat16: 8 * 2.0 ** -8}
SHAPE = (2, 2, 37, 41)  # batch, heads, queries, keys: not multiples of any tile, several tiles each way


class KernelCheckError(RuntimeError):
    """``--attention-kernel fused`` asked for a kernel that failed its self-check on this device."""


@dataclass(frozen=True)
class KernelConfig:
    """What selects a compiled kernel and its launch: device, dtype, head dim, mask kind, dropout."""
    device: str
    dtype: torch.dtype
    head_dim: int
    has_mask: bool
    has_bias: bool
    dropout: bool

    def __str__(self) -> str:
        masks = "+".join(n for n, on in (("mask", self.has_mask), ("bias", self.has_bias)) if on) or "no mask"
        return (f"ReLA Triton kernel on {self.device}, {str(self.dtype).replace('torch.', '')}, head dim "
                f"{self.head_dim}, {masks}, {'dropout' if self.dropout else 'no dropout'}")


_VERDICTS: Dict[KernelConfig, Optional[str]] = {}  # None: trusted; else why not
_SEEN: Dict[tuple, KernelConfig] = {}  # verdict()'s arguments -> their configuration


def _problem(config: KernelConfig, device: torch.device):
    g = torch.Generator().manual_seed(0)
    B, H, T, S = SHAPE
    q, k, v = (torch.randn(B, H, n, config.head_dim, generator=g) * config.head_dim ** -0.25 for n in (T, S, S))
    upstream = torch.randn(B, H, T, config.head_dim, generator=g)
    mask = bias = None
    if config.has_mask:  # key padding: the first sentence's last 7 keys
        pad = torch.zeros(B, 1, 1, S, dtype=torch.bool)
        pad[0, ..., S - 7:] = True
        mask = pad
    if config.has_bias:  # an additive mask with some blocked (-inf) entries
        bias = torch.randn(T, S, generator=g)
        bias[torch.rand(T, S, generator=g) < 0.2] = float("-inf")
    to = (lambda x: None if x is None else x.to(device))
    cast = (lambda x: x.to(device, config.dtype))
    return [cast(x) for x in (q, k, v, upstream)] + [to(mask), None if bias is None else cast(bias)]


def _reference(q, k, v, upstream, mask, bias, keep, p):
    """fp32 eager output and gradients, and their magnitudes (the same products on absolute values)."""
    q, k, v, upstream = (x.float() for x in (q, k, v, upstream))
    s = q @ k.transpose(-1, -2)
    if bias is not None:
        s = s + bias.float()
    blocked = torch.zeros_like(s, dtype=torch.bool)
    if mask is not None:
        blocked = blocked | mask
    if bias is not None:
        blocked = blocked | torch.isinf(bias) & (bias < 0)
    s = s.masked_fill(blocked, 0.0)
    factor = torch.ones_like(s) if keep is None else keep.float() / (1 - p)
    gate = (s > 0).float() * factor
    w = s.clamp_min(0) * factor
    ds = (upstream @ v.transpose(-1, -2)) * gate
    ds_mag = (upstream.abs() @ v.abs().transpose(-1, -2)) * gate
    want = [w @ v, ds @ k, ds.transpose(-1, -2) @ q, w.transpose(-1, -2) @ upstream]
    mags = [w.abs() @ v.abs(), ds_mag @ k.abs(), ds_mag.transpose(-1, -2) @ q.abs(), w.abs().transpose(-1, -2) @ upstream.abs()]
    return want, mags


def run_check(config: KernelConfig, device: torch.device) -> Optional[str]:
    """Run the kernel once for ``config`` on ``device``; None if it matches the eager path, else why not."""
    from fairseq_rela.kernels import rela_triton

    q, k, v, upstream, mask, bias = _problem(config, device)
    p, seed = (0.1, 12345) if config.dropout else (0.0, None)
    try:
        q, k, v = (x.requires_grad_() for x in (q, k, v))
        out = rela_triton.rela_attention(q, k, v, mask, bias, dropout_p=p, seed=seed)
        got = [out.detach(), *torch.autograd.grad(out, (q, k, v), upstream)]
        keep = rela_triton.dropout_keep(tuple(out.shape[:3]) + (k.size(2),), p, seed, device) if p else None
    except Exception as e:  # compile error, OutOfResources, launch error: a verdict, not a crash
        return f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else 'no message'}"
    want, mags = _reference(q.detach(), k.detach(), v.detach(), upstream, mask, bias, keep, p)
    tol = TOLERANCE[config.dtype]
    for name, a, b, m in zip(("output", "dQ", "dK", "dV"), got, want, mags):
        a = a.float()
        if not torch.isfinite(a).all():
            return f"non-finite {name}"
        excess = ((a - b).abs() - (tol * m + 1e-6)).max().item()
        if excess > 0:
            worst = ((a - b).abs() / (m + 1e-6)).max().item()
            return f"{name} differs from the eager path: error {worst:.2e} of its magnitude (tolerance {tol:.1e})"
    return None


def verdict(device: torch.device, dtype: torch.dtype, head_dim: int, has_mask: bool, has_bias: bool,
            dropout: bool) -> Optional[str]:
    """None if ReLA's kernel passed its self-check for this configuration, else why not (run on the first call)."""
    key = (device, dtype, head_dim, has_mask, has_bias, dropout)
    if key in _SEEN:  # the attention's hot path: one look-up, no object built
        return _VERDICTS[_SEEN[key]]
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    config = _SEEN[key] = KernelConfig(str(device), dtype, head_dim, has_mask, has_bias, dropout)
    if config not in _VERDICTS:
        with torch.inference_mode(False), torch.enable_grad():  # the check needs a backward, even in generation
            _VERDICTS[config] = run_check(config, device)
        if _VERDICTS[config] is not None:
            logger.warning("%s failed its self-check (%s): the eager path computes this attention for the rest "
                           "of the run (with --attention-kernel auto)", config, _VERDICTS[config])
    return _VERDICTS[config]


def trusted(device: torch.device, dtype: torch.dtype, head_dim: int, has_mask: bool, has_bias: bool,
            dropout: bool, strict: bool = False) -> bool:
    """Whether the attention may use ReLA's kernel for this configuration (:func:`verdict` is None).

    ``strict`` (``--attention-kernel fused``): a failure raises :class:`KernelCheckError` instead of returning
    False (on which the caller computes the attention eagerly; the failure was logged once)."""
    reason = verdict(device, dtype, head_dim, has_mask, has_bias, dropout)
    if reason is not None and strict:
        raise KernelCheckError(f"--attention-kernel fused: the ReLA Triton kernel ({dtype}, head dim {head_dim}) "
                               f"failed its self-check on {device}: {reason} (--attention-kernel auto falls back "
                               "to the eager path)")
    return reason is None


def verdicts() -> Dict[KernelConfig, Optional[str]]:
    """Every configuration checked so far in this process, and why it failed (None: trusted)."""
    return dict(_VERDICTS)


def forget() -> None:
    """Drop every cached verdict (tests)."""
    _VERDICTS.clear()
    _SEEN.clear()
