"""Transformer layers and stacks whose attentions are :class:`ReLAMultiheadAttention`.

Subclassed at fairseq's seams (``build_self_attention``, ``build_encoder_attention``,
``build_encoder_layer``, ``build_decoder_layer``); everything else is stock fairseq.
"""
from typing import List, Optional

from fairseq.distributed import fsdp_wrap
from fairseq.models.transformer import TransformerConfig, TransformerDecoderBase, TransformerEncoderBase
from fairseq.modules.transformer_layer import TransformerDecoderLayerBase, TransformerEncoderLayerBase
from fairseq.modules.checkpoint_activations import checkpoint_wrapper
from torch import nn

from fairseq_rela.attention import ReLAMultiheadAttention
from fairseq_rela.config import AttentionOptions
from fairseq_rela.normalization import build_head_norm


def build_attention(cfg: TransformerConfig, kind: str, embed_dim: int, num_heads: int, **kwargs) -> ReLAMultiheadAttention:
    """The attention of one kind (``encoder_self``, ``decoder_self``, ``cross``) as the options ask."""
    options = AttentionOptions.from_args(cfg)
    activation = options.activation_for(kind)
    head_norm = build_head_norm(options.rela_norm, options.rela_variant, embed_dim, options.rela_gate_init) if activation == "rela" else None
    return ReLAMultiheadAttention(
        embed_dim, num_heads, activation=activation, head_norm=head_norm, kind=kind,
        dropout=cfg.attention_dropout, **kwargs,
    )


def wrap_layer(layer: nn.Module, cfg: TransformerConfig) -> nn.Module:
    """Activation checkpointing and FSDP wrapping, as fairseq's own stacks do."""
    if cfg.checkpoint_activations:
        layer = checkpoint_wrapper(layer, offload_to_cpu=cfg.offload_activations)
    return fsdp_wrap(layer, min_num_params=0 if cfg.checkpoint_activations else cfg.min_params_to_wrap)


class RelaEncoderLayer(TransformerEncoderLayerBase):
    def build_self_attention(self, embed_dim, cfg):
        return build_attention(
            cfg, "encoder_self", embed_dim, cfg.encoder.attention_heads, self_attention=True,
            q_noise=self.quant_noise, qn_block_size=self.quant_noise_block_size,
        )


class RelaDecoderLayer(TransformerDecoderLayerBase):
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
    """The decoder; :meth:`set_alignment` chooses what ``extra["attn"]`` reports (weights or norms,
    any layer, any heads) for alignment extraction at generation time."""

    alignment = None  # (source, layer, heads, recorder) once set_alignment was called

    def build_decoder_layer(self, cfg, no_encoder_attn=False):
        return wrap_layer(RelaDecoderLayer(cfg, no_encoder_attn), cfg)

    def set_alignment(self, source: str = "weights", layer: int = -1, heads: Optional[List[int]] = None) -> None:
        """Report cross-attention ``source`` ("weights": α averaged over ``heads``; "norms":
        ``‖Σ_h α^h f_h(x_j)‖`` over ``heads``) of decoder ``layer`` (negative: from the top)."""
        from fairseq_rela.analysis.records import AttentionRecorder

        if source not in ("weights", "norms"):
            raise ValueError(f"--alignment-source: unknown value {source!r}; choose weights or norms")
        n_layers, n_heads = len(self.layers), self.layers[0].encoder_attn.num_heads
        if not -n_layers <= layer < n_layers:
            raise ValueError(f"--alignment-layer {layer}: the decoder has layers 0..{n_layers - 1}")
        if heads is not None and not all(0 <= h < n_heads for h in heads):
            raise ValueError(f"--alignment-heads {','.join(map(str, heads))}: heads are 0..{n_heads - 1}")
        layer %= n_layers
        recorder = AttentionRecorder(self, kinds=("cross",), layers=[layer], norms=source == "norms", heads=heads)
        self.alignment = (source, layer, heads, recorder)

    def extract_features(self, prev_output_tokens, encoder_out=None, incremental_state=None, **kwargs):
        if self.alignment is None:
            return super().extract_features(prev_output_tokens, encoder_out, incremental_state, **kwargs)
        source, layer, heads, recorder = self.alignment
        recorder.clear()
        with recorder:
            x, extra = super().extract_features(prev_output_tokens, encoder_out, incremental_state, **kwargs)
        (record,) = recorder.records[("cross", layer)]
        if source == "norms":
            extra["attn"] = [record.summed_norm.to(x)]
        else:
            w = record.weights if heads is None else record.weights[:, heads]
            extra["attn"] = [w.mean(1).to(x)]
        return x, extra
