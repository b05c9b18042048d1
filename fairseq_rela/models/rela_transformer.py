"""``rela_transformer``: fairseq's Transformer with a choice of attention activation.

Every option of ``--arch transformer`` still applies; ``--attention-activation`` (softmax, rela,
sparsemax, entmax15), ``--rela-variant``, ``--rela-norm`` and ``--attention-activation-in`` choose
the attention, so compared models differ in the attention function alone; ``--attention-kernel``
(auto, eager, fused) chooses only how it is computed.
"""

from fairseq.models import register_model, register_model_architecture
from fairseq.models.transformer import TransformerConfig, TransformerModel
from fairseq.models.transformer.transformer_legacy import base_architecture, transformer_iwslt_de_en

from fairseq_rela.attention import ReLAMultiheadAttention
from fairseq_rela.config import AttentionOptions, add_attention_args
from fairseq_rela.errors import StockCliError
from fairseq_rela.models.layers import RelaTransformerDecoder, RelaTransformerEncoder


@register_model("rela_transformer")
class RelaTransformerModel(TransformerModel):
    """Transformer (Vaswani et al. 2017) whose attentions are ReLA, softmax, sparsemax or 1.5-entmax."""

    @classmethod
    def hub_models(cls):
        return {}

    @classmethod
    def add_args(cls, parser):
        super().add_args(parser)
        add_attention_args(parser)

    @classmethod
    def build_model(cls, args, task):
        rela_base_architecture(args)
        model = super().build_model(args, task)
        model.set_attention_kernel(AttentionOptions.from_args(args).kernel)
        return model

    def load_state_dict(self, state_dict, strict=True, model_cfg=None, args=None):
        """fairseq's, after one check: parameters that differ only in the attention's head normaliser
        (ReLA-g's gate, ReLA-i's or a LayerNorm's gain) mean the checkpoint was trained with other attention
        options than the model was built with, e.g. resumed as ReLA-i under the stock ``--task translation``
        (which, unlike ``translation_rela``, never compares them).  That is one ``PROG: error:`` line, not
        fairseq's "Cannot load model parameters" traceback.  (Options that change no parameter, softmax
        against sparsemax, cannot be seen here.)"""
        if strict:
            ours, theirs = set(self.state_dict()), set(state_dict)
            differ = sorted(ours ^ theirs)
            if differ and all(".head_norm." in k for k in differ):
                key = differ[0]
                has = "the checkpoint has" if key in theirs else "the checkpoint lacks"
                raise StockCliError(
                    f"{has} {key} (and {len(differ) - 1} more "
                    "head-normaliser parameters): it was trained with other attention options (--rela-variant, "
                    "--rela-norm, --attention-activation, --attention-activation-in) than given now; pass the ones "
                    "it was trained with (with --task translation_rela a resume names them)")
        return super().load_state_dict(state_dict, strict=strict, model_cfg=model_cfg, args=args)

    @classmethod
    def build_encoder(cls, args, src_dict, embed_tokens):
        return RelaTransformerEncoder(TransformerConfig.from_namespace(args), src_dict, embed_tokens)

    @classmethod
    def build_decoder(cls, args, tgt_dict, embed_tokens):
        cfg = TransformerConfig.from_namespace(args)
        return RelaTransformerDecoder(cfg, tgt_dict, embed_tokens, no_encoder_attn=cfg.no_cross_attention)

    def set_beam_size(self, beam_size: int) -> None:
        """Called by fairseq's ``SequenceGenerator`` (``set_decoder_beam_size``); stock
        ``TransformerModel`` stops here, so pass it to the decoder: its cross-attentions then project
        the encoder states once per sentence and share them across the beam."""
        self.decoder.set_beam_size(beam_size)

    def set_attention_kernel(self, kernel: str) -> None:
        """``--attention-kernel`` (auto, eager, fused) for every attention: how, not what, is computed."""
        for module in self.modules():
            if isinstance(module, ReLAMultiheadAttention):
                module.kernel = kernel

    @property
    def attention_options(self) -> AttentionOptions:
        return AttentionOptions.from_args(self.args)


def _attention_defaults(args) -> None:
    """Fill ``--attention-activation`` (default rela) and reject bad combinations in one line."""
    args.attention_activation = getattr(args, "attention_activation", None) or "rela"
    try:
        AttentionOptions.from_args(args)
    except ValueError as err:  # architecture functions run while fairseq parses the command line
        raise StockCliError(str(err), prog="rela_transformer") from None


@register_model_architecture("rela_transformer", "rela_transformer")
def rela_base_architecture(args):
    """Transformer base (6+6 layers, 512/2048, 8 heads) with ReLA-g attention."""
    _attention_defaults(args)
    base_architecture(args)


@register_model_architecture("rela_transformer", "rela_transformer_wmt_en_de")
def rela_transformer_wmt_en_de(args):
    """The ReLA paper's WMT setup: Transformer base."""
    rela_base_architecture(args)


@register_model_architecture("rela_transformer", "rela_transformer_iwslt_de_en")
def rela_transformer_iwslt_de_en(args):
    """Kobayashi et al.'s setup: 6+6 layers, 512/1024, 4 heads."""
    _attention_defaults(args)
    transformer_iwslt_de_en(args)


@register_model_architecture("rela_transformer", "rela_transformer_tiny")
def rela_transformer_tiny(args):
    """2+2 layers, 64/128, 4 heads: for tests and the demo."""
    for name, value in (
        ("encoder_embed_dim", 64), ("encoder_ffn_embed_dim", 128), ("encoder_layers", 2),
        ("encoder_attention_heads", 4), ("decoder_layers", 2), ("decoder_attention_heads", 4),
    ):
        setattr(args, name, getattr(args, name, value))
    rela_base_architecture(args)
