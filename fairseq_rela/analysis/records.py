"""Recording what every attention did: weights α and the norm decomposition of its output.

Kobayashi et al. (2020, eq. 5): ``y_i = Σ_j Σ_h α^h_ij f_h(x_j) + b_O`` with
``f_h(x) = (x W_V^h + b_V^h) W_O^h``.  With a head-output normaliser (ReLA) the output is
``y_i = W_O N(z_i) + b_O`` and ``N`` is affine for a fixed query, ``N(z) = s_i ⊙ C(z) + c``
(``C``: identity or centring), so it folds into ``f`` for that query:

    f^h_i(x_j) = W_O s_i ⊙ C(P_h v^h_j),      y_i = Σ_j Σ_h α^h_ij f^h_i(x_j) + (b_O + W_O c)

(``P_h`` puts head h's value into its slice).  The decomposition is exact for every activation
and normaliser; :func:`decompose` computes it, :class:`AttentionRecorder` collects it.
"""
import re
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Tuple

import torch
from torch import Tensor, nn

from fairseq_rela.attention import ReLAMultiheadAttention
from fairseq_rela.config import ATTENTION_KINDS


@dataclass
class AttentionRecord:
    """One forward call of one attention module; batch-first, heads second."""

    kind: str  # encoder_self | decoder_self | cross
    layer: int
    weights: Tensor  # (B, H, T, S) α
    key_padding_mask: Optional[Tensor] = None  # (B, S), True at padding
    fx_norm: Optional[Tensor] = None  # (B, H, T|1, S) ‖f_h(x_j)‖ (depends on the query with a normaliser)
    weighted_norm: Optional[Tensor] = None  # (B, H, T, S) ‖α^h_ij f_h(x_j)‖
    summed_norm: Optional[Tensor] = None  # (B, T, S) ‖Σ_h α^h_ij f_h(x_j)‖
    vectors: Optional[Tensor] = None  # (B, T, S, E) Σ_h α^h_ij f_h(x_j), only with keep_vectors
    bias: Optional[Tensor] = None  # (E,) b_O + W_O c: Σ_j vectors_ij + bias == output_i


def _head_maps(module: ReLAMultiheadAttention) -> Tensor:
    """W_O^h as (H, d, E_out): head h's slice of the output projection."""
    w = module.out_proj.weight  # (E_out, E_in)
    return w.t().reshape(module.num_heads, module.head_dim, w.size(0))


_CHUNK_FLOATS = 1 << 24  # bound on one (B, H, queries, S, E) block in the query-dependent path


@torch.no_grad()
def decompose(
    module: ReLAMultiheadAttention, weights: Tensor, values: Tensor, head_outputs: Tensor, keep_vectors: bool = False,
    heads: Optional[List[int]] = None,
) -> Tuple[Tensor, Tensor, Tensor, Optional[Tensor], Tensor]:
    """Norms of the decomposition ``y_i = Σ_j Σ_h α^h_ij f^h_i(x_j) + bias``.

    Args: weights (B,H,T,S); values (B',H,S,d) with B' dividing B (beam-shared keys);
    head_outputs z (T,B,E), the normaliser's input.  ``heads`` restricts the summed vector
    ``Σ_h α f`` (and ``summed_norm``) to those heads; the per-head norms cover all heads.
    Returns ``(fx_norm, weighted_norm, summed_norm, vectors or None, bias)``.

    Without a per-query vector in the normaliser (no normaliser, RMSNorm) ``f_h(x_j)`` is shared by
    all queries up to a scalar, and the norms follow from the Gram matrix ``f_h(x_j) · f_g(x_j)``:
    nothing of size ``T x S x E`` is built.  Gated RMSNorm and LayerNorm are done in query chunks.
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
    if lin.query_vector is None and not lin.centre:
        if lin.gain is not None:
            v = v * lin.gain.view(H, 1, -1)
        f = torch.einsum("bhsd,hde->bhse", v, w_heads)  # f_h(x_j), up to the query's scalar r
        gram = torch.einsum("bhse,bgse->bshg", f, f)
        fx_norm = gram.diagonal(dim1=2, dim2=3).clamp_min(0).sqrt().transpose(1, 2).unsqueeze(2)  # (B,H,1,S)
        g_sel = gram if heads is None else gram[:, :, heads][:, :, :, heads]
        summed = torch.einsum("bhts,bgts,bshg->bts", sel, sel, g_sel).clamp_min(0).sqrt()
        vectors = torch.einsum("bhts,bhse->btse", sel, f if heads is None else f[:, heads]) if keep_vectors else None
        if r is not None:
            fx_norm = fx_norm * r[:, None, :, None]
            summed = summed * r[:, :, None]
            vectors = None if vectors is None else vectors * r[:, :, None, None]
    else:
        fx_norm, summed, vectors = _query_dependent(module, sel, v, w_heads, out_w, lin, r, keep_vectors, heads)
    return fx_norm, weights.abs() * fx_norm, summed, vectors, bias


def _query_dependent(module, sel, v, w_heads, out_w, lin, r, keep_vectors, heads):
    """f^h_i(x_j) = W_O^h (s^h_i ⊙ v^h_j) [- (Σv^h_j / E) W_O s_i], s_i = r_i g ⊙ q_i, in query chunks."""
    B, H, S, d = v.shape
    T, E = sel.size(2), module.embed_dim
    s = lin.query_vector.transpose(0, 1) if lin.query_vector is not None else v.new_ones(B, T, E)
    if lin.gain is not None:
        s = s * lin.gain
    if r is not None:
        s = s * r[:, :, None]
    fx_norm, summed = v.new_empty(B, H, T, S), v.new_empty(B, T, S)
    vectors = v.new_empty(B, T, S, E) if keep_vectors else None
    chunk = max(1, _CHUNK_FLOATS // max(1, B * H * S * E))
    for t0 in range(0, T, chunk):
        t1 = min(T, t0 + chunk)
        sc = s[:, t0:t1]
        f = torch.einsum("bhsd,bthd,hde->bhtse", v, sc.reshape(B, t1 - t0, H, d), w_heads)
        if lin.centre:  # C(P_h v) = P_h v - mean(P_h v): subtract (Σv/E) W_O s
            f = f - (v.sum(-1) / E)[:, :, None, :, None] * (sc @ out_w.t())[:, None, :, None, :]
        fx_norm[:, :, t0:t1] = f.norm(dim=-1)
        vec = torch.einsum("bhts,bhtse->btse", sel[:, :, t0:t1], f if heads is None else f[:, heads])
        summed[:, t0:t1] = vec.norm(dim=-1)
        if vectors is not None:
            vectors[:, t0:t1] = vec
    return fx_norm, summed, vectors


_LAYER = re.compile(r"layers\.(\d+)\.")


class AttentionRecorder:
    """Context manager recording every :class:`ReLAMultiheadAttention` of ``model`` while active.

    ``records[(kind, layer)]`` is a list with one :class:`AttentionRecord` per forward call.
    With ``norms=False`` only weights are kept (cheap: for training-time statistics).
    Outside the context nothing is recorded and the attention does no extra work.
    """

    def __init__(self, model: nn.Module, kinds: Iterable[str] = ATTENTION_KINDS, norms: bool = True,
                 keep_vectors: bool = False, layers: Optional[Iterable[int]] = None,
                 heads: Optional[List[int]] = None):
        self.kinds = tuple(kinds)
        self.heads = heads
        self.norms, self.keep_vectors = norms, keep_vectors
        self.layers = None if layers is None else set(layers)
        self.records: Dict[Tuple[str, int], List[AttentionRecord]] = {}
        self.modules: List[Tuple[ReLAMultiheadAttention, int]] = []
        for name, module in model.named_modules():
            if isinstance(module, ReLAMultiheadAttention) and module.kind in self.kinds:
                match = _LAYER.search(name + ".")
                layer = int(match.group(1)) if match else 0
                if self.layers is None or layer in self.layers:
                    self.modules.append((module, layer))
        if not self.modules:
            raise ValueError("AttentionRecorder: the model has no ReLAMultiheadAttention to record "
                             "(is it a rela_transformer?)")

    def __enter__(self) -> "AttentionRecorder":
        for module, layer in self.modules:
            module.recorder = self._recorder_for(layer)
        return self

    def __exit__(self, *exc) -> None:
        for module, _ in self.modules:
            module.recorder = None

    def clear(self) -> None:
        self.records.clear()

    def _recorder_for(self, layer: int):
        def record(module, weights, values, head_outputs, output, key_padding_mask):
            rec = AttentionRecord(module.kind, layer, weights.detach().float(),
                                  None if key_padding_mask is None else key_padding_mask.detach().bool())
            if rec.key_padding_mask is not None and rec.key_padding_mask.size(0) != weights.size(0):
                rec.key_padding_mask = rec.key_padding_mask.repeat_interleave(
                    weights.size(0) // rec.key_padding_mask.size(0), dim=0)
            if self.norms:
                rec.fx_norm, rec.weighted_norm, rec.summed_norm, rec.vectors, rec.bias = decompose(
                    module, weights.detach(), values.detach(), head_outputs.detach(), self.keep_vectors, self.heads)
            self.records.setdefault((module.kind, layer), []).append(rec)

        return record
