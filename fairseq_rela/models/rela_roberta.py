"""RoBERTa (fairseq's ``roberta`` masked LM) whose encoder layers are :class:`RelaEncoderLayer`.

Subclassed at fairseq's seams: :class:`RelaRobertaEncoder` overrides ``RobertaEncoder.build_encoder``
(the sentence encoder becomes a :class:`RelaTransformerEncoder`), and :class:`RelaRobertaModel`
builds that encoder in ``build_model``.  Every parameter and buffer keeps its name, so a stock
``roberta`` state dict loads with ``strict=True`` (:func:`fairseq_rela.models.conversion.as_rela_roberta`).
Not registered as a fairseq model: it exists to analyse trained ``roberta`` checkpoints.

Checkpoints converted from Hugging Face (:mod:`fairseq_rela.models.huggingface`) carry two more options:
``layer_norm_eps`` (BERT's 1e-12; fairseq builds every LayerNorm with 1e-5), applied here to every LayerNorm,
and ``mlm_head=False`` for a model converted without its MLM head, whose logits are refused.
"""
from fairseq.models.roberta.model import RobertaEncoder, RobertaModel, base_architecture
from fairseq.models.transformer import TransformerConfig
from fairseq.modules.transformer_sentence_encoder import init_bert_params
from fairseq.utils import safe_hasattr

from torch import nn

from fairseq_rela.config import AttentionOptions
from fairseq_rela.errors import OptionError
from fairseq_rela.models.layers import RelaTransformerEncoder

__all__ = ["RelaRobertaEncoder", "RelaRobertaModel"]


class RelaRobertaEncoder(RobertaEncoder):
    """RoBERTa's encoder (embeddings, sentence encoder, LM head) with our attention in every layer."""

    def build_encoder(self, args, dictionary, embed_tokens):
        encoder = RelaTransformerEncoder(TransformerConfig.from_namespace(args), dictionary, embed_tokens)
        encoder.apply(init_bert_params)
        return encoder


class RelaRobertaModel(RobertaModel):
    """A ``roberta`` model whose self-attentions are :class:`~fairseq_rela.attention.ReLAMultiheadAttention`
    (kind ``encoder_self``), with the activation ``args.attention_activation`` names (softmax by default)."""

    @classmethod
    def hub_models(cls):
        return {}

    @classmethod
    def build_model(cls, args, task):
        """As ``RobertaModel.build_model``, with :class:`RelaRobertaEncoder`."""
        base_architecture(args)
        if not safe_hasattr(args, "max_positions"):
            if not safe_hasattr(args, "tokens_per_sample"):
                args.tokens_per_sample = task.max_positions()
            args.max_positions = args.tokens_per_sample
        model = cls(args, RelaRobertaEncoder(args, task.source_dictionary))
        eps = getattr(args, "layer_norm_eps", None)
        if eps is not None:  # a converted Hugging Face model's ε, in every LayerNorm (embeddings, layers, LM head)
            for module in model.modules():
                if isinstance(module, nn.LayerNorm):
                    module.eps = float(eps)
        return model

    def forward(self, src_tokens, features_only=False, return_all_hiddens=False, classification_head_name=None,
                **kwargs):
        """fairseq's forward; logits of a model converted without an MLM head are an :class:`OptionError`."""
        if not features_only and classification_head_name is None and getattr(self.args, "mlm_head", True) is False:
            raise OptionError(f"{getattr(self.args, 'converted_from', 'this model')} was converted without an MLM "
                              "head: only its features (features_only=True) are defined")
        return super().forward(src_tokens, features_only, return_all_hiddens, classification_head_name, **kwargs)

    @property
    def attention_options(self) -> AttentionOptions:
        return AttentionOptions.from_args(self.args)
