"""Token contributions through the whole model: ALTI per attention block, rollout across layers, ALTI+.

**ALTI** (Ferrando et al. 2022, "Measuring the Mixing of Contextual Information in the Transformer",
eq. 7–9; code: mt-upc/transformer-contributions, ``src/contributions.py``): an attention block's output
``y_i = Σ_j T_i(x_j) + b_i`` (:mod:`fairseq_rela.block`: ``T_i(x_j) = F_i(c_ij)`` after the residual
and a post-norm LayerNorm; ``b_i = F_i(b) + β``, or ``b`` in a pre-norm block, whose output has no
LayerNorm after the residual) gives token ``j`` the share

    d_ij = max(0, ‖y_i‖₁ − ‖y_i − T_i(x_j)‖₁),      ALTI_ij = d_ij / Σ_k d_ik

As in the authors' code (``resultant``: attention output + ``l_transform(b_O)`` + LayerNorm bias),
``y_i`` is the block's real output *with* its bias terms, and the bias gets no share of its own
(ReLA's normaliser shift ``W_O c`` is such a bias).  In cross-attention the residual, the decoder's own
state, is one more term (their ``torch.cat((attn_v_wo, residual_))``): :attr:`LayerShares.residual`.
The LayerNorm scale is the real one, ``√(Var(u_i) + ε)`` (their NMT code divides by the unbiased
standard deviation of ``u_i + ε``, an approximation their assertion tolerates; ours sums to the real
output exactly).  A term whose vector is exactly 0 (a key a ReLA row, the causal mask or padding does
not attend) has ``d = 0``.  Where every ``d_ik`` is 0 (the bias outweighs the terms) a row with a
single non-zero term gives it everything (a null ReLA row: the residual); otherwise the row is NaN
(undefined; so is a padding query's row in a batch, which has no term at all).
The feed-forward block is position-wise and is not part of ALTI (the authors use ``contributions``,
the attention block's, not the ``contributions2`` of the second LayerNorm).

**Rollout** (Abnar & Zuidema 2020; the authors' ``compute_joint_attention``): ``R^1 = C^1``,
``R^l = C^l R^{l-1}`` over row-stochastic per-layer matrices :func:`layer_shares` makes from each
source: ``weights`` (``(Ŵ + I) / 2``, ``Ŵ`` the head-mean weights normalised per row, as their
``compute_rollout``; a null ReLA row is the identity), ``norms`` (the same with Kobayashi's attention
norms), ``block`` (``‖T_i(x_j)‖`` normalised per row: their "norm" rollout, ``sum_one``), ``alti``,
``value-zeroing`` (:mod:`fairseq_rela.value_zeroing`; Mohebbi et al.'s ``compute_joint_attention(res=False)``:
the layer's residual is already inside the measure; a row no value reaches keeps the token itself).
In a decoder layer value zeroing measures both attentions on the same output, so its ALTI+ step below is
``J^l = [d^cross | d^self] / (Σ d^cross + Σ d^self)`` per position (:func:`value_zeroing_shares`).

**ALTI+** (Ferrando et al. 2022, "Towards Opening the Black Box of Neural Machine Translation", §3;
code: mt-upc/transformer-contributions-nmt, ``wrappers/transformer_wrapper.py``,
``get_contribution_rollout``): decoder layer ``l`` mixes the encoder's output through its cross block
``X^l`` (T × S, with the residual share ``r^l``) and its input positions through its self block ``D^l``
(T × T), whose output is the cross block's residual: ``J^l = [X^l E | diag(r^l) D^l]`` over
``[source tokens | target prefix]`` with ``E`` the encoder's full rollout.  Then
``A^0 = J^0`` and ``A^l = J^l_tgt A^{l-1} + [J^l_src E | 0]`` (renormalised per row), and the
**source contribution** of the token predicted at step ``t`` is ``Σ_s A^L_ts`` over source tokens.
"""
from dataclasses import dataclass
from typing import Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor

from fairseq_rela.errors import OptionError, check_choice

Array = Union[Tensor, np.ndarray]
ROLLOUT_SOURCES = ("weights", "norms", "block", "alti", "value-zeroing")


@dataclass
class LayerShares:
    """How much each key token (and, cross-attention, the residual) makes of each query's output; rows sum to 1."""

    keys: Array  # (..., T, S)
    residual: Optional[Array] = None  # (..., T) cross-attention: the decoder state's share; None: inside keys


@torch.no_grad()
def alti(vectors: Tensor, residual: Optional[Tensor], bias: Tensor, output: Optional[Tensor] = None,
         overwrite: bool = False) -> LayerShares:
    """ALTI of one block (module docstring) from its decomposition: ``vectors`` (B,T,S,E) ``T_i(x_j)``,
    ``residual`` (B,T,E) (cross-attention) or None, ``bias`` (B,T,E): their sum is the block's output
    (``output``, where the caller has it: e.g. the LayerNorm's output, equal up to rounding).  O(B·T·S·E):
    three reads of the vectors (a term is zero where its min and max are 0; then ``‖y_i − T_i(x_j)‖₁`` as one
    subtraction, ``abs`` and sum, in place when ``overwrite``: the vectors are the caller's scratch, left
    undefined; else in one (B,T,S,E) temporary).  The L1 distance has no dot-product form (no ``‖a‖² + ‖b‖² −
    2a·b``); ``torch.sum`` replaced ``cdist(p=1)``: the same sum in another order, shares within 1e-5 of float64
    (tests/test_block.py::test_decompose_block_within_float32_rounding_of_a_float64_reference)."""
    y = vectors.sum(2) + bias + (0 if residual is None else residual) if output is None else output  # (B,T,E)
    y_norm = y.abs().sum(-1)  # (B,T)
    nonzero = (vectors.amax(-1) > 0) | (vectors.amin(-1) < 0)  # a zero term's d is exactly 0 (not the rounding
    # of ‖y‖₁ − ‖y‖₁); amax and amin: two fast reductions (aminmax is not vectorised over the last axis)
    dist = torch.sub(vectors, y[:, :, None], out=vectors if overwrite else None).abs_().sum(-1)  # ‖y_i − T_i(x_j)‖₁
    d = (y_norm[..., None] - dist).clamp_min(0) * nonzero  # (B,T,S)
    if residual is None:
        total, count, d_res, res_nonzero = d.sum(-1), nonzero.sum(-1), None, None
    else:
        d_res = (y_norm - (y - residual).abs().sum(-1)).clamp_min(0)
        res_nonzero = residual.ne(0).any(-1)
        total, count = d.sum(-1) + d_res, nonzero.sum(-1) + res_nonzero
    # rows where every d is 0: the single non-zero term takes all (a null ReLA row), else undefined
    fallback = torch.where(count == 1, 1.0, float("nan"))[..., None]
    degenerate = total == 0
    safe = torch.where(degenerate, 1.0, total)[..., None]
    keys = torch.where(degenerate[..., None], nonzero * fallback, d / safe)
    if residual is None:
        return LayerShares(keys)
    res = torch.where(degenerate, res_nonzero * fallback[..., 0], d_res / safe[..., 0])
    return LayerShares(keys, res)


def _own(T: int, S: int) -> np.ndarray:
    """Self-attention's identity: query i is key i + S − T."""
    return np.eye(T, S, k=S - T)


def _with_identity(matrix: np.ndarray, kind: str) -> LayerShares:
    """An attention-only matrix (no residual) with the residual counted as the attention's whole row:
    ``(Ŵ + I) / 2`` (self) or ``[Ŵ | 1] / 2`` (cross), ``Ŵ`` normalised per row (a null row: the residual alone)."""
    total = matrix.sum(-1, keepdims=True)
    w = matrix / np.where(total > 0, total, 1)
    if kind == "cross":
        norm = w.sum(-1) + 1
        return LayerShares(w / norm[..., None], 1 / norm)
    w = w + _own(*w.shape[-2:])
    return LayerShares(w / w.sum(-1, keepdims=True))


def layer_shares(record, source: str) -> LayerShares:
    """One attention record's (``AttentionRecord``: numpy or torch, one sentence or a batch) per-layer
    shares for rollout from ``source`` in :data:`ROLLOUT_SOURCES` (module docstring)."""
    check_choice("rollout source", source, ROLLOUT_SOURCES)
    field = {"weights": "weights", "norms": "summed_norm", "block": "block_norm", "alti": "alti",
             "value-zeroing": "value_zeroing"}[source]
    value = getattr(record, field)
    if value is None or (source == "norms" and record.summed_heads is not None):
        raise OptionError(f"rollout of {source}: the {record.kind} attention of layer {record.layer} was recorded "
                          f"without {field}" + (" over all heads" if source == "norms" else ""))
    value = np.asarray(value, dtype=np.float64)
    if source == "weights":
        value = value.mean(-3)
    if source in ("weights", "norms"):
        return _with_identity(value, record.kind)
    if source == "value-zeroing":
        if record.kind == "cross":
            raise OptionError("rollout of value-zeroing: a cross-attention's shares need its layer's self-attention "
                              "(value_zeroing_shares)")
        return LayerShares(_keep_self_where_empty(value))
    if source == "alti":
        res = record.alti_residual
        return LayerShares(value, None if res is None else np.asarray(res, np.float64))
    if record.kind != "cross":
        return LayerShares(value / value.sum(-1, keepdims=True))
    res = np.asarray(record.block_residual_norm, np.float64)
    total = value.sum(-1) + res
    return LayerShares(value / total[..., None], res / total)


def _keep_self_where_empty(matrix: np.ndarray) -> np.ndarray:
    """Self-attention rows that sum to 0 (no value reaches the token) become the token itself."""
    empty = matrix.sum(-1) == 0
    return np.where(empty[..., None], _own(*matrix.shape[-2:]), matrix)


def value_zeroing_shares(self_record, cross_record) -> Tuple[LayerShares, LayerShares]:
    """A decoder layer's value zeroing as ALTI+'s (self block, cross block): both distances are changes of the
    layer's output, so position t's row is ``[d^cross_t | d^self_t] / (Σ d^cross_t + Σ d^self_t)``: the cross
    block gets ``d^cross / total`` with the residual share ``Σ d^self / total``, the self block ``d^self``
    normalised (a position nothing reaches: all residual, then the token itself)."""
    if self_record.value_zeroing_distance is None or cross_record.value_zeroing_distance is None:
        raise OptionError(f"rollout of value-zeroing: decoder layer {cross_record.layer} was recorded without it")
    d_self = np.asarray(self_record.value_zeroing_distance, np.float64)
    d_cross = np.asarray(cross_record.value_zeroing_distance, np.float64)
    self_total, cross_total = d_self.sum(-1), d_cross.sum(-1)
    total = self_total + cross_total
    safe = np.where(total > 0, total, 1.0)
    residual = np.where(total > 0, self_total / safe, 1.0)
    d_self = d_self / np.where(self_total > 0, self_total, 1.0)[..., None]
    return LayerShares(_keep_self_where_empty(d_self)), LayerShares(d_cross / safe[..., None], residual)


def rollout(layers: Sequence[Array]) -> np.ndarray:
    """(L, ..., S, S): ``R^1 = C^1``, ``R^l = C^l R^{l-1}`` for per-layer matrices ``C^l`` (..., S, S).
    The identity model (every ``C^l = I``) rolls out to the identity."""
    out = [np.asarray(layers[0], np.float64)]
    for c in layers[1:]:
        out.append(np.asarray(c, np.float64) @ out[-1])
    return np.stack(out)


@dataclass
class Contributions:
    """Input tokens' contributions through a model (one sentence pair, padding removed).

    ``encoder[l]`` (S, S): source token j's share of the encoder's output i after layer l.  ``decoder[l]``
    (T, S + T): over ``[source tokens | target prefix (decoder inputs)]``, their shares of decoder
    position t's state after layer l (ALTI+'s full rollout); None for an encoder-only model."""

    source: str
    encoder: np.ndarray  # (L_enc, S, S)
    decoder: Optional[np.ndarray] = None  # (L_dec, T, S + T)

    def _last(self) -> np.ndarray:
        if self.decoder is None:
            raise ValueError("source/target share: an encoder-only model has no decoder")
        return self.decoder[-1]

    @property
    def source_share(self) -> np.ndarray:
        """(T,) ALTI+'s source contribution of each predicted token (the rest is the target prefix's)."""
        return self._last()[..., : self.encoder.shape[-1]].sum(-1)

    @property
    def target_share(self) -> np.ndarray:
        """(T,) the target prefix's share of each predicted token."""
        return self._last()[..., self.encoder.shape[-1]:].sum(-1)


def alti_plus(encoder: np.ndarray, decoder_self: Sequence[LayerShares], cross: Sequence[LayerShares]) -> np.ndarray:
    """(L_dec, T, S + T) ALTI+'s decoder rollout (module docstring) from the encoder's full rollout
    ``encoder`` (S, S), and per decoder layer its self block (T, T) and its cross block (T, S) + residual (T,)."""
    S = encoder.shape[-1]
    if len(decoder_self) != len(cross):
        raise ValueError("alti_plus: one self and one cross block per decoder layer")
    out = []
    for self_block, cross_block in zip(decoder_self, cross):
        x, r = np.asarray(cross_block.keys, np.float64), np.asarray(cross_block.residual, np.float64)
        src, tgt = x @ encoder, r[..., None] * np.asarray(self_block.keys, np.float64)
        if out:
            src, tgt = tgt @ out[-1][..., :S] + src, tgt @ out[-1][..., S:]
        joint = np.concatenate([src, tgt], -1)
        out.append(joint / joint.sum(-1, keepdims=True))
    return np.stack(out)


def _layers(records: Mapping[Tuple[str, int], object], kind: str) -> list:
    layers = sorted(layer for k, layer in records if k == kind)
    if layers != list(range(len(layers))):
        raise OptionError(f"rollout: {kind} layers {layers} were recorded; rollout needs every layer from 0")
    return [records[(kind, layer)] for layer in layers]


def sentence_contributions(records: Mapping[Tuple[str, int], object], source: str = "alti") -> Contributions:
    """Rollout of one sentence's records (``SentenceAttention.records``) from ``source``: the encoder's
    token-to-token contributions and, with a decoder, ALTI+'s source/target split."""
    encoder = _layers(records, "encoder_self")
    if not encoder:
        raise OptionError("rollout: no encoder self-attention was recorded")
    enc = rollout([layer_shares(r, source).keys for r in encoder])
    dec_self, cross = _layers(records, "decoder_self"), _layers(records, "cross")
    if not dec_self and not cross:
        return Contributions(source, enc)
    if len(dec_self) != len(cross):
        raise OptionError("rollout: the decoder's self- and cross-attention must both be recorded in every layer")
    if source == "value-zeroing":
        self_shares, cross_shares = zip(*(value_zeroing_shares(s, c) for s, c in zip(dec_self, cross)))
    else:
        self_shares, cross_shares = [layer_shares(r, source) for r in dec_self], [layer_shares(r, source) for r in cross]
    decoder = alti_plus(enc[-1], self_shares, cross_shares)
    return Contributions(source, enc, decoder)
