"""Multi-head attention with a pluggable activation and ReLA's head-output normaliser.

A subclass of fairseq's :class:`~fairseq.modules.MultiheadAttention`: same parameters, same
incremental-state layout (``prev_key``/``prev_value`` of shape ``(batch, heads, len, head_dim)``),
so beam search, checkpoints and ``reorder_incremental_state`` work unchanged.  It never takes
fairseq's ``F.multi_head_attention_forward`` fast path (which would skip the activation and the
normaliser).  When nobody needs the weights (no caller asks, no recorder), a fused kernel computes
the same thing: softmax PyTorch's ``scaled_dot_product_attention``, ReLA on CUDA our Triton kernel
(:mod:`fairseq_rela.kernels.rela_triton`), sparsemax/1.5-entmax on CUDA AdaSplash where installed and
its masks express ours; ``kernel="eager"`` (``--attention-kernel eager``) always takes the eager path.

    y = W_O · N(concat_h Σ_j α^h_ij v^h_j) + b_O,   α^h = act(q^h k^hᵀ / √d_h)
"""
from enum import Enum
from typing import Dict, Optional, Protocol, Tuple

import torch
import torch.nn.functional as F
from fairseq.modules import MultiheadAttention
from torch import Tensor
from torch.nn.attention import SDPBackend, sdpa_kernel

from fairseq_rela import kernels
from fairseq_rela.activations import get_activation
from fairseq_rela.kernels import selfcheck, sparse
from fairseq_rela.normalization import HeadNorm, IdentityNorm

IncrementalState = Optional[Dict[str, Dict[str, Optional[Tensor]]]]
# Fused kernels softmax may use. cuDNN's (PyTorch's first choice on Hopper GPUs) is left out: it plans
# anew for every (batch, T, S) shape, which MT's varying lengths make slow (scripts/gpu/sdpa_backends.py).
SDPA_BACKENDS = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


class AttentionKind(str, Enum):
    """Where an attention sits; equal to its string value (``"cross"`` etc., as options and JSON write it)."""

    ENCODER_SELF = "encoder_self"
    DECODER_SELF = "decoder_self"
    CROSS = "cross"

    def __str__(self) -> str:
        return self.value


ATTENTION_KINDS: Tuple[str, ...] = tuple(k.value for k in AttentionKind)


class Recorder(Protocol):
    """Receives what one forward call of an attention did (see :mod:`fairseq_rela.recording`)."""

    def __call__(self, module: "ReLAMultiheadAttention", weights: Tensor, values: Tensor, head_outputs: Tensor,
                 output: Tensor, key_padding_mask: Optional[Tensor]) -> None:
        """weights (B,H,T,S) as used (after dropout); values (B',H,S,d), B' dividing B; head_outputs z
        (T,B,E), the normaliser's input; output (T,B,E); key_padding_mask (B',S) or None."""

# a float attn_mask entry at or below this blocks the position (fairseq writes -1e8, or -1e4 in fp16)
BLOCKED = -1e4


class ReLAMultiheadAttention(MultiheadAttention):
    """fairseq attention whose weights come from ``activation`` (softmax, rela, sparsemax, entmax15)."""

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        *,
        activation: str = "softmax",
        head_norm: Optional[HeadNorm] = None,
        kind: Optional[str] = None,
        kernel: str = "auto",
        **kwargs,
    ):
        unsupported = [k for k in ("add_bias_kv", "add_zero_attn", "xformers_att_config") if kwargs.get(k)]
        if unsupported:
            raise ValueError(f"ReLAMultiheadAttention does not support {', '.join(unsupported)}")
        super().__init__(embed_dim, num_heads, **kwargs)
        self.spec = get_activation(activation)
        self.activation = self.spec.name
        self.head_norm = head_norm if head_norm is not None else IdentityNorm()
        # the layers name it; a bare module is cross-attention when it attends to an encoder
        self.kind = AttentionKind(kind) if kind else (
            AttentionKind.CROSS if self.encoder_decoder_attention else AttentionKind.ENCODER_SELF)
        self.recorder: Optional[Recorder] = None  # None: recording off and free
        # (B, S) bool, True: that key's value vector is zeroed in every head (value zeroing,
        # fairseq_rela.value_zeroing); None: off and free
        self.zeroed_values: Optional[Tensor] = None
        self.kernel = kernels.check_kernel(kernel)  # auto | eager | fused (see _fused_path)

    def extra_repr(self) -> str:
        return f"kind={self.kind.value!r}, activation={self.activation!r}"

    def forward(
        self,
        query: Tensor,
        key: Optional[Tensor],
        value: Optional[Tensor],
        key_padding_mask: Optional[Tensor] = None,
        incremental_state: IncrementalState = None,
        need_weights: bool = True,
        static_kv: bool = False,
        attn_mask: Optional[Tensor] = None,
        before_softmax: bool = False,
        need_head_weights: bool = False,
    ) -> Tuple[Tensor, Optional[Tensor]]:
        """Time x Batch x Channel in and out, as fairseq's; weights ``(B,T,S)`` or ``(H,B,T,S)``."""
        if before_softmax:
            raise NotImplementedError("ReLAMultiheadAttention: before_softmax is not supported")
        need_weights = need_weights or need_head_weights
        tgt_len, bsz, embed_dim = query.shape
        q, k, v, key_padding_mask = self._project(query, key, value, key_padding_mask, incremental_state, static_kv)
        if self.zeroed_values is not None:  # after the weights' inputs: zeroing changes no α (Mohebbi et al. 2023)
            v = v.masked_fill(self.zeroed_values[:, None, :, None], 0.0)
        heads, head_dim, src_len = self.num_heads, self.head_dim, k.size(2)
        kv_bsz = k.size(0)
        group = bsz // kv_bsz  # beam size when encoder states are shared across the beam
        if group > 1:  # fold the beam into the query axis: no copy of the keys
            q = q.view(kv_bsz, group, heads, tgt_len, head_dim).transpose(1, 2)
            q = q.reshape(kv_bsz, heads, group * tgt_len, head_dim)
        mask, bias = self._mask(key_padding_mask, attn_mask, group)

        weights: Optional[Tensor] = None
        ctx: Optional[Tensor] = None
        p = self.dropout_module.p if (self.training or self.dropout_module.apply_during_inference) else 0.0
        path = None if need_weights or self.recorder is not None else self._fused_path(q.device, tgt_len, p)
        if path == "sdpa":
            sdpa_mask = None if mask is None else ~mask
            if bias is not None:  # additive: SDPA adds a float mask to the scores (a fully blocked row gives 0)
                sdpa_mask = bias if mask is None else torch.where(mask, float("-inf"), bias)
            with sdpa_kernel(SDPA_BACKENDS):
                ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=sdpa_mask, dropout_p=p, scale=1.0)
        elif path == "rela" and (bias is None or not bias.requires_grad):  # the kernel gives no bias gradient
            if selfcheck.trusted(q.device, q.dtype, head_dim, mask is not None, bias is not None, p > 0,
                                 strict=self.kernel == "fused"):
                from fairseq_rela.kernels.rela_triton import rela_attention

                ctx = rela_attention(q, k, v, mask, bias, dropout_p=p)
        elif path == "adasplash" and group == 1:
            ctx = sparse.fused_sparse_attention(self.activation, q, k, v, key_padding_mask, attn_mask)
        used = None
        if ctx is None:
            weights = self.spec.weights(q @ k.transpose(-1, -2), mask, bias)
            used = self.dropout_module(weights)  # what the output is made of (training: dropped out)
            ctx = used @ v
        if group > 1:
            ctx = ctx.view(kv_bsz, heads, group, tgt_len, head_dim).transpose(1, 2)
            if weights is not None:
                weights, used = (self._unfold(w, kv_bsz, group, bsz, tgt_len, src_len) for w in (weights, used))
        z = ctx.reshape(bsz, heads, tgt_len, head_dim).permute(2, 0, 1, 3).reshape(tgt_len, bsz, embed_dim)
        out = self.out_proj(self.head_norm(z))
        if self.recorder is not None:  # the weights the output used: Σ_j vectors + bias == out, dropout or not
            self.recorder(self, used, v, z, out, key_padding_mask)
        if not need_weights or weights is None:
            return out, None
        weights = weights.float().transpose(0, 1)  # (H, B, T, S), fairseq's layout
        return out, (weights if need_head_weights else weights.mean(dim=0))

    def _fused_path(self, device: torch.device, tgt_len: int, dropout_p: float) -> Optional[str]:
        """The fused kernel for a call that needs no weights (``"sdpa"``, ``"rela"``, ``"adasplash"``), or
        None for the eager path.  ``auto``: SDPA for softmax everywhere; ReLA's Triton kernel on CUDA,
        except one-query steps (incremental decoding stays eager); AdaSplash on CUDA where installed and
        without attention dropout (it has none).  ``fused`` also runs ReLA's kernel under
        ``TRITON_INTERPRET=1`` on the CPU (tests); elsewhere on the CPU it warns once and runs eager.
        ``eager``: never."""
        if self.kernel == "eager":
            return None
        if self.spec.fused_sdpa:
            return "sdpa"
        if self.activation == "rela":
            if self.kernel == "fused":
                if kernels.triton_runs_on(device):
                    return "rela"
                kernels.warn_eager_instead(device.type)  # not silent: the user asked for the kernel
                return None
            return "rela" if device.type == "cuda" and tgt_len > 1 and kernels.triton_available() else None
        if self.activation in sparse.ALPHAS and device.type == "cuda" and dropout_p == 0.0 and sparse.available():
            return "adasplash"
        return None

    def _heads(self, x: Tensor) -> Tensor:
        """(len, batch, embed) -> (batch, heads, len, head_dim)."""
        return x.view(x.size(0), x.size(1), self.num_heads, self.head_dim).permute(1, 2, 0, 3)

    def _project(
        self,
        query: Tensor,
        key: Optional[Tensor],
        value: Optional[Tensor],
        key_padding_mask: Optional[Tensor],
        incremental_state: IncrementalState,
        static_kv: bool,
    ) -> Tuple[Tensor, Tensor, Tensor, Optional[Tensor]]:
        """Scaled queries, keys and values (cached ones included), and the matching padding mask."""
        saved = self._get_input_buffer(incremental_state) if incremental_state is not None else None
        if saved is not None and static_kv and "prev_key" in saved:
            key = value = None  # encoder keys/values are cached after the first step
        elif self.self_attention:
            key = value = query
        elif self.encoder_decoder_attention and key is not None:
            value = key
            group = 1
            if incremental_state is not None and self._beam_copies(key, key_padding_mask, query.size(1)):
                group = self.beam_size
                key = value = key.view(key.size(0), -1, self.beam_size, key.size(2))[:, :, 0, :]
                if key_padding_mask is not None:
                    key_padding_mask = key_padding_mask.view(-1, self.beam_size, key_padding_mask.size(1))[:, 0]
        q = self._heads(self.q_proj(query) * self.scaling)
        k = v = None
        if key is not None:
            k, v = self._heads(self.k_proj(key)), self._heads(self.v_proj(value))
        if saved is not None:
            if "prev_key" in saved:
                prev_k, prev_v = saved["prev_key"], saved["prev_value"]
                if static_kv:
                    k, v = prev_k, prev_v
                else:
                    k, v = torch.cat([prev_k, k], dim=2), torch.cat([prev_v, v], dim=2)
            key_padding_mask = MultiheadAttention._append_prev_key_padding_mask(
                key_padding_mask=key_padding_mask,
                prev_key_padding_mask=saved.get("prev_key_padding_mask"),
                batch_size=k.size(0),
                src_len=k.size(2),
                static_kv=static_kv,
            )
            saved["prev_key"], saved["prev_value"], saved["prev_key_padding_mask"] = k, v, key_padding_mask
            if self.encoder_decoder_attention and key is not None:  # how many hypotheses share one entry
                saved["beam_group"] = torch.tensor(group)
            self._set_input_buffer(incremental_state, saved)
        if key_padding_mask is not None and key_padding_mask.dim() == 0:
            key_padding_mask = None
        return q, k, v, key_padding_mask

    def reorder_incremental_state(self, incremental_state, new_order: Tensor):
        """fairseq's reordering, but shared cross-attention entries are told apart from per-hypothesis
        ones by what was stored (``beam_group``), not by the current ``beam_size``."""
        saved = self._get_input_buffer(incremental_state)
        if not self.encoder_decoder_attention or "beam_group" not in saved:
            return super().reorder_incremental_state(incremental_state, new_order)
        group = int(saved["beam_group"])
        for name in ("prev_key", "prev_value", "prev_key_padding_mask"):
            t = saved.get(name)
            if t is None:
                continue
            if group == 1:
                saved[name] = t.index_select(0, new_order)
            elif t.size(0) * group != new_order.size(0):  # sentences finished: keep the remaining ones
                saved[name] = t.index_select(0, new_order.reshape(-1, group)[:, 0] // group)
        return self._set_input_buffer(incremental_state, saved)

    def _beam_copies(self, key: Tensor, key_padding_mask: Optional[Tensor], bsz: int) -> bool:
        """Whether the encoder states are ``beam_size`` copies of each sentence's (as fairseq's beam
        search makes them), so they can be projected once and shared: checked, never assumed, so a
        stale ``set_beam_size`` cannot fold unrelated sentences together."""
        beam = self.beam_size
        if beam <= 1 or key.size(1) != bsz or bsz % beam:
            return False
        grouped = key.view(key.size(0), -1, beam, key.size(2))
        if not torch.equal(grouped, grouped[:, :, :1].expand_as(grouped)):
            return False
        if key_padding_mask is None:
            return True
        pads = key_padding_mask.view(-1, beam, key_padding_mask.size(1))
        return torch.equal(pads, pads[:, :1].expand_as(pads))

    @staticmethod
    def _unfold(w: Tensor, kv_bsz: int, group: int, bsz: int, tgt_len: int, src_len: int) -> Tensor:
        """(B', H, group*T, S) -> (B'*group, H, T, S): undo the beam folding of the queries."""
        heads = w.size(1)
        return w.view(kv_bsz, heads, group, tgt_len, src_len).transpose(1, 2).reshape(bsz, heads, tgt_len, src_len)

    @staticmethod
    def _mask(
        key_padding_mask: Optional[Tensor], attn_mask: Optional[Tensor], group: int
    ) -> Tuple[Optional[Tensor], Optional[Tensor]]:
        """A boolean mask ``(B|1, 1, T, S)`` (True = may not be attended; never ``(B,H,T,S)``) and an
        additive float bias ``(1, 1, T, S)`` (0 where blocked) for a float ``attn_mask``, else None.

        fairseq's float ``attn_mask`` is added to the scores: an entry ``<= BLOCKED`` (``-inf``, or the
        ``-1e8`` / ``-1e4`` fairseq's encoder layer writes for a 0/1 mask) blocks the position, as
        ``exp(s - 1e4)`` underflows to an exact 0 in stock softmax; for ReLA (multiplicative mask, as the
        authors') and sparsemax/entmax a blocked weight is exactly 0 too.  The other entries are a bias
        added to the scores before the activation (before ReLA's ReLU).  The values are never inspected
        on the host (no synchronisation): an all-zero bias is added like any other.  A query whose every
        position is blocked attends nowhere: weights 0, output ``W_O N(0) + b_O``, on every path.
        """
        mask = bias = None
        if key_padding_mask is not None:
            mask = key_padding_mask.bool()[:, None, None, :]
        if attn_mask is not None:
            if attn_mask.is_floating_point():
                blocked = attn_mask <= BLOCKED
                bias = attn_mask.masked_fill(blocked, 0.0)
            else:
                blocked = attn_mask.bool()
            if group > 1:
                blocked = blocked.repeat(group, 1)
                bias = None if bias is None else bias.repeat(group, 1)
            blocked = blocked[None, None]
            bias = None if bias is None else bias[None, None]
            mask = blocked if mask is None else mask | blocked
        return mask, bias
