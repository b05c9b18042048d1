"""Transformer layers and stacks whose attentions are :class:`ReLAMultiheadAttention`.

Subclassed at fairseq's seams (``build_self_attention``, ``build_encoder_attention``,
``build_encoder_layer``, ``build_decoder_layer``); everything else is stock fairseq.
"""
import contextlib
from typing import Iterator, Optional

from fairseq.distributed import fsdp_wrap
from fairseq.models.transformer import TransformerConfig, TransformerDecoderBase, TransformerEncoderBase
from fairseq.modules.transformer_layer import TransformerDecoderLayerBase, TransformerEncoderLayerBase
from fairseq.modules.checkpoint_activations import checkpoint_wrapper
from torch import nn

from fairseq_rela.attention import ReLAMultiheadAttention
from fairseq_rela.config import AttentionOptions
from fairseq_rela.errors import OptionError
from fairseq_rela.recording import AlignmentSource, AttentionRecorder


def build_attention(cfg: TransformerConfig, kind: str, embed_dim: int, num_heads: int, **kwargs) -> ReLAMultiheadAttention:
    """The attention of one kind (``encoder_self``, ``decoder_self``, ``cross``) as the options ask."""
    options = AttentionOptions.from_args(cfg)
    return ReLAMultiheadAttention(
        embed_dim, num_heads, activation=options.activation_for(kind), head_norm=options.head_norm_for(kind, embed_dim),
        kind=kind, dropout=cfg.attention_dropout, **kwargs,
    )


def wrap_layer(layer: nn.Module, cfg: TransformerConfig) -> nn.Module:
    """Activation checkpointing and FSDP wrapping, as fairseq's own stacks do."""
    if cfg.checkpoint_activations:
        layer = checkpoint_wrapper(layer, offload_to_cpu=cfg.offload_activations)
    return fsdp_wrap(layer, min_num_params=0 if cfg.checkpoint_activations else cfg.min_params_to_wrap)


class _ResidualTap:
    """A :class:`~fairseq_rela.block.ResidualTap`: reports each residual connection to
    ``residual_observer`` (the recorder's block decomposition) before making it."""

    residual_observer = None

    def residual_connection(self, x, residual):
        if self.residual_observer is not None:
            self.residual_observer(self, x, residual)
        return super().residual_connection(x, residual)


class RelaEncoderLayer(_ResidualTap, TransformerEncoderLayerBase):
    #: :class:`~fairseq_rela.value_zeroing.ZeroingLayer`: the ``forward`` arguments that carry the batch
    batch_axes = {"x": 1, "encoder_padding_mask": 0}

    def block_layer_norm(self, kind: str):
        return None if self.normalize_before else self.self_attn_layer_norm

    def build_self_attention(self, embed_dim, cfg):
        return build_attention(
            cfg, "encoder_self", embed_dim, cfg.encoder.attention_heads, self_attention=True,
            q_noise=self.quant_noise, qn_block_size=self.quant_noise_block_size,
        )


class RelaDecoderLayer(_ResidualTap, TransformerDecoderLayerBase):
    batch_axes = {"x": 1, "encoder_out": 1, "encoder_padding_mask": 0, "self_attn_padding_mask": 0}

    def block_layer_norm(self, kind: str):
        if kind == "decoder_self" and (self.attn_ln is not None or self.c_attn is not None):
            raise OptionError("block decomposition: NormFormer layers (--scale-attn, --scale-heads) scale the "
                              "self-attention between the attention and its residual; not supported")
        if kind == "decoder_self" and self.cross_self_attention:
            raise OptionError("block decomposition: --cross-self-attention layers are not supported")
        if self.normalize_before:
            return None
        return self.encoder_attn_layer_norm if kind == "cross" else self.self_attn_layer_norm

    def build_self_attention(self, embed_dim, cfg, add_bias_kv=False, add_zero_attn=False):
        return build_attention(
            cfg, "decoder_self", embed_dim, cfg.decoder.attention_heads,
            add_bias_kv=add_bias_kv, add_zero_attn=add_zero_attn, self_attention=not cfg.cross_self_attention,
            q_noise=self.quant_noise, qn_block_size=self.quant_noise_block_size,
        )

    def build_encoder_attention(self, embed_dim, cfg):
        return build_attention(
            cfg, "cross", embed_dim, cfg.decoder.attention_heads,
            kdim=cfg.encoder.embed_dim, vdim=cfg.encoder.embed_dim, encoder_decoder_attention=True,
            q_noise=self.quant_noise, qn_block_size=self.quant_noise_block_size,
        )


class RelaTransformerEncoder(TransformerEncoderBase):
    def build_encoder_layer(self, cfg):
        return wrap_layer(RelaEncoderLayer(cfg, return_fc=self.return_fc), cfg)


class RelaTransformerDecoder(TransformerDecoderBase):
    """The decoder; inside :meth:`reporting` its ``extra["attn"]`` is the matrix an
    :class:`~fairseq_rela.recording.AlignmentSource` names (weights, norms, block contributions, ALTI or
    value zeroing, any layer and heads), for alignment extraction at generation time."""

    _report: Optional[tuple] = None  # (layer, source, recorder) inside reporting()

    def build_decoder_layer(self, cfg, no_encoder_attn=False):
        return wrap_layer(RelaDecoderLayer(cfg, no_encoder_attn), cfg)

    def check_alignment(self, source: AlignmentSource) -> AlignmentSource:
        """``source`` with its layer made 0-based, or an OptionError naming the bad layer or head."""
        return source.resolve(len(self.layers), self.layers[0].encoder_attn.num_heads)

    @contextlib.contextmanager
    def reporting(self, source: AlignmentSource) -> Iterator[None]:
        """Within the block, report ``source`` as the cross-attention of every forward call."""
        source = self.check_alignment(source)
        recorder = AttentionRecorder(self, kinds=("cross",), layers=[source.layer], norms=source.needs_norms,
                                     heads=source.heads, block=source.needs_block,
                                     value_zeroing=source.needs_value_zeroing)
        self._report = (source, recorder)
        try:
            yield
        finally:
            self._report = None

    def extract_features(self, prev_output_tokens, encoder_out=None, incremental_state=None, **kwargs):
        if self._report is None:
            return super().extract_features(prev_output_tokens, encoder_out, incremental_state, **kwargs)
        source, recorder = self._report
        recorder.clear()
        with recorder:
            x, extra = super().extract_features(prev_output_tokens, encoder_out, incremental_state, **kwargs)
        (record,) = recorder.records[("cross", source.layer)]
        extra["attn"] = [record.matrix(source.source, source.heads).to(x)]
        return x, extra
