"""ReLA attention as fused Triton kernels: ``o_i = Σ_j drop_ij · ReLU(s_ij + b_ij) · v_j``.

The same computation as the eager path (:func:`fairseq_rela.activations.rela`, attention dropout on
the ReLU weights, then ``@ v``), tiled like FlashAttention: each program holds a block of queries and
walks the keys, so the ``(B, H, T, S)`` score matrix is never stored (memory O(T·d) per head, plus
the masks as given).  ReLA needs no running maximum or normaliser (its weights are not normalised),
which makes the forward a plain accumulation and the backward two passes that recompute the tile:
one over key blocks (``dK``, ``dV``), one over query blocks (``dQ``), without atomics.

Masks follow :meth:`ReLAMultiheadAttention._mask`'s semantics: ``mask`` (bool, True = blocked) and
``bias`` (float, added to the scores; ``-inf`` blocks) broadcast to ``(B, H, T, S)`` through their
strides (nothing is expanded in memory); ``causal`` blocks key ``j > i + S - T`` (bottom-right
aligned, as in incremental decoding) and skips the blocks above the diagonal.  A blocked weight is
exactly 0 (ReLA masks before the ReLU); a fully blocked query gives 0.  Dropout draws Philox numbers
from ``(seed, b·H·T·S + h·T·S + i·S + j)``, so the backward regenerates the forward's mask
(:func:`dropout_keep` returns it for tests).  fp16, bf16 and fp32 inputs; the sums are fp32 (fp32
inputs are multiplied in IEEE fp32, not TF32, as the eager path on CUDA by default).

``bias`` gets no gradient (fairseq's ``attn_mask`` is a constant).  Run on the CPU with
``TRITON_INTERPRET=1`` (set before ``triton`` is imported), as the tests do.
"""
import functools
from dataclasses import dataclass
from typing import Optional, Tuple

import torch
import triton
import triton.language as tl
from torch import Tensor

from fairseq_rela.kernels.tiles import LaunchPlan, Tiles, launch_plan


MAX_GRID_Y = 65535  # CUDA's limit on the second grid axis


@triton.jit
def _weights(q, k, bh, offs_m, offs_n, T, S, H, mask_ptr, smb, smh, smt, sms, bias_ptr, sbb, sbh, sbt, sbs,
             seed, p_drop, HAS_MASK: tl.constexpr, HAS_BIAS: tl.constexpr, CAUSAL: tl.constexpr,
             DROPOUT: tl.constexpr, PRECISION: tl.constexpr):
    """One (BLOCK_M, BLOCK_N) tile: the weights as used (ReLU, blocked = 0, dropped out and rescaled),
    and d(weight)/d(score) (the ReLU's gate times the dropout factor)."""
    z = tl.dot(q, tl.trans(k), input_precision=PRECISION)
    b = bh // H
    h = bh % H
    valid = (offs_m[:, None] < T) & (offs_n[None, :] < S)
    if CAUSAL:
        valid = valid & (offs_n[None, :] <= offs_m[:, None] + (S - T))
    if HAS_MASK:
        blocked = tl.load(mask_ptr + b * smb + h * smh + offs_m[:, None] * smt + offs_n[None, :] * sms,
                          mask=valid, other=0)
        valid = valid & (blocked == 0)
    if HAS_BIAS:
        z += tl.load(bias_ptr + b * sbb + h * sbh + offs_m[:, None] * sbt + offs_n[None, :] * sbs,
                     mask=valid, other=0.0).to(tl.float32)
    gate = valid & (z > 0)
    factor = tl.full(z.shape, 1.0, tl.float32)
    if DROPOUT:
        offsets = (bh.to(tl.int64) * T + offs_m[:, None].to(tl.int64)) * S + offs_n[None, :].to(tl.int64)
        factor = tl.where(tl.rand(seed, offsets) >= p_drop, 1.0 / (1.0 - p_drop), 0.0)
    grad = tl.where(gate, factor, 0.0)
    return tl.where(gate, z, 0.0) * factor, grad


@triton.jit(do_not_specialize=["seed"])  # a new seed per call must not select another compiled variant
def _forward(Q, K, V, O, mask_ptr, bias_ptr, seed, p_drop,
             sqb, sqh, sqt, sqd, skb, skh, sks, skd, svb, svh, svs, svd, sob, soh, sot, sod,
             smb, smh, smt, sms, sbb, sbh, sbt, sbs, T, S, H, D,
             HAS_MASK: tl.constexpr, HAS_BIAS: tl.constexpr, CAUSAL: tl.constexpr, DROPOUT: tl.constexpr,
             PRECISION: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
             BH_AXIS: tl.constexpr):
    start_m = tl.program_id(1 - BH_AXIS) * BLOCK_M
    bh = tl.program_id(BH_AXIS)
    b = bh // H
    h = bh % H
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d[None, :] < D
    q = tl.load(Q + b * sqb + h * sqh + offs_m[:, None] * sqt + offs_d[None, :] * sqd,
                mask=(offs_m[:, None] < T) & d_ok, other=0.0)
    acc = tl.zeros((BLOCK_M, BLOCK_D), dtype=tl.float32)
    end_n = S
    if CAUSAL:
        end_n = tl.minimum(S, start_m + BLOCK_M + S - T)
    for start_n in range(0, end_n, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        kv_ok = (offs_n[:, None] < S) & d_ok
        k = tl.load(K + b * skb + h * skh + offs_n[:, None] * sks + offs_d[None, :] * skd, mask=kv_ok, other=0.0)
        v = tl.load(V + b * svb + h * svh + offs_n[:, None] * svs + offs_d[None, :] * svd, mask=kv_ok, other=0.0)
        p, _ = _weights(q, k, bh, offs_m, offs_n, T, S, H, mask_ptr, smb, smh, smt, sms, bias_ptr, sbb, sbh, sbt,
                        sbs, seed, p_drop, HAS_MASK, HAS_BIAS, CAUSAL, DROPOUT, PRECISION)
        acc += tl.dot(p.to(v.dtype), v, input_precision=PRECISION)
    tl.store(O + b * sob + h * soh + offs_m[:, None] * sot + offs_d[None, :] * sod, acc.to(O.dtype.element_ty),
             mask=(offs_m[:, None] < T) & d_ok)


@triton.jit(do_not_specialize=["seed"])  # a new seed per call must not select another compiled variant
def _backward_kv(Q, K, V, DO, DK, DV, mask_ptr, bias_ptr, seed, p_drop,
                 sqb, sqh, sqt, sqd, skb, skh, sks, skd, svb, svh, svs, svd, sob, soh, sot, sod,
                 smb, smh, smt, sms, sbb, sbh, sbt, sbs, T, S, H, D,
                 HAS_MASK: tl.constexpr, HAS_BIAS: tl.constexpr, CAUSAL: tl.constexpr, DROPOUT: tl.constexpr,
                 PRECISION: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                 BH_AXIS: tl.constexpr):
    """dV = Pᵀ dO, dK = dSᵀ Q for one block of keys, over the query blocks (dK, dV contiguous (B,H,S,D))."""
    start_n = tl.program_id(1 - BH_AXIS) * BLOCK_N
    bh = tl.program_id(BH_AXIS)
    b = bh // H
    h = bh % H
    offs_n = start_n + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d[None, :] < D
    kv_ok = (offs_n[:, None] < S) & d_ok
    k = tl.load(K + b * skb + h * skh + offs_n[:, None] * sks + offs_d[None, :] * skd, mask=kv_ok, other=0.0)
    v = tl.load(V + b * svb + h * svh + offs_n[:, None] * svs + offs_d[None, :] * svd, mask=kv_ok, other=0.0)
    dk = tl.zeros((BLOCK_N, BLOCK_D), dtype=tl.float32)
    dv = tl.zeros((BLOCK_N, BLOCK_D), dtype=tl.float32)
    begin_m = 0
    if CAUSAL:  # queries before start_n - (S - T) see none of these keys
        begin_m = tl.maximum(0, start_n - (S - T)) // BLOCK_M * BLOCK_M
    for start_m in range(begin_m, T, BLOCK_M):
        offs_m = start_m + tl.arange(0, BLOCK_M)
        q_ok = (offs_m[:, None] < T) & d_ok
        q = tl.load(Q + b * sqb + h * sqh + offs_m[:, None] * sqt + offs_d[None, :] * sqd, mask=q_ok, other=0.0)
        do = tl.load(DO + b * sob + h * soh + offs_m[:, None] * sot + offs_d[None, :] * sod, mask=q_ok, other=0.0)
        p, grad = _weights(q, k, bh, offs_m, offs_n, T, S, H, mask_ptr, smb, smh, smt, sms, bias_ptr, sbb, sbh,
                           sbt, sbs, seed, p_drop, HAS_MASK, HAS_BIAS, CAUSAL, DROPOUT, PRECISION)
        dv += tl.dot(tl.trans(p.to(do.dtype)), do, input_precision=PRECISION)
        ds = tl.dot(do, tl.trans(v), input_precision=PRECISION) * grad
        dk += tl.dot(tl.trans(ds.to(q.dtype)), q, input_precision=PRECISION)
    out = (b * H + h).to(tl.int64) * S * D + offs_n[:, None] * D + offs_d[None, :]
    tl.store(DK + out, dk.to(DK.dtype.element_ty), mask=kv_ok)
    tl.store(DV + out, dv.to(DV.dtype.element_ty), mask=kv_ok)


@triton.jit(do_not_specialize=["seed"])  # a new seed per call must not select another compiled variant
def _backward_q(Q, K, V, DO, DQ, mask_ptr, bias_ptr, seed, p_drop,
                sqb, sqh, sqt, sqd, skb, skh, sks, skd, svb, svh, svs, svd, sob, soh, sot, sod,
                smb, smh, smt, sms, sbb, sbh, sbt, sbs, T, S, H, D,
                HAS_MASK: tl.constexpr, HAS_BIAS: tl.constexpr, CAUSAL: tl.constexpr, DROPOUT: tl.constexpr,
                PRECISION: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                BH_AXIS: tl.constexpr):
    """dQ = dS K for one block of queries, over the key blocks (dQ contiguous (B,H,T,D))."""
    start_m = tl.program_id(1 - BH_AXIS) * BLOCK_M
    bh = tl.program_id(BH_AXIS)
    b = bh // H
    h = bh % H
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d[None, :] < D
    q_ok = (offs_m[:, None] < T) & d_ok
    q = tl.load(Q + b * sqb + h * sqh + offs_m[:, None] * sqt + offs_d[None, :] * sqd, mask=q_ok, other=0.0)
    do = tl.load(DO + b * sob + h * soh + offs_m[:, None] * sot + offs_d[None, :] * sod, mask=q_ok, other=0.0)
    dq = tl.zeros((BLOCK_M, BLOCK_D), dtype=tl.float32)
    end_n = S
    if CAUSAL:
        end_n = tl.minimum(S, start_m + BLOCK_M + S - T)
    for start_n in range(0, end_n, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        kv_ok = (offs_n[:, None] < S) & d_ok
        k = tl.load(K + b * skb + h * skh + offs_n[:, None] * sks + offs_d[None, :] * skd, mask=kv_ok, other=0.0)
        v = tl.load(V + b * svb + h * svh + offs_n[:, None] * svs + offs_d[None, :] * svd, mask=kv_ok, other=0.0)
        _, grad = _weights(q, k, bh, offs_m, offs_n, T, S, H, mask_ptr, smb, smh, smt, sms, bias_ptr, sbb, sbh,
                           sbt, sbs, seed, p_drop, HAS_MASK, HAS_BIAS, CAUSAL, DROPOUT, PRECISION)
        ds = tl.dot(do, tl.trans(v), input_precision=PRECISION) * grad
        dq += tl.dot(ds.to(k.dtype), k, input_precision=PRECISION)
    out = (b * H + h).to(tl.int64) * T * D + offs_m[:, None] * D + offs_d[None, :]
    tl.store(DQ + out, dq.to(DQ.dtype.element_ty), mask=q_ok)


@triton.jit(do_not_specialize=["seed"])  # a new seed per call must not select another compiled variant
def _dropout_keep(KEEP, seed, p_drop, T, S, H, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """The dropout factor of every (b, h, i, j) as :func:`_weights` draws it (tests)."""
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.program_id(2) * BLOCK_N + tl.arange(0, BLOCK_N)
    bh = tl.program_id(1)
    offsets = (bh.to(tl.int64) * T + offs_m[:, None].to(tl.int64)) * S + offs_n[None, :].to(tl.int64)
    keep = tl.rand(seed, offsets) >= p_drop
    tl.store(KEEP + offsets, keep.to(tl.int8), mask=(offs_m[:, None] < T) & (offs_n[None, :] < S))


def _grid(heads: int, blocks: int) -> Tuple[int, int]:
    """Blocks on axis 0, (batch, head) on axis 1 (neighbouring programs share keys and values in L2), unless
    there are more (batch, head) pairs than CUDA's second grid axis allows."""
    return (blocks, heads) if heads <= MAX_GRID_Y else (heads, blocks)


def _broadcast_strides(t: Optional[Tensor], shape: Tuple[int, int, int, int]) -> Tuple[int, int, int, int]:
    if t is None:
        return (0, 0, 0, 0)
    return tuple(t.expand(shape).stride()) if t.dim() else (0, 0, 0, 0)


@dataclass(frozen=True)
class KernelCall:
    """One kernel launch as the package makes it: the kernel, its grid, arguments and compile-time options
    (constexprs, ``num_warps``, ``num_stages``).  :meth:`launch` runs it; the ahead-of-time check
    (:mod:`fairseq_rela.kernels.aot`) compiles exactly this call for another GPU."""
    name: str
    kernel: object
    grid: Tuple[int, int]
    args: tuple
    meta: dict

    def launch(self) -> None:
        self.kernel[self.grid](*self.args, **self.meta)


def _meta(q: Tensor, mask, bias, causal: bool, p_drop: float, tiles: Tiles, bd: int, heads: int) -> dict:
    return dict(HAS_MASK=mask is not None, HAS_BIAS=bias is not None, CAUSAL=causal, DROPOUT=p_drop > 0,
                PRECISION="ieee" if q.dtype == torch.float32 else "tf32", BLOCK_M=tiles.block_m,
                BLOCK_N=tiles.block_n, BLOCK_D=bd, BH_AXIS=int(heads <= MAX_GRID_Y), num_warps=tiles.num_warps,
                num_stages=tiles.num_stages)


def _prepare(q: Tensor, k: Tensor, mask: Optional[Tensor], bias: Optional[Tensor]):
    """Masks as the kernels read them: broadcast views of ``(B,H,T,S)`` (bool as int8), nothing copied."""
    B, H, T, _ = q.shape
    shape = (B, H, T, k.size(2))
    if mask is not None:
        mask = mask.expand(shape)  # a view: the strides carry the broadcast
        mask = mask.view(torch.int8) if mask.dtype == torch.bool else mask
    if bias is not None:
        bias = bias.expand(shape)
    return mask, bias


def forward_call(q, k, v, out, mask, bias, causal: bool, p_drop: float, seed: int, plan: LaunchPlan) -> KernelCall:
    """The forward launch writing ``out`` (masks as :func:`_prepare` gives them)."""
    B, H, T, D = q.shape
    S = k.size(2)
    shape = (B, H, T, S)
    tiles = plan.forward
    args = (q, k, v, out, mask if mask is not None else q, bias if bias is not None else q, seed, p_drop,
            *q.stride(), *k.stride(), *v.stride(), *out.stride(), *_broadcast_strides(mask, shape),
            *_broadcast_strides(bias, shape), T, S, H, D)
    return KernelCall("forward", _forward, _grid(B * H, triton.cdiv(T, tiles.block_m)), args,
                      _meta(q, mask, bias, causal, p_drop, tiles, plan.block_d, B * H))


def backward_calls(q, k, v, grad_out, dq, dk, dv, mask, bias, causal: bool, p_drop: float, seed: int,
                   plan: LaunchPlan) -> Tuple[KernelCall, KernelCall]:
    """The two backward launches: ``dK, dV`` over key blocks, then ``dQ`` over query blocks."""
    B, H, T, D = q.shape
    S = k.size(2)
    shape = (B, H, T, S)
    common = (mask if mask is not None else q, bias if bias is not None else q, seed, p_drop,
              *q.stride(), *k.stride(), *v.stride(), *grad_out.stride(), *_broadcast_strides(mask, shape),
              *_broadcast_strides(bias, shape), T, S, H, D)
    kv, qt = plan.backward_kv, plan.backward_q
    return (KernelCall("backward_kv", _backward_kv, _grid(B * H, triton.cdiv(S, kv.block_n)),
                       (q, k, v, grad_out, dk, dv, *common), _meta(q, mask, bias, causal, p_drop, kv, plan.block_d, B * H)),
            KernelCall("backward_q", _backward_q, _grid(B * H, triton.cdiv(T, qt.block_m)),
                       (q, k, v, grad_out, dq, *common), _meta(q, mask, bias, causal, p_drop, qt, plan.block_d, B * H)))


@functools.lru_cache(maxsize=None)
def _device_limits(index: int) -> Tuple[int, int]:
    """(compute capability, shared memory per block) of CUDA device ``index``, from the driver."""
    major, minor = torch.cuda.get_device_capability(index)
    shared = triton.runtime.driver.active.utils.get_device_properties(index)["max_shared_mem"]
    return 10 * major + minor, int(shared)


def device_plan(device: torch.device, dtype: torch.dtype, head_dim: int) -> LaunchPlan:
    """The launch plan on ``device``: its compute capability and its own shared-memory limit (CUDA), or the
    default (Triton's CPU interpreter, where shared memory does not bind)."""
    if device.type != "cuda":
        return launch_plan(None, dtype, head_dim)
    index = device.index if device.index is not None else torch.cuda.current_device()
    capability, shared = _device_limits(index)
    return launch_plan(capability, dtype, head_dim, shared_limit=shared)


class _ReLAAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, mask, bias, causal, p_drop, seed, plan):
        mask, bias = _prepare(q, k, mask, bias)
        out = torch.empty(q.shape, device=q.device, dtype=q.dtype)
        forward_call(q, k, v, out, mask, bias, causal, p_drop, seed, plan).launch()
        ctx.save_for_backward(q, k, v, mask, bias)
        ctx.setup = (causal, p_drop, seed, plan)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, mask, bias = ctx.saved_tensors
        causal, p_drop, seed, plan = ctx.setup
        grad_out = grad_out.contiguous() if grad_out.stride(-1) != 1 else grad_out
        dq = torch.empty(q.shape, device=q.device, dtype=q.dtype)  # contiguous (B,H,T,D), as the kernels write
        dk = torch.empty(k.shape, device=k.device, dtype=k.dtype)
        dv = torch.empty(v.shape, device=v.device, dtype=v.dtype)
        for call in backward_calls(q, k, v, grad_out, dq, dk, dv, mask, bias, causal, p_drop, seed, plan):
            call.launch()
        return dq, dk, dv, None, None, None, None, None, None


def rela_attention(q: Tensor, k: Tensor, v: Tensor, mask: Optional[Tensor] = None, bias: Optional[Tensor] = None,
                   *, causal: bool = False, dropout_p: float = 0.0, seed: Optional[int] = None,
                   plan: Optional[LaunchPlan] = None) -> Tensor:
    """``Σ_j dropout(ReLU(q_i·k_j + bias_ij), blocked = 0) v_j`` for ``q (B,H,T,D)``, ``k, v (B,H,S,D)``
    (scores unscaled: scale ``q`` first), on CUDA tensors or under ``TRITON_INTERPRET=1``.

    ``mask``: bool broadcastable to ``(B,H,T,S)``, True = blocked; ``bias``: float broadcastable to it
    (``-inf`` blocks); ``causal``: key ``j`` visible to query ``i`` iff ``j <= i + S - T``.  Dropout
    ``dropout_p`` with Philox ``seed`` (default: drawn from torch's CPU generator, so
    ``torch.manual_seed`` makes it reproducible).  ``plan``: the launch configuration (default
    :func:`device_plan`: the one that fits ``q``'s GPU; tests and benchmarks pass their own).
    """
    if not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"dropout_p must be in [0, 1), got {dropout_p}")
    if dropout_p > 0 and seed is None:
        seed = int(torch.randint(2 ** 31 - 1, ()).item())  # CPU generator: no device synchronisation
    if mask is not None and mask.dtype != torch.bool:
        raise TypeError(f"mask must be bool (True = blocked), got {mask.dtype}")
    k, v = k.to(q.dtype), v.to(q.dtype)  # one dtype for tl.dot (a no-op unless autocast mixed them)
    plan = plan or device_plan(q.device, q.dtype, q.size(-1))
    return _ReLAAttention.apply(q, k, v, mask, bias, bool(causal), float(dropout_p), int(seed or 0), plan)


def dropout_keep_call(keep: Tensor, seed: int, dropout_p: float, heads: int) -> KernelCall:
    """The launch of :func:`_dropout_keep` filling ``keep`` (int8, ``(B,H,T,S)`` contiguous)."""
    B, H, T, S = keep.shape
    return KernelCall("dropout_keep", _dropout_keep, (triton.cdiv(T, 16), B * H, triton.cdiv(S, 16)),
                      (keep, seed, float(dropout_p), T, S, heads), dict(BLOCK_M=16, BLOCK_N=16))


def dropout_keep(shape: Tuple[int, int, int, int], dropout_p: float, seed: int, device) -> Tensor:
    """The bool keep-mask ``(B,H,T,S)`` that :func:`rela_attention` applies for ``seed`` (tests, debugging)."""
    keep = torch.empty(shape, dtype=torch.int8, device=device)
    dropout_keep_call(keep, seed, dropout_p, shape[1]).launch()
    return keep.bool()
