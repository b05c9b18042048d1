"""Value zeroing: how much a token's output of a layer changes when another token's value vector is zeroed.

Mohebbi, Zuidema, Chrupała, Alishahi (EACL 2023), "Quantifying Context Mixing in Transformers", §3
(code: hmohebbi/ValueZeroing, ``scoring/value_zeroing.py``).  In layer ``l``, zero the value vector
``v_j`` (projection bias included, every head) of key token ``j`` in one attention — the weights ``α`` do
not read ``v`` and stay as they were — run the whole layer again on its original input, and compare
token ``i``'s new output ``x̃_i^{¬j}`` with its original output ``x_i``:

    d_ij = 1 − cos(x̃_i^{¬j}, x_i),      VZ_ij = d_ij / Σ_k d_ik

"The whole layer" is the Transformer layer as the authors' ``layer_module(...)``: its attention block(s)
and the feed-forward block, with their residuals and LayerNorms.  ``d_ij`` is computed as
``½ ‖x̃/‖x̃‖ − x/‖x‖‖²`` (equal to ``1 − cos``, never negative, and accurate where ``cos`` is within
float rounding of 1).  Where no head attends from ``i`` to ``j`` (``α^h_ij = 0`` for every ``h``: padding,
the decoder's causal mask, a ReLA zero) zeroing ``v_j`` cannot change ``x_i``, and ``d_ij`` is set to an
exact 0 instead of the float noise of a batched rerun.  A row that nothing reaches (every ``d_ik = 0``: a
null ReLA row, a padding query) stays all 0 rather than 0/0.

**Encoder-decoder** (the paper and its code analyse encoders only): a decoder layer holds two
attentions, and both are zeroed the same way, each measured on the decoder layer's output: in its
self-attention the value of target-prefix token ``j`` (a (T × T) matrix; the causal mask makes it lower
triangular), in its cross-attention the value of source token ``j`` (T × S, normalised over the source
tokens: the per-layer alignment matrix).  As the two distances are changes of the same vector, the
rollout (:mod:`fairseq_rela.contributions`) normalises them jointly per decoder position,
``[d^cross_i | d^self_i] / (Σ d^cross_i + Σ d^self_i)``, the layer's mixing over ``[source | target]``.

Cost (:func:`zeroed_distances`): one extra forward of the layer per key token, batched: the ``K`` keys of
a batch are zeroed in ``K`` copies of it, run in a few calls of bounded size; so a layer costs about
``K`` times a plain pass of it (``K`` = source length for encoder self- and cross-attention, target length
for decoder self-attention).
"""
import inspect
from typing import Mapping, Optional, Protocol

import torch
from torch import Tensor, nn

_CHUNK_FLOATS = 1 << 24  # bound on one rerun's largest activations (copies x batch x positions x width)


class ZeroingLayer(Protocol):
    """A Transformer layer that can be rerun on copies of its batch (``fairseq_rela.models.layers``):
    ``batch_axes`` names the arguments of its ``forward`` that carry the batch, and their batch axis."""

    batch_axes: Mapping[str, int]


def cosine_distance(a: Tensor, b: Tensor) -> Tensor:
    """``1 − cos(a, b)`` over the last axis as ``½ ‖a/‖a‖ − b/‖b‖‖²`` (float32 at least; never negative)."""
    a, b = a.float(), b.float()
    unit_a = a / a.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(a.dtype).tiny)
    unit_b = b / b.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(b.dtype).tiny)
    return 0.5 * (unit_a - unit_b).pow(2).sum(-1)


def normalise_rows(distances: Tensor) -> Tensor:
    """``d_ij / Σ_k d_ik`` over the last axis; a row of zeros stays zeros."""
    total = distances.sum(-1, keepdim=True)
    return distances / torch.where(total > 0, total, torch.ones_like(total))


def _repeat(value, axis: Optional[int], copies: int):
    if axis is None or not torch.is_tensor(value):
        return value
    reps = [1] * value.dim()
    reps[axis] = copies
    return value.repeat(*reps)  # copy c of sentence b sits at c * B + b


@torch.no_grad()
def zeroed_distances(layer: nn.Module, attention: nn.Module, args: tuple, kwargs: dict, output: Tensor,
                     keys: int, chunk_floats: Optional[int] = None) -> Tensor:
    """(B, T, keys) cosine distances ``d_ij`` of each query's output of ``layer`` (``output``, (T, B, E), from
    the call with ``args``/``kwargs``) with key ``j``'s value zeroed in ``attention`` (one of the layer's):
    the batch is copied once per key, in chunks of at most ``chunk_floats`` (default :data:`_CHUNK_FLOATS`)
    activations per call.  The
    caller keeps recorders out of these reruns."""
    # the class's signature: an instance's forward may be wrapped (activation checkpointing)
    call = dict(inspect.signature(type(layer).forward).bind(layer, *args, **kwargs).arguments)
    call.pop("self")
    if call.get("incremental_state") is not None:
        raise ValueError("value zeroing reruns a layer on the whole sequence: it needs a teacher-forced pass, "
                         "not incremental decoding")
    T, B, E = output.shape
    width = max(E, getattr(getattr(layer, "fc1", None), "out_features", E))
    per_copy = B * (T * (width + 4 * E + attention.num_heads * keys) + keys * E)
    step = max(1, min(keys, (chunk_floats or _CHUNK_FLOATS) // max(1, per_copy)))
    axes = layer.batch_axes
    out = output.new_zeros(B, T, keys, dtype=torch.float32)
    target = output.transpose(0, 1)[:, :, None]  # (B, T, 1, E)
    try:
        for j0 in range(0, keys, step):
            n = min(step, keys - j0)
            zeroed = torch.zeros(n, B, keys, dtype=torch.bool, device=output.device)
            zeroed[torch.arange(n), :, torch.arange(j0, j0 + n)] = True
            attention.zeroed_values = zeroed.view(n * B, keys)
            result = layer(**{name: _repeat(v, axes.get(name), n) for name, v in call.items()})
            x = result[0] if isinstance(result, (tuple, list)) else result  # (T, n*B, E)
            x = x.view(T, n, B, E).permute(2, 0, 1, 3)  # (B, T, n, E)
            out[:, :, j0: j0 + n] = cosine_distance(x, target)
    finally:
        attention.zeroed_values = None
    return out
