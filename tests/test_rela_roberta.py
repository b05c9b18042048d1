"""RelaRobertaModel (models/rela_roberta.py): fairseq's roberta with our attention in every encoder layer,
built through fairseq's seams; the recorder sees every layer and its norm decomposition is exact there:
Σ_j α_ij f(x_j) + b_O equals each attention's output (Kobayashi et al. 2020, eq. 5)."""
import pytest
import torch

from fairseq_rela.attention import ReLAMultiheadAttention
from fairseq_rela.models.conversion import as_rela_roberta
from fairseq_rela.models.rela_roberta import RelaRobertaModel
from fairseq_rela.recording import AttentionRecorder
from tests.helpers import batch, build_mlm

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("prenorm", [False, True], ids=["postnorm", "prenorm"])
def test_recorded_vectors_sum_to_every_attention_output(mlm_data, prenorm):
    task, stock = build_mlm(mlm_data, *(["--encoder-normalize-before"] if prenorm else []))
    model = as_rela_roberta(stock)
    net_input = batch(task)["net_input"]
    outputs = {}
    hooks = [m.register_forward_hook(lambda mod, inp, out, name=name: outputs.__setitem__(name, out[0]))
             for name, m in model.named_modules() if isinstance(m, ReLAMultiheadAttention)]
    with torch.no_grad(), AttentionRecorder(model, keep_vectors=True) as rec:
        model(**net_input, features_only=True)
    for h in hooks:
        h.remove()
    assert sorted(rec.records) == [("encoder_self", 0), ("encoder_self", 1)]
    assert sorted(outputs) == [f"encoder.sentence_encoder.layers.{i}.self_attn" for i in range(2)]
    pad = net_input["src_tokens"].eq(task.source_dictionary.pad())  # padding keys carry nothing
    for name, out in outputs.items():
        (r,) = rec.records[("encoder_self", int(name.split(".")[3]))]
        torch.testing.assert_close(r.vectors.sum(2) + r.bias, out.transpose(0, 1), atol=1e-5, rtol=1e-5)
        assert pad.any() and (r.weighted_norm[pad[:, None, None, :].expand_as(r.weighted_norm)] == 0).all()


def test_the_attention_follows_the_options(mlm_data):
    """Built from options (not only by conversion), the layers take --attention-activation like rela_transformer."""
    task, stock = build_mlm(mlm_data)
    args = stock.args
    args.attention_activation = "rela"
    model = RelaRobertaModel.build_model(args, task)
    attentions = [m for m in model.modules() if isinstance(m, ReLAMultiheadAttention)]
    assert len(attentions) == 2 and all(m.kind == "encoder_self" for m in attentions)
    assert model.attention_options.activation == "rela"
    assert list(model.state_dict()) != list(stock.state_dict())  # ReLA's head normaliser adds parameters


@pytest.mark.parametrize("prenorm", [False, True], ids=["postnorm", "prenorm"])
def test_block_contributions_sum_to_every_block_output(mlm_data, prenorm):
    """Kobayashi et al. 2021's own setting, a masked LM: attention + residual + LayerNorm decomposed
    exactly (the LayerNorm's output in post-norm, the residual sum before the FFN's LayerNorm in pre-norm)."""
    task, stock = build_mlm(mlm_data, *(["--encoder-normalize-before"] if prenorm else []))
    model = as_rela_roberta(stock)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "layer_norm" in name:
                p.add_(torch.randn_like(p) * 0.3)
    net_input = batch(task)["net_input"]
    outputs, hooks = {}, []
    for i, layer in enumerate(model.encoder.sentence_encoder.layers):
        if prenorm:
            hooks.append(layer.final_layer_norm.register_forward_pre_hook(
                lambda mod, args, i=i: outputs.__setitem__(i, args[0].transpose(0, 1))))
        else:
            hooks.append(layer.self_attn_layer_norm.register_forward_hook(
                lambda mod, args, out, i=i: outputs.__setitem__(i, out.transpose(0, 1))))
    with torch.no_grad(), AttentionRecorder(model, keep_vectors=True, block=True) as rec:
        model(**net_input, features_only=True)
    for h in hooks:
        h.remove()
    assert sorted(outputs) == [0, 1]
    for i, real in outputs.items():
        (r,) = rec.records[("encoder_self", i)]
        torch.testing.assert_close(r.block_vectors.sum(2) + r.block_bias, real, atol=2e-5, rtol=1e-4)
        ratio = r.mixing_ratio[..., 2]
        assert ((ratio >= 0) & (ratio <= 1)).all()
