"""Recording what every attention did: weights α and the norm decomposition of its output.

Kobayashi et al. (2020, eq. 5): ``y_i = Σ_j Σ_h α^h_ij f_h(x_j) + b_O`` with
``f_h(x) = (x W_V^h + b_V^h) W_O^h``.  With a head-output normaliser (ReLA) the output is
``y_i = W_O N(z_i) + b_O`` and ``N`` is affine for a fixed query, ``N(z) = s_i ⊙ C(z) + c``
(``C``: identity or centring), so it folds into ``f`` for that query:

    f^h_i(x_j) = W_O s_i ⊙ C(P_h v^h_j),      y_i = Σ_j Σ_h α^h_ij f^h_i(x_j) + (b_O + W_O c)

(``P_h`` puts head h's value into its slice).  The decomposition is exact for every activation
and normaliser; :func:`decompose` computes it; with ``block=True`` the recorder carries it on
through the residual connection and LayerNorm that follow (:mod:`fairseq_rela.block`, Kobayashi et
al. 2021); :class:`AttentionRecorder` collects it as
:class:`AttentionRecord` s (a batch), and :func:`split_sentences` cuts those into one
:class:`SentenceAttention` per sentence pair.  :meth:`AttentionRecord.matrix` is the one place that
turns a record into an alignment matrix (weights, norms, block contributions, their ALTI shares or value
zeroing, :mod:`fairseq_rela.value_zeroing`, recorded with ``value_zeroing=True``), for
``fairseq-generate`` and for the analysis sweep alike; :meth:`SentenceAttention.matrix` adds the
rolled-out sources (:data:`ROLLED_OUT_SOURCES`, ALTI+'s source columns: they need every layer of a
sentence, so they are the analysis's, not ``fairseq-generate``'s, which reports one layer).
"""
import math
import re
from dataclasses import dataclass, field, fields
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor, nn

from fairseq_rela.attention import ATTENTION_KINDS, ReLAMultiheadAttention
from fairseq_rela.block import BlockParts, decompose_block
from fairseq_rela.contributions import ROLLOUT_SOURCES, Contributions, sentence_contributions
from fairseq_rela.errors import OptionError, check_choice
from fairseq_rela.value_zeroing import normalise_rows, zeroed_distances

Array = Union[Tensor, np.ndarray]
ALIGNMENT_SOURCES = ("weights", "norms", "block", "alti", "value-zeroing")  # one layer's cross-attention record
BLOCK_SOURCES = ("block", "alti")  # from the block decomposition
# the residual and LayerNorm act on the heads' sum (value zeroing: every head's v_j zeroed): no head selection
ALL_HEADS_SOURCES = BLOCK_SOURCES + ("value-zeroing",)
#: rolled out through every layer below (``rollout-alti`` is ALTI+): :meth:`SentenceAttention.matrix`
ROLLED_OUT_SOURCES = tuple(f"rollout-{s}" for s in ROLLOUT_SOURCES)


@dataclass(frozen=True)
class AlignmentSource:
    """Which matrix a decoder reports as the attention of a hypothesis (``fairseq-generate
    --print-alignment``): ``source`` of cross-attention ``layer`` (negative: from the top) over
    ``heads`` (None: all), as :meth:`AttentionRecord.matrix` computes it."""

    source: str = "weights"
    layer: int = -1
    heads: Optional[Tuple[int, ...]] = None

    def __post_init__(self):
        if self.source in ROLLED_OUT_SOURCES:
            raise OptionError(f"--alignment-source {self.source}: a rolled-out source needs every layer of the "
                              "sentence, and a decoder reports one layer; fairseq-rela-analyze --write-links "
                              "writes its links")
        check_choice("--alignment-source", self.source, ALIGNMENT_SOURCES)
        if self.source in ALL_HEADS_SOURCES and self.heads is not None:
            raise OptionError(f"--alignment-heads: --alignment-source {self.source} covers all heads (the residual "
                              "and LayerNorm act on their sum); leave --alignment-heads out")

    @property
    def needs_norms(self) -> bool:
        """Whether the recorder must decompose the attention's output (``norms``)."""
        return self.source == "norms"

    @property
    def needs_block(self) -> bool:
        """Whether the recorder must decompose the attention block (``block``, ``alti``)."""
        return self.source in BLOCK_SOURCES

    @property
    def needs_value_zeroing(self) -> bool:
        """Whether the recorder must rerun the layer with each value zeroed (``value-zeroing``)."""
        return self.source == "value-zeroing"

    def resolve(self, n_layers: int, n_heads: int) -> "AlignmentSource":
        """The same source with a 0-based layer, checked against a decoder's size."""
        if not -n_layers <= self.layer < n_layers:
            raise OptionError(f"--alignment-layer {self.layer}: the decoder has layers 0..{n_layers - 1}")
        if self.heads is not None and not all(0 <= h < n_heads for h in self.heads):
            raise OptionError(f"--alignment-heads {','.join(map(str, self.heads))}: heads are 0..{n_heads - 1}")
        return AlignmentSource(self.source, self.layer % n_layers, self.heads)


@dataclass
class AttentionRecord:
    """What one attention did in one forward call.

    As the recorder makes it: torch tensors with a leading batch axis (shapes below).  In a
    :class:`SentenceAttention`: numpy arrays of one sentence, padding removed, without the batch axis.
    """

    kind: str  # encoder_self | decoder_self | cross
    layer: int
    weights: Array  # (B, H, T, S) α
    key_padding_mask: Optional[Array] = None  # (B, S), True at padding
    fx_norm: Optional[Array] = None  # (B, H, T|1, S) ‖f_h(x_j)‖ (depends on the query with a normaliser)
    weighted_norm: Optional[Array] = None  # (B, H, T, S) ‖α^h_ij f_h(x_j)‖
    summed_norm: Optional[Array] = None  # (B, T, S) ‖Σ_h α^h_ij f_h(x_j)‖ over the heads `summed_heads`
    summed_heads: Optional[Tuple[int, ...]] = None  # None: all heads
    vectors: Optional[Array] = None  # (B, T, S, E) Σ_h α^h_ij f_h(x_j), only with keep_vectors
    bias: Optional[Array] = None  # (E,) b_O + W_O c: Σ_j vectors_ij + bias == output_i
    # the attention block (attention + residual + LayerNorm), recorded with block=True (fairseq_rela.block)
    block_norm: Optional[Array] = None  # (B, T, S) ‖F_i(c_ij)‖, key j's share of the block's output i
    block_residual_norm: Optional[Array] = None  # (B, T) cross-attention: the residual's ‖F_i(x_i)‖
    mixing_ratio: Optional[Array] = None  # (B, T, 3) at block.MIXING_LEVELS (attention, residual, block)
    block_vectors: Optional[Array] = None  # (B, T, S, E) F_i(c_ij), with keep_vectors
    block_residual: Optional[Array] = None  # (B, T, E) F_i(x_i) (cross-attention), with keep_vectors
    block_bias: Optional[Array] = None  # (B, T, E): Σ_j block_vectors + block_residual + block_bias == block output
    alti: Optional[Array] = None  # (B, T, S) ALTI share of key j in block output i (fairseq_rela.contributions)
    alti_residual: Optional[Array] = None  # (B, T) cross-attention: the residual's (decoder state's) ALTI share
    # value zeroing (fairseq_rela.value_zeroing), recorded with value_zeroing=True
    value_zeroing_distance: Optional[Array] = None  # (B, T, S) d_ij = 1 - cos(layer output i, same with v_j zeroed)
    value_zeroing: Optional[Array] = None  # (B, T, S) d_ij / Σ_k d_ik (a row of zeros stays zeros)

    @property
    def has_norms(self) -> bool:
        return self.summed_norm is not None

    @property
    def has_block(self) -> bool:
        return self.block_norm is not None

    def matrix(self, source: str = "weights", heads: Optional[Sequence[int]] = None) -> Array:
        """The (…, T, S) alignment matrix of ``source`` over ``heads`` (None: all).

        ``weights``: ``mean_h α^h`` over the heads; ``norms``: ``‖Σ_h α^h f_h(x_j)‖`` over the heads
        (Kobayashi et al.'s norm of the summed vectors; one head: ``‖α^h f_h(x_j)‖``); ``block``: the
        norm of key j's contribution to the block's output, after the residual and LayerNorm (all heads);
        ``alti``: key j's ALTI share of the block's output (all heads; in cross-attention the rest of the
        row, ``alti_residual``, is the decoder state's); ``value-zeroing``: the cosine distance of the layer's
        output i to the same with key j's value zeroed in this attention, rows normalised (all heads).
        """
        check_choice("--alignment-source", source, ALIGNMENT_SOURCES)
        heads = None if heads is None else tuple(heads)
        if source in ALL_HEADS_SOURCES:
            value = {"block": self.block_norm, "alti": self.alti, "value-zeroing": self.value_zeroing}[source]
            if value is None:
                raise OptionError(f"--alignment-source {source}: the attention was recorded without " +
                                  ("value zeroing" if source == "value-zeroing" else "its block"))
            if heads is not None:
                raise OptionError(f"--alignment-source {source} covers all heads (the residual and LayerNorm act "
                                  "on their sum)")
            return value
        if source == "weights":
            w = self.weights if heads is None else self.weights[..., list(heads), :, :]
            return w.mean(-3)
        if self.summed_norm is None:
            raise OptionError("--alignment-source norms: the attention was recorded without norms")
        if heads == self.summed_heads:
            return self.summed_norm
        if heads is not None and len(heads) == 1 and self.weighted_norm is not None:
            return self.weighted_norm[..., heads[0], :, :]
        raise OptionError(f"--alignment-source norms: heads {heads} were not recorded "
                          f"(the recorder summed heads {self.summed_heads or 'all'})")

    def zero_counts(self) -> Tuple[np.ndarray, int, np.ndarray, int]:
        """Of one sentence's record: per head the exact zeros among attendable positions, the number
        of attendable positions per head, per head the rows without any positive weight, and the rows
        (decoder self-attention may attend to positions up to its own)."""
        w = np.asarray(self.weights)
        _, T, S = w.shape
        valid = np.tril(np.ones((T, S), bool)) if self.kind == "decoder_self" else np.ones((T, S), bool)
        zeros = ((w == 0) & valid).sum((1, 2))
        null_rows = ((w * valid) == 0).all(-1).sum(-1)
        return zeros, int(valid.sum()), null_rows, T


def _head_maps(module: ReLAMultiheadAttention) -> Tensor:
    """W_O^h as (H, d, E_out): head h's slice of the output projection."""
    w = module.out_proj.weight  # (E_out, E_in)
    return w.t().reshape(module.num_heads, module.head_dim, w.size(0))


_CHUNK_FLOATS = 1 << 24  # bound on one (B, queries, S, E) block in the query-dependent path


class Scratch:
    """Float32 buffers reused for the block path's (B, T, S, E) vectors (one per name, grown to the largest
    chunk, at most a few times ``_CHUNK_FLOATS``): a fresh tensor that size costs more (its pages are mapped
    anew) than a pass over it.  What :func:`decompose` writes there is overwritten by its next call."""

    def __init__(self):
        self.buffers: Dict[str, Tensor] = {}

    def get(self, name: str, shape: Tuple[int, ...], like: Tensor) -> Tensor:
        numel = math.prod(shape)
        buf = self.buffers.get(name)
        if buf is None or buf.numel() < numel or buf.device != like.device:
            buf = self.buffers[name] = torch.empty(numel, dtype=torch.float32, device=like.device)
        return buf[:numel].view(shape)

    def clear(self) -> None:
        self.buffers.clear()


@torch.no_grad()
def decompose(
    module: ReLAMultiheadAttention, weights: Tensor, values: Tensor, head_outputs: Tensor, keep_vectors: bool = False,
    heads: Optional[List[int]] = None, factors: Optional[Dict[int, "OutputFactors"]] = None,
    scratch: Optional[Scratch] = None,
) -> Tuple[Tensor, Tensor, Tensor, Optional[Tensor], Tensor]:
    """Norms of the decomposition ``y_i = Σ_j Σ_h α^h_ij f^h_i(x_j) + bias``.

    Args: weights (B,H,T,S); values (B',H,S,d) with B' dividing B (beam-shared keys);
    head_outputs z (T,B,E), the normaliser's input.  ``heads`` restricts the summed vector
    ``Σ_h α f`` (and ``summed_norm``) to those heads; the per-head norms cover all heads.  ``factors``:
    where the caller keeps :class:`OutputFactors` between calls (by ``id(module)``; used only while W_O is
    bit for bit the same).  ``scratch``: the vectors are written to its buffers (valid until the next call).
    Returns ``(fx_norm, weighted_norm, summed_norm, vectors or None, bias)``.

    Without a per-query vector in the normaliser (no normaliser, RMSNorm, LayerNorm) ``f_h(x_j)`` is
    shared by all queries up to the scalar ``r_i``, and the norms follow from the Gram matrix
    ``f_h(x_j) · f_g(x_j)``: nothing of size ``T x S x E`` is built.  Gated RMSNorm: :func:`_query_dependent`.
    """
    B, H, T, S = weights.shape
    weights = weights.float()
    v = values.float()
    if v.size(0) != B:
        v = v.repeat_interleave(B // v.size(0), dim=0)
    w_heads = _head_maps(module).float()  # (H, d, E)
    out_w = module.out_proj.weight.float()
    lin = module.head_norm.linearize(head_outputs)
    bias = module.out_proj.bias.float() if module.out_proj.bias is not None else out_w.new_zeros(out_w.size(0))
    if lin.shift is not None:
        bias = bias + out_w @ lin.shift
    r = None if lin.row_scale is None else lin.row_scale[..., 0].t()  # (B, T)
    sel = weights if heads is None else weights[:, heads]
    if lin.query_vector is None:
        f = torch.einsum("bhsd,hde->bhse", v if lin.gain is None else v * lin.gain.view(H, 1, -1), w_heads)
        if lin.centre:  # C(P_h v) = P_h v - mean(P_h v) 1: f_h(x_j) - (Σ_a v^h_ja / E) W_O g
            g = lin.gain if lin.gain is not None else out_w.new_ones(out_w.size(1))
            f = f - (v.sum(-1) / module.embed_dim)[..., None] * (out_w @ g)
        gram = torch.einsum("bhse,bgse->bshg", f, f)
        fx_norm = gram.diagonal(dim1=2, dim2=3).clamp_min(0).sqrt().transpose(1, 2).unsqueeze(2)  # (B,H,1,S)
        g_sel = gram if heads is None else gram[:, :, heads][:, :, :, heads]
        summed = torch.einsum("bhts,bgts,bshg->bts", sel, sel, g_sel).clamp_min(0).sqrt()
        vectors = None
        if keep_vectors:  # Σ_h α^h_ij f_h(x_j): one GEMM per (b, j) over the heads, stored (B, S, T, E)
            out = None if scratch is None else scratch.get("vectors", (B, S, T, f.size(-1)), f)
            vectors = torch.matmul(sel.permute(0, 3, 2, 1), (f if heads is None else f[:, heads]).transpose(1, 2),
                                   out=out).transpose(1, 2)
        if r is not None:
            fx_norm = fx_norm * r[:, None, :, None]
            summed = summed * r[:, :, None]
            if vectors is not None:
                vectors.mul_(r[:, :, None, None])
    else:
        cached = None if factors is None else factors.get(id(module))
        if cached is None or not cached.fits(out_w, heads):
            cached = OutputFactors.of(out_w, H, heads)
            if factors is not None:
                factors[id(module)] = cached
        fx_norm, summed, vectors = _query_dependent(sel, v, out_w, lin, r, keep_vectors, heads, cached, scratch)
    return fx_norm, weights.abs() * fx_norm, summed, vectors, bias


@dataclass(eq=False)
class OutputFactors:
    """Triangular factors of an attention's output projection W_O (E_out × E) for the norms of
    :func:`_query_dependent`: ``‖W x‖ = ‖R x‖`` where ``W = Q R`` (QR: Q has orthonormal columns, R upper
    triangular), computed in float64, kept in float32."""

    weight: Tensor  # the W_O they were computed from (a copy: they are reused only for this W_O, bit for bit)
    heads: Optional[Tuple[int, ...]]  # the heads of `summed` (None: all)
    per_head: Tensor  # (H, d, d): R_h of W^h, head h's columns of W_O
    _summed: Optional[Tensor] = None  # R of W_heads, the columns of `heads`: made when first needed

    @staticmethod
    def of(out_w: Tensor, num_heads: int, heads: Optional[Sequence[int]]) -> "OutputFactors":
        E_out, E = out_w.shape
        w_cols = out_w.double().view(E_out, num_heads, E // num_heads).transpose(0, 1)  # (H, E_out, d)
        return OutputFactors(out_w.detach().clone(), None if heads is None else tuple(heads),
                             torch.linalg.qr(w_cols, mode="r")[1].float())

    @property
    def summed(self) -> Tensor:
        """(k, k) with k = |heads|·d: R of the columns of W_O that belong to ``heads``."""
        if self._summed is None:
            E_out, E = self.weight.shape
            H = self.per_head.size(0)
            cols = self.weight.double().view(E_out, H, E // H)
            cols = cols if self.heads is None else cols[:, list(self.heads)]
            self._summed = torch.linalg.qr(cols.reshape(E_out, -1), mode="r")[1].float()
        return self._summed

    def fits(self, out_w: Tensor, heads: Optional[Sequence[int]]) -> bool:
        return (self.heads == (None if heads is None else tuple(heads)) and self.weight.dtype == out_w.dtype
                and self.weight.shape == out_w.shape and torch.equal(self.weight, out_w))


_TRIANGLE_BLOCK = 128  # rows of R per GEMM in the triangular norm: smaller blocks skip more zeros, run slower
# pairs per column of W_heads from which the triangular norm pays (it saves about a quarter of the GEMM's time;
# its QR, once per W_O, costs about as much as 10 pairs per column)
_TRIANGLE_MIN_PAIRS = 16


def _triangular_norm(m: Tensor, r: Tensor) -> Tensor:
    """``‖R m_n‖`` for each row m_n of m (N, k), R (k', k) upper triangular: block row a of R is zero left of
    column a, so each block of rows is one GEMM over the columns from there on (about (k/2)·k per row)."""
    total = None
    for a in range(0, r.size(0), _TRIANGLE_BLOCK):
        part = (m[:, a:] @ r[a:a + _TRIANGLE_BLOCK, a:].t()).square_().sum(-1)
        total = part if total is None else total.add_(part)
    return total.sqrt_()


def _query_dependent(sel, v, out_w, lin, r, keep_vectors, heads, factors: OutputFactors,
                     scratch: Optional[Scratch] = None):
    """Gated RMSNorm: ``f^h_i(x_j) = W^h (s^h_i ⊙ v^h_j)``, ``s_i = r_i g ⊙ q_i``, ``W^h`` head h's
    columns of W_O, for every query i: nothing is shared between queries, so the summed vectors cost
    O(T·S·E²) multiply-adds; done in the cheapest exact order we know, in query chunks (``factors``:
    :class:`OutputFactors` of W_O):

    * per head ``‖f^h_i(x_j)‖ = ‖R_h (s^h_i ⊙ v^h_j)‖`` (R_h d×d): one GEMM per head, O(T·S·E·d), and the
      norm of a d-vector (no cancellation);
    * the summed vector ``Σ_{h∈heads} α^h_ij f^h_i(x_j) = W_heads (s_i ⊙ c_ij)``, ``c_ij = concat_h α^h_ij
      v^h_j``: one GEMM (pairs × k)·(k × E_out); its norm alone (no ``keep_vectors``) as ``‖R (s_i ⊙ c_ij)‖``,
      R triangular (about half the multiply-adds); only over the pairs (i, j) some head of ``heads``
      attends: every other pair's vector is exactly 0 (causal mask, padding, ReLA's zeros).
    """
    B, H, S, d = v.shape
    T, E, E_out = sel.size(2), H * d, out_w.size(0)
    s = lin.query_vector.transpose(0, 1)  # (B,T,E)
    if lin.gain is not None:
        s = s * lin.gain
    if r is not None:
        s = s * r[:, :, None]
    hs = list(range(H)) if heads is None else list(heads)
    w_sel = out_w.view(E_out, H, d)[:, hs].reshape(E_out, len(hs) * d)  # W_heads: (E_out, k)
    v_keys = v.transpose(1, 2).reshape(B, 1, S, H, d)  # (B, 1, S, H, d): concat_h v^h_j
    fx_norm, summed = v.new_empty(B, H, T, S), v.new_zeros(B, T, S)
    vectors = None
    if keep_vectors:
        vectors = v.new_zeros(B, T, S, E_out) if scratch is None else scratch.get("vectors", (B, T, S, E_out), v)
    attends = sel.ne(0).any(1)  # (B,T,S): some selected head attends i -> j
    if not bool(torch.isfinite(v).all()):  # 0 · inf is NaN: compute every pair, as the forward does
        attends = torch.ones_like(attends)
    triangular = not keep_vectors and B * T * S >= _TRIANGLE_MIN_PAIRS * len(hs) * d
    chunk = max(1, _CHUNK_FLOATS // max(1, B * S * max(E, E_out)))
    for t0 in range(0, T, chunk):
        t1 = min(T, t0 + chunk)
        n = B * (t1 - t0) * S
        u = torch.mul(s[:, t0:t1].reshape(B, t1 - t0, 1, H, d), v_keys,
                      out=v.new_empty(B, t1 - t0, S, H, d) if scratch is None
                      else scratch.get("u", (B, t1 - t0, S, H, d), v)).view(n, H, d)  # s^h_i ⊙ v^h_j
        per_head = torch.stack([(u[:, h] @ factors.per_head[h].t()).norm(dim=-1) for h in range(H)])  # (H, n)
        fx_norm[:, :, t0:t1] = per_head.view(H, B, t1 - t0, S).transpose(0, 1)
        alpha = sel[:, :, t0:t1].permute(0, 2, 3, 1).reshape(n, len(hs), 1)  # (pairs, |heads|, 1)
        pairs = attends[:, t0:t1].reshape(n)
        rows = None if bool(pairs.all()) else pairs.nonzero().squeeze(1)
        if rows is not None and rows.numel() > 0.8 * n:  # gathering them would cost more than it saves
            rows = None
        if rows is None:
            m = u.mul_(alpha) if heads is None else u[:, hs] * alpha
        else:
            m = u[rows].mul_(alpha[rows]) if heads is None else u[rows][:, hs].mul_(alpha[rows])
        m = m.view(m.size(0), -1)  # s_i ⊙ c_ij, (pairs, k)
        target = None if vectors is None else vectors[:, t0:t1]
        direct = target is not None and rows is None and target.is_contiguous()  # the GEMM writes the vectors
        vec = None if triangular else torch.matmul(m, w_sel.t(), out=target.view(n, E_out) if direct else None)
        norm = _triangular_norm(m, factors.summed) if triangular else vec.norm(dim=-1)  # Σ_h α^h_ij f^h_i(x_j)
        if rows is None:
            summed[:, t0:t1] = norm.view(B, t1 - t0, S)
            if target is not None and not direct:
                target.copy_(vec.view(B, t1 - t0, S, E_out))
        else:  # every other pair is 0
            summed[:, t0:t1] = summed.new_zeros(n).index_copy_(0, rows, norm).view(B, t1 - t0, S)
            if target is not None and target.is_contiguous():
                target.zero_().view(n, E_out).index_copy_(0, rows, vec)
            elif target is not None:
                target.copy_(vec.new_zeros(n, E_out).index_copy_(0, rows, vec).view(B, t1 - t0, S, E_out))
    return fx_norm, summed, vectors


_LAYER = re.compile(r"layers\.(\d+)\.")


class AttentionRecorder:
    """Context manager recording every :class:`ReLAMultiheadAttention` of ``model`` while active.

    ``records[(kind, layer)]`` is a list with one :class:`AttentionRecord` per forward call.
    With ``norms=False`` only weights are kept (cheap: for training-time statistics).
    Outside the context nothing is recorded and the attention does no extra work.
    With ``block=True`` (implies norms) each record also holds the decomposition of its attention
    block (:mod:`fairseq_rela.block`) and its ALTI shares (:mod:`fairseq_rela.contributions`): exact in
    eval mode; the layers must be :class:`~fairseq_rela.block.ResidualTap` s.
    With ``value_zeroing=True`` each record also holds value zeroing (:mod:`fairseq_rela.value_zeroing`): after
    each layer's forward call, the layer is rerun on copies of its batch with one key's value zeroed in each
    (the reruns are not recorded); eval mode; the layers must be
    :class:`~fairseq_rela.value_zeroing.ZeroingLayer` s.
    """

    def __init__(self, model: nn.Module, kinds: Iterable[str] = ATTENTION_KINDS, norms: bool = True,
                 keep_vectors: bool = False, layers: Optional[Iterable[int]] = None,
                 heads: Optional[Sequence[int]] = None, block: bool = False, value_zeroing: bool = False):
        self.kinds = tuple(kinds)
        self.heads = heads
        self.norms, self.keep_vectors, self.block = norms or block, keep_vectors, block
        self.value_zeroing = value_zeroing
        self.zeroing_layers: Dict[int, nn.Module] = {}  # id(attention) -> its layer (value zeroing only)
        self._zeroing: Dict[int, list] = {}  # id(layer) -> [(record, attention)] awaiting the layer's output
        self._hooks: list = []
        self._rerunning = False
        if block and heads is not None:
            raise OptionError("AttentionRecorder: the block decomposition covers all heads (heads=None)")
        self.layers = None if layers is None else set(layers)
        self.records: Dict[Tuple[str, int], List[AttentionRecord]] = {}
        self.modules: List[Tuple[ReLAMultiheadAttention, int]] = []
        self.parents: Dict[int, nn.Module] = {}  # id(attention) -> its layer (block only)
        self._pending: Dict[int, tuple] = {}  # id(layer) -> (record, what decompose needs) awaiting its residual
        self._factors: Dict[int, OutputFactors] = {}  # id(attention) -> factors of its W_O (decompose, ReLA-g)
        self._scratch = Scratch()  # the block path's (B, T, S, E) buffers while active (without keep_vectors)
        for name, module in model.named_modules():
            if isinstance(module, ReLAMultiheadAttention) and module.kind in self.kinds:
                match = _LAYER.search(name + ".")
                layer = int(match.group(1)) if match else 0
                if self.layers is None or layer in self.layers:
                    self.modules.append((module, layer))
                    if block:
                        self.parents[id(module)] = _block_layer(model, name, module.kind.value)
                    if value_zeroing:
                        self.zeroing_layers[id(module)] = _zeroing_layer(model, name)
        if not self.modules:
            raise ValueError("AttentionRecorder: the model has no ReLAMultiheadAttention to record "
                             "(is it a rela_transformer?)")

    def __enter__(self) -> "AttentionRecorder":
        for module, layer in self.modules:
            module.recorder = self._recorder_for(layer)
        for parent in self.parents.values():
            parent.residual_observer = self._observe_residual
        for layer in {id(l): l for l in self.zeroing_layers.values()}.values():
            self._hooks.append(layer.register_forward_hook(self._zero_values, with_kwargs=True))
        return self

    def __exit__(self, *exc) -> None:
        for module, _ in self.modules:
            module.recorder = None
        for parent in self.parents.values():
            parent.residual_observer = None
        for hook in self._hooks:
            hook.remove()
        self._hooks.clear()
        self._pending.clear()
        self._zeroing.clear()
        self._scratch.clear()

    def clear(self) -> None:
        self.records.clear()

    def _recorder_for(self, layer: int):
        def record(module, weights, values, head_outputs, output, key_padding_mask):
            if self._rerunning:  # value zeroing's reruns of a layer are not records
                return
            rec = AttentionRecord(module.kind.value, layer, weights.detach().float(),
                                  None if key_padding_mask is None else key_padding_mask.detach().bool(),
                                  summed_heads=None if self.heads is None else tuple(self.heads))
            if rec.key_padding_mask is not None and rec.key_padding_mask.size(0) != weights.size(0):
                rec.key_padding_mask = rec.key_padding_mask.repeat_interleave(
                    weights.size(0) // rec.key_padding_mask.size(0), dim=0)
            if self.block:  # decomposed with its residual, in batch chunks (_observe_residual)
                parent = self.parents[id(module)]
                if parent.training and parent.dropout_module.p > 0:
                    raise RuntimeError("AttentionRecorder(block=True): dropout makes the block decomposition "
                                       "inexact; call model.eval() first")
                self._pending[id(parent)] = (rec, module, weights.detach(), values.detach(), head_outputs.detach())
            elif self.norms:
                rec.fx_norm, rec.weighted_norm, rec.summed_norm, rec.vectors, rec.bias = decompose(
                    module, weights.detach(), values.detach(), head_outputs.detach(), self.keep_vectors,
                    None if self.heads is None else list(self.heads), self._factors)
            if self.value_zeroing:  # after the layer's call (_zero_values)
                zeroing_layer = self.zeroing_layers[id(module)]
                if zeroing_layer.training and zeroing_layer.dropout_module.p > 0:
                    raise RuntimeError("AttentionRecorder(value_zeroing=True): dropout makes the reruns differ from "
                                       "the pass; call model.eval() first")
                self._zeroing.setdefault(id(zeroing_layer), []).append((rec, module))
            self.records.setdefault((rec.kind, layer), []).append(rec)

        return record

    def _zero_values(self, layer: nn.Module, args: tuple, kwargs: dict, output) -> None:
        """A layer's forward call ended: value zeroing of each attention it recorded (a batched rerun of the
        layer per chunk of keys, :func:`~fairseq_rela.value_zeroing.zeroed_distances`)."""
        pending = self._zeroing.pop(id(layer), None)
        if self._rerunning or not pending:
            return
        x = output[0] if isinstance(output, (tuple, list)) else output
        self._rerunning = True
        try:
            for rec, module in pending:
                d = zeroed_distances(layer, module, args, kwargs, x.detach(), rec.weights.size(-1))
                d = d * rec.weights.ne(0).any(1)  # no head attends i -> j: zeroing v_j changes nothing, exactly
                rec.value_zeroing_distance, rec.value_zeroing = d, normalise_rows(d)
        finally:
            self._rerunning = False

    def _observe_residual(self, layer: nn.Module, x: Tensor, residual: Tensor) -> None:
        """A layer's residual connection: if it follows a recorded attention, decompose that attention
        (its norms and vectors) and its block, in batch chunks of bounded size."""
        if self._rerunning:
            return
        pending = self._pending.pop(id(layer), None)
        if pending is None:  # the feed-forward's residual, or an attention not recorded
            return
        rec, module, weights, values, head_outputs = pending
        B, _, T, S = weights.shape
        group = B // values.size(0)  # hypotheses sharing one encoder state (beam search)
        chunk = max(1, _CHUNK_FLOATS // max(1, T * S * module.embed_dim) // group) * group  # (chunk, T, S, E) at a time
        residual, norm = residual.detach().transpose(0, 1), layer.block_layer_norm(rec.kind)
        chunks, attention = [], []
        for b0 in range(0, B, chunk):
            b1 = min(B, b0 + chunk)
            fx_norm, weighted_norm, summed_norm, vectors, rec.bias = decompose(
                module, weights[b0:b1], values[b0 // group: -(-b1 // group)], head_outputs[:, b0:b1], keep_vectors=True,
                factors=self._factors, scratch=None if self.keep_vectors else self._scratch)
            attention.append((fx_norm, weighted_norm, summed_norm, vectors if self.keep_vectors else None))
            chunks.append(decompose_block(vectors, rec.bias, residual[b0:b1], None if rec.kind == "cross" else S - T,
                                          norm, self.keep_vectors, overwrite=not self.keep_vectors))
        rec.fx_norm, rec.weighted_norm, rec.summed_norm, rec.vectors = (
            None if part[0] is None else torch.cat(part) for part in zip(*attention))
        names = [f.name for f in fields(BlockParts)]
        parts = BlockParts(*(None if getattr(chunks[0], f) is None else torch.cat([getattr(c, f) for c in chunks])
                             for f in names))
        rec.block_norm, rec.block_residual_norm, rec.mixing_ratio = parts.norms, parts.residual_norm, parts.mixing
        rec.block_vectors, rec.block_residual, rec.block_bias = parts.vectors, parts.residual, parts.bias
        rec.alti, rec.alti_residual = parts.alti, parts.alti_residual


def _zeroing_layer(model: nn.Module, name: str) -> nn.Module:
    """The layer around the attention ``name``, checked to be a
    :class:`~fairseq_rela.value_zeroing.ZeroingLayer` (it can be rerun on copies of its batch)."""
    parent = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else None
    if parent is None or not isinstance(getattr(parent, "batch_axes", None), dict):
        raise OptionError(f"value zeroing: the layer around {name} cannot be rerun on copies of its batch "
                          "(not a fairseq-rela Transformer layer)")
    return parent


def _block_layer(model: nn.Module, name: str, kind: str) -> nn.Module:
    """The layer around the attention ``name``, checked to report its residual for ``kind``."""
    parent = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else None
    if parent is None or not hasattr(parent, "residual_observer") or not hasattr(parent, "block_layer_norm"):
        raise OptionError(f"block decomposition: the layer around {name} does not report its residual "
                          "connection (not a fairseq-rela Transformer layer)")
    parent.block_layer_norm(kind)  # an OptionError where this block cannot be decomposed
    return parent


@dataclass
class SentenceAttention:
    """One sentence pair's attention records, padding removed (numpy arrays, no batch axis).

    ``src``: source tokens (ending in ``</s>``); ``tgt_in``: decoder input tokens (``</s> y1 .. yn``);
    ``tgt_out``: the tokens each decoder position predicts (``y1 .. yn </s>``).
    ``records[(kind, layer)]``: an :class:`AttentionRecord` with ``weights``, ``weighted_norm``
    (H,T,S), ``fx_norm`` (H,T|1,S), ``summed_norm`` (T,S), and when the block was recorded
    ``block_norm`` (T,S), ``block_residual_norm`` (T,) (cross), ``mixing_ratio`` (T,3), ``alti`` (T,S) and
    ``alti_residual`` (T,) (cross); queries T and keys S are positions of ``src`` (encoder) or ``tgt_in``.
    """

    id: int
    src: List[str]
    tgt_in: List[str]
    tgt_out: List[str]
    records: Dict[Tuple[str, int], AttentionRecord] = field(default_factory=dict)
    _rolled: Dict[str, Union[Contributions, OptionError]] = field(default_factory=dict, repr=False, compare=False)

    def tokens(self, kind: str) -> Tuple[List[str], List[str]]:
        """(query tokens, key tokens) of an attention kind."""
        return {"encoder_self": (self.src, self.src), "decoder_self": (self.tgt_in, self.tgt_in),
                "cross": (self.tgt_in, self.src)}[kind]

    def contributions(self, source: str = "alti") -> Contributions:
        """The records rolled out from ``source`` (:func:`~fairseq_rela.contributions.sentence_contributions`;
        computed once per source); an OptionError where the records lack what ``source`` needs."""
        if source not in self._rolled:
            try:
                self._rolled[source] = sentence_contributions(self.records, source)
            except OptionError as err:
                self._rolled[source] = err
        value = self._rolled[source]
        if isinstance(value, OptionError):
            raise value
        return value

    def rollout_sources(self) -> Tuple[str, ...]:
        """The :data:`~fairseq_rela.contributions.ROLLOUT_SOURCES` these records can be rolled out from."""
        out = []
        for source in ROLLOUT_SOURCES:
            try:
                self.contributions(source)
            except OptionError:
                continue
            out.append(source)
        return tuple(out)

    def matrix(self, source: str, layer: int, heads: Optional[Sequence[int]] = None) -> np.ndarray:
        """(T, S) alignment matrix of decoder ``layer``: a record's (:meth:`AttentionRecord.matrix`), or, for
        ``rollout-X`` (:data:`ROLLED_OUT_SOURCES`, all heads), the source tokens' columns of ALTI+'s
        rollout from ``X`` after that layer (``rollout-alti``: ALTI+ itself)."""
        if source not in ROLLED_OUT_SOURCES:
            return self.records[("cross", layer)].matrix(source, heads)
        if heads is not None:
            raise OptionError(f"--alignment-source {source} covers all heads")
        rolled = self.contributions(source[len("rollout-"):])
        if rolled.decoder is None:
            raise OptionError(f"--alignment-source {source}: an encoder-only model has no cross-attention")
        return rolled.decoder[layer][:, : len(self.src)]


_NORM_FIELDS = ("weighted_norm", "fx_norm", "summed_norm")
_QUERY_KEY_FIELDS = ("summed_norm", "block_norm", "alti", "value_zeroing_distance", "value_zeroing")  # (B, T, S)
_QUERY_FIELDS = ("block_residual_norm", "mixing_ratio", "alti_residual")  # (B, T, ...)


def split_sentences(sample, recorder: AttentionRecorder, src_dict, tgt_dict) -> Iterator[SentenceAttention]:
    """Cut a batch's records into per-sentence records without padding (an encoder-only batch, with no
    ``prev_output_tokens``, gives empty ``tgt_in``/``tgt_out``)."""
    src_tokens, prev = sample["net_input"]["src_tokens"], sample["net_input"].get("prev_output_tokens")
    for b in range(src_tokens.size(0)):
        src_keep = src_tokens[b].ne(src_dict.pad())
        tgt_keep = None if prev is None else sample["target"][b].ne(tgt_dict.pad())
        sent = SentenceAttention(
            id=int(sample["id"][b]),
            src=[src_dict[t] for t in src_tokens[b][src_keep].tolist()],
            tgt_in=[] if prev is None else [tgt_dict[t] for t in prev[b][tgt_keep].tolist()],
            tgt_out=[] if prev is None else [tgt_dict[t] for t in sample["target"][b][tgt_keep].tolist()],
        )
        for (kind, layer), records in recorder.records.items():
            (rec,) = records
            q_keep, k_keep = {"encoder_self": (src_keep, src_keep), "decoder_self": (tgt_keep, tgt_keep),
                              "cross": (tgt_keep, src_keep)}[kind]
            out = AttentionRecord(kind, layer, rec.weights[b][:, q_keep][:, :, k_keep].cpu().numpy(),
                                  summed_heads=rec.summed_heads)
            for name in _NORM_FIELDS + _QUERY_FIELDS + _QUERY_KEY_FIELDS[1:]:
                value = getattr(rec, name)
                if value is None:
                    continue
                value = value[b]
                if name in _QUERY_KEY_FIELDS:
                    value = value[q_keep][:, k_keep]
                elif name in _QUERY_FIELDS:
                    value = value[q_keep]
                else:
                    value = value[:, q_keep if value.size(1) > 1 else slice(None)][:, :, k_keep]
                setattr(out, name, value.cpu().numpy())
            sent.records[(kind, layer)] = out
        yield sent
