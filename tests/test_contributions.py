"""ALTI per block, rollout and ALTI+ (fairseq_rela/contributions.py, recorded by AttentionRecorder(block=True))
against an independent implementation of the authors' formulas (tests/reference.py) and their properties."""

import numpy as np
import pytest
import torch

from fairseq_rela.contributions import (
    LayerShares, ROLLOUT_SOURCES, alti, alti_plus, layer_shares, rollout, sentence_contributions,
)
from fairseq_rela.errors import OptionError
from fairseq_rela.models.conversion import as_rela_roberta, as_rela_transformer
from fairseq_rela.recording import AttentionRecorder, split_sentences
from tests.helpers import batch, build, build_mlm
from tests.reference import ref_alti_from_terms, ref_alti_plus, ref_stock_model_alti

pytestmark = pytest.mark.unit

PRE_NORM = ("--encoder-normalize-before", "--decoder-normalize-before")
MODELS = {  # id -> rela_transformer_tiny options
    "rela-g": ("--attention-activation", "rela", "--rela-variant", "g"),
    "rela-i": ("--attention-activation", "rela", "--rela-variant", "i"),
    "softmax": ("--attention-activation", "softmax"),
}
TINY = ("--encoder-embed-dim", "32", "--encoder-ffn-embed-dim", "64", "--encoder-layers", "2",
        "--encoder-attention-heads", "4", "--decoder-embed-dim", "32", "--decoder-ffn-embed-dim", "64",
        "--decoder-layers", "2", "--decoder-attention-heads", "4")




def _perturb(model):
    """Biases (0 at init) and LayerNorm gains away from 0 and 1, so that every bias term matters (seeded)."""
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "layer_norm" in name or name.endswith("bias"):
                p.add_(torch.randn(p.shape, generator=gen) * 0.3)
    return model


def _record(model, sample, **kw):
    rec = AttentionRecorder(model, block=True, **kw)
    with torch.no_grad(), rec:
        model(**sample["net_input"])
    return rec


def _sentences(task, model, sample):
    return list(split_sentences(sample, _record(model, sample), task.source_dictionary, task.target_dictionary))


def _with_residual(record):
    """(…, T, S[+1]) ALTI shares as the authors lay them out: cross-attention's residual as the last column."""
    a = torch.as_tensor(record.alti)
    return a if record.alti_residual is None else torch.cat([a, torch.as_tensor(record.alti_residual)[..., None]], -1)


@pytest.mark.parametrize("pre_norm", [False, True], ids=["post-norm", "pre-norm"])
@pytest.mark.parametrize("name", list(MODELS))
def test_alti_per_layer_equals_the_reference_formula(toy_data, name, pre_norm):
    """Every block of rela-g, rela-i and softmax models: the recorder's ALTI is the authors' formula applied
    loop by loop to the block's terms (whose sum is the block's real output: test_block.py), and its properties."""
    task, model = build(toy_data, *MODELS[name], *(PRE_NORM if pre_norm else ()))
    _perturb(model)
    sample = batch(task, 3)
    rec = _record(model, sample, keep_vectors=True)
    assert len(rec.records) == 6
    for (kind, layer), (r,) in rec.records.items():
        shares = _with_residual(r)
        assert (shares >= 0).all() and not torch.isnan(shares).any()
        torch.testing.assert_close(shares.sum(-1), torch.ones(shares.shape[:-1]), atol=1e-5, rtol=0)
        B, T, S, _ = r.block_vectors.shape
        for b in range(B):
            for i in range(T):
                terms = list(r.block_vectors[b, i]) + ([r.block_residual[b, i]] if kind == "cross" else [])
                output = sum(terms) + r.block_bias[b, i]
                expected = torch.tensor(ref_alti_from_terms(terms, output), dtype=torch.double)
                torch.testing.assert_close(shares[b, i].double(), expected, atol=1e-5, rtol=0)
        # keys the attention cannot reach (padding, the future) contribute nothing to real tokens
        if kind == "encoder_self" and r.key_padding_mask is not None:
            pad = r.key_padding_mask
            assert pad.any() and (r.alti[~pad[:, :, None] & pad[:, None, :]] == 0).all()
        if kind == "decoder_self":
            assert (r.alti.triu(1) == 0).all()


@pytest.mark.parametrize("stock", ["post-norm", "pre-norm"])
def test_alti_of_a_converted_stock_transformer_equals_the_authors_computation(toy_data, stock):
    """A stock fairseq `transformer`, converted: per-layer ALTI and ALTI+ equal the authors' procedure run
    independently on the stock model (its blocks' inputs, softmax weights, loops), sentence by sentence."""
    pre_norm = stock == "pre-norm"
    task, model = build(toy_data, "--arch", "transformer", *TINY, *(PRE_NORM if pre_norm else ()))
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.1)
    rela = as_rela_transformer(model)
    sample = batch(task, 2)
    sentences = _sentences(task, rela, sample)
    net = sample["net_input"]
    for b, sent in enumerate(sentences):
        src = net["src_tokens"][b][net["src_tokens"][b].ne(task.source_dictionary.pad())][None]
        prev = net["prev_output_tokens"][b][sample["target"][b].ne(task.target_dictionary.pad())][None]
        expected = ref_stock_model_alti(model, src, prev, pre_norm)
        for key, ref in expected.items():
            torch.testing.assert_close(_with_residual(sent.records[key]).double(), ref, atol=1e-5, rtol=0,
                                       msg=lambda m: f"{key}: {m}")
        got = sentence_contributions(sent.records, "alti")
        ref_plus = ref_alti_plus([expected[("encoder_self", i)] for i in range(2)],
                                 [expected[("decoder_self", i)] for i in range(2)],
                                 [expected[("cross", i)] for i in range(2)])
        np.testing.assert_allclose(got.decoder, ref_plus.numpy(), atol=1e-5)
        S = len(sent.src)
        np.testing.assert_allclose(got.source_share, ref_plus[-1, :, :S].sum(-1).numpy(), atol=1e-5)


@pytest.mark.parametrize("pre_norm", [False, True], ids=["post-norm", "pre-norm"])
@pytest.mark.parametrize("name", ["rela-g", "rela-i", "softmax"])
def test_alti_plus_equals_the_reference_and_shares_are_fractions(toy_data, name, pre_norm):
    task, model = build(toy_data, *MODELS[name], *(PRE_NORM if pre_norm else ()))
    _perturb(model)
    for sent in _sentences(task, model, batch(task, 3)):
        S, T = len(sent.src), len(sent.tgt_in)
        for source in [s for s in ROLLOUT_SOURCES if s != "value-zeroing"]:  # its own: tests/test_value_zeroing.py
            got = sentence_contributions(sent.records, source)
            assert got.encoder.shape == (2, S, S) and got.decoder.shape == (2, T, S + T)
            for matrix in (got.encoder, got.decoder):
                assert (matrix >= -1e-12).all()
                np.testing.assert_allclose(matrix.sum(-1), 1, atol=1e-6)
            assert ((got.source_share >= 0) & (got.source_share <= 1 + 1e-9)).all()
            np.testing.assert_allclose(got.source_share + got.target_share, 1, atol=1e-6)
            # the target prefix: position t takes nothing from later target tokens
            assert np.abs(np.triu(got.decoder[:, :, S:], 1)).max() == 0
        got = sentence_contributions(sent.records, "alti")
        per_layer = {k: _with_residual(r).double() for k, r in sent.records.items()}
        ref = ref_alti_plus([per_layer[("encoder_self", i)] for i in range(2)],
                            [per_layer[("decoder_self", i)] for i in range(2)],
                            [per_layer[("cross", i)] for i in range(2)])
        np.testing.assert_allclose(got.decoder, ref.numpy(), atol=1e-5)
        enc = per_layer[("encoder_self", 1)] @ per_layer[("encoder_self", 0)]
        np.testing.assert_allclose(got.encoder[-1], enc.numpy(), atol=1e-6)


@pytest.mark.parametrize("prenorm", [False, True], ids=["postnorm", "prenorm"])
def test_alti_and_rollout_of_a_roberta_encoder(mlm_data, prenorm):
    """An encoder-only model (fairseq's roberta, converted): per-layer ALTI equals the reference; the rollout
    has only the encoder."""
    task, stock = build_mlm(mlm_data, *(["--encoder-normalize-before"] if prenorm else []))
    model = _perturb(as_rela_roberta(stock))
    net_input = batch(task, 1)["net_input"]  # one sentence: no padding
    with torch.no_grad(), AttentionRecorder(model, keep_vectors=True, block=True) as rec:
        model(**net_input, features_only=True)
    records = {key: r for key, (r,) in rec.records.items()}
    assert sorted(records) == [("encoder_self", 0), ("encoder_self", 1)]
    for r in records.values():
        for i in range(r.alti.size(1)):
            terms = list(r.block_vectors[0, i])
            expected = ref_alti_from_terms(terms, sum(terms) + r.block_bias[0, i])
            torch.testing.assert_close(r.alti[0, i].double(), torch.tensor(expected, dtype=torch.double), atol=1e-5,
                                       rtol=0)
    got = sentence_contributions(records, "alti")
    S = net_input["src_tokens"].size(1)
    assert got.decoder is None and got.encoder.shape == (2, 1, S, S)
    np.testing.assert_allclose(got.encoder.sum(-1), 1, atol=1e-6)
    with pytest.raises(ValueError, match="encoder-only"):
        got.source_share


def test_rollout_sources_per_layer_match_their_definitions(toy_data):
    """weights: (Ŵ + I)/2 (Abnar & Zuidema; the authors' compute_rollout), cross: the residual as half;
    block: ‖T_i(x_j)‖ per row (the authors' "norm" rollout); alti: the recorded shares."""
    task, model = build(toy_data, *MODELS["rela-g"])
    (sent,) = _sentences(task, model, batch(task, 1))
    enc, cross = sent.records[("encoder_self", 0)], sent.records[("cross", 0)]
    w = enc.weights.mean(0)
    w = w / w.sum(-1, keepdims=True)
    np.testing.assert_allclose(layer_shares(enc, "weights").keys, (w + np.eye(len(w))) / 2, atol=1e-6)
    np.testing.assert_allclose(layer_shares(cross, "weights").residual, 0.5, atol=1e-6)
    n = enc.block_norm / enc.block_norm.sum(-1, keepdims=True)
    np.testing.assert_allclose(layer_shares(enc, "block").keys, n, atol=1e-6)
    total = cross.block_norm.sum(-1) + cross.block_residual_norm
    np.testing.assert_allclose(layer_shares(cross, "block").residual, cross.block_residual_norm / total, atol=1e-6)
    np.testing.assert_allclose(layer_shares(cross, "alti").keys, cross.alti)
    with pytest.raises(OptionError, match="rollout source: unknown value 'rollout'"):
        layer_shares(enc, "rollout")


def test_rollout_of_an_identity_model_is_the_identity(toy_data):
    """With every attention's values and output projection zeroed, the attention contributes nothing: each
    block's output is its residual's alone, so ALTI (and the block norms) roll out to the identity and the
    decoder's tokens owe nothing to the source."""
    assert np.array_equal(rollout([np.eye(4)] * 3), np.stack([np.eye(4)] * 3))
    task, model = build(toy_data, *MODELS["softmax"])
    with torch.no_grad():
        for name, p in model.named_parameters():
            if any(f"{a}.{proj}" in name for a in ("self_attn", "encoder_attn") for proj in ("v_proj", "out_proj")):
                p.zero_()
    for sent in _sentences(task, model, batch(task, 2)):
        S, T = len(sent.src), len(sent.tgt_in)
        for source in ("alti", "block"):
            got = sentence_contributions(sent.records, source)
            np.testing.assert_allclose(got.encoder, np.stack([np.eye(S)] * 2), atol=1e-6)
            expected = np.concatenate([np.zeros((T, S)), np.eye(T)], -1)
            np.testing.assert_allclose(got.decoder, np.stack([expected] * 2), atol=1e-6)
            np.testing.assert_allclose(got.source_share, 0, atol=1e-6)


@pytest.mark.parametrize("pre_norm", [False, True], ids=["post-norm", "pre-norm"])
def test_null_rela_rows_put_everything_on_the_residual(toy_data, pre_norm):
    """ReLA rows without any positive weight: the attention adds nothing, ALTI gives the residual (the query's
    own position, or cross-attention's decoder state) the whole row — no NaN."""
    task, model = build(toy_data, *MODELS["rela-i"], *(PRE_NORM if pre_norm else ()))
    _perturb(model)
    with torch.no_grad():  # all scores 0: relu(0) = 0, every row of these attentions is null
        for layer in (model.encoder.layers[0], model.decoder.layers[1]):
            for attn in (layer.self_attn, getattr(layer, "encoder_attn", None)):
                if attn is not None:
                    attn.k_proj.weight.zero_()
                    attn.k_proj.bias.zero_()
    for sent in _sentences(task, model, batch(task, 3)):
        for key in (("encoder_self", 0), ("decoder_self", 1), ("cross", 1)):
            r = sent.records[key]
            assert (r.weights == 0).all()
            if key[0] == "cross":
                assert (r.alti == 0).all() and (r.alti_residual == 1).all()
            else:
                np.testing.assert_array_equal(r.alti, np.eye(len(r.alti)))
        got = sentence_contributions(sent.records, "alti")
        assert not np.isnan(got.decoder).any() and not np.isnan(got.encoder).any()


def test_alti_degenerate_rows_by_hand():
    """d_ij = max(0, ‖y‖₁ − ‖y − T_j‖₁) written out; rows where the bias outweighs every term."""
    v = torch.tensor([[[[1.0, 0.0], [0.0, 2.0]]]])  # (1,1,2,2)
    bias = torch.tensor([[[0.5, -0.5]]])
    y = torch.tensor([1.5, 1.5])  # ‖y‖₁ = 3; ‖y − v0‖₁ = 0.5 + 1.5 = 2, ‖y − v1‖₁ = 1.5 + 0.5 = 2 -> d = 1, 1
    assert torch.equal(v.sum(2)[0, 0] + bias[0, 0], y)
    torch.testing.assert_close(alti(v, None, bias).keys, torch.tensor([[[0.5, 0.5]]]))
    # one non-zero term, outweighed by the bias: it still is the only contributor
    one = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])
    shares = alti(one, None, torch.tensor([[[-3.0, 0.0]]]))
    torch.testing.assert_close(shares.keys, torch.tensor([[[1.0, 0.0]]]))
    # two terms, both outweighed: undefined
    assert torch.isnan(alti(v, None, torch.tensor([[[-10.0, -10.0]]])).keys).all()
    # cross-attention: the residual is one more term
    res = torch.tensor([[[0.0, 0.0]]])
    shares = alti(one, res, torch.zeros(1, 1, 2))
    torch.testing.assert_close(shares.keys, torch.tensor([[[1.0, 0.0]]]))
    torch.testing.assert_close(shares.residual, torch.tensor([[0.0]]))


def test_alti_is_the_same_on_a_batch_in_chunks(toy_data, monkeypatch):
    """ALTI is computed in the block's bounded batch chunks, with or without kept vectors."""
    import fairseq_rela.recording as recording

    task, model = build(toy_data, *MODELS["rela-g"])
    sample = batch(task, 6)
    whole = _record(model, sample, keep_vectors=True)
    T, S, E = sample["target"].size(1), sample["net_input"]["src_tokens"].size(1), model.decoder.embed_dim
    monkeypatch.setattr(recording, "_CHUNK_FLOATS", 2 * T * S * E)
    chunked = _record(model, sample)
    for key, (a,) in whole.records.items():
        (b,) = chunked.records[key]
        assert b.block_vectors is None
        torch.testing.assert_close(b.alti, a.alti)
        if key[0] == "cross":
            torch.testing.assert_close(b.alti_residual, a.alti_residual)
        else:
            assert a.alti_residual is None and b.alti_residual is None


def test_rollout_errors(toy_data):
    task, model = build(toy_data, *MODELS["softmax"])
    sample = batch(task, 1)
    rec = AttentionRecorder(model, block=True, layers=[1])
    with torch.no_grad(), rec:
        model(**sample["net_input"])
    (sent,) = split_sentences(sample, rec, task.source_dictionary, task.target_dictionary)
    with pytest.raises(OptionError, match=r"encoder_self layers \[1\] were recorded"):
        sentence_contributions(sent.records, "alti")
    rec = AttentionRecorder(model)  # norms, no block
    with torch.no_grad(), rec:
        model(**sample["net_input"])
    (sent,) = split_sentences(sample, rec, task.source_dictionary, task.target_dictionary)
    with pytest.raises(OptionError, match="recorded without alti"):
        sentence_contributions(sent.records, "alti")
    assert sentence_contributions(sent.records, "norms").decoder.shape[0] == 2
    with pytest.raises(ValueError, match="one self and one cross"):
        alti_plus(np.eye(2), [LayerShares(np.eye(1))], [])
