"""The attention block decomposition (fairseq_rela/block.py, through AttentionRecorder(block=True))
against the layers' real outputs: Σ_j F_i(c_ij) + F_i(x_i) + bias == the block's output, read from
stock fairseq's forward (the LayerNorm after the residual, or the next LayerNorm's input in pre-norm)."""
import numpy as np
import pytest
import torch

from fairseq_rela.block import MIXING_LEVELS, decompose_block
from fairseq_rela.errors import OptionError
from fairseq_rela.recording import AlignmentSource, AttentionRecorder, split_sentences
from tests.helpers import batch, build
from tests.reference import ref_block_float64

ACTIVATIONS = ["softmax", "rela", "sparsemax", "entmax15"]
PRE_NORM = ("--encoder-normalize-before", "--decoder-normalize-before")


def _block_outputs(model, pre_norm: bool):
    """Hooks that capture each attention block's real output, keyed like the recorder's records."""
    outputs, hooks = {}, []

    def keep(key, post):
        def hook(module, args, out=None):
            outputs[key] = (out if post else args[0]).transpose(0, 1)
        return hook

    for side in ("encoder", "decoder"):
        for i, layer in enumerate(getattr(model, side).layers):
            if side == "encoder":
                blocks = [("encoder_self", layer.self_attn_layer_norm, layer.final_layer_norm)]
            else:
                blocks = [("decoder_self", layer.self_attn_layer_norm, layer.encoder_attn_layer_norm),
                          ("cross", layer.encoder_attn_layer_norm, layer.final_layer_norm)]
            for kind, post_ln, next_ln in blocks:
                if pre_norm:  # the block's output is the residual sum: the next LayerNorm's input
                    hooks.append(next_ln.register_forward_pre_hook(keep((kind, i), post=False)))
                else:
                    hooks.append(post_ln.register_forward_hook(keep((kind, i), post=True)))
    return outputs, hooks


def _kobayashi_mixing(contrib, own_index, residual):
    """Kobayashi et al. 2021's ratio, directly: ‖Σ_{j≠i} c_ij‖ / (‖Σ_{j≠i} c_ij‖ + ‖c_ii‖) (cross: the
    residual is the token's own part)."""
    out = []
    for i in range(contrib.shape[1]):
        if residual is None:
            own = contrib[:, i, own_index(i)]
            others = contrib[:, i].sum(1) - own
        else:
            own, others = residual[:, i], contrib[:, i].sum(1)
        m, k = others.norm(dim=-1), own.norm(dim=-1)
        out.append(m / (m + k))
    return torch.stack(out, 1)


@pytest.mark.unit
@pytest.mark.parametrize("pre_norm", [False, True], ids=["post-norm", "pre-norm"])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_block_contributions_sum_to_the_real_block_output(toy_data, activation, pre_norm):
    extra = ("--attention-activation", activation) + (PRE_NORM if pre_norm else ())
    task, model = build(toy_data, *extra)
    with torch.no_grad():  # LayerNorm gains and biases away from 1 and 0, so that they matter
        for name, p in model.named_parameters():
            if "layer_norm" in name:
                p.add_(torch.randn_like(p) * 0.3)
    sample = batch(task, 5)
    outputs, hooks = _block_outputs(model, pre_norm)
    with torch.no_grad(), AttentionRecorder(model, keep_vectors=True, block=True) as rec:
        model(**sample["net_input"])
    for h in hooks:
        h.remove()
    assert len(rec.records) == 6 and set(outputs) == set(rec.records)
    for (kind, layer), real in outputs.items():
        (r,) = rec.records[(kind, layer)]
        total = r.block_vectors.sum(2) + r.block_bias + (r.block_residual if kind == "cross" else 0)
        torch.testing.assert_close(total, real, atol=2e-5, rtol=1e-4)
        torch.testing.assert_close(r.block_norm, r.block_vectors.norm(dim=-1))
        if kind == "cross":
            torch.testing.assert_close(r.block_residual_norm, r.block_residual.norm(dim=-1))
        else:
            assert r.block_residual is None and r.block_residual_norm is None
        level = MIXING_LEVELS.index("block")
        expected = _kobayashi_mixing(r.block_vectors, lambda i: i, r.block_residual if kind == "cross" else None)
        torch.testing.assert_close(r.mixing_ratio[..., level], expected, atol=1e-5, rtol=1e-5)
        assert ((r.mixing_ratio[..., 1:] >= 0) & (r.mixing_ratio[..., 1:] <= 1)).all()
        if pre_norm:  # no LayerNorm after the residual: block level = residual level
            torch.testing.assert_close(r.mixing_ratio[..., 2], r.mixing_ratio[..., 1])
        if kind != "cross":  # the attention level: the attention's own vectors, without the residual
            expected = _kobayashi_mixing(r.vectors, lambda i: i, None)
            torch.testing.assert_close(r.mixing_ratio[..., 0], expected, atol=1e-5, rtol=1e-5)
        else:
            assert torch.isnan(r.mixing_ratio[..., 0]).all()


@pytest.mark.unit
def test_decompose_block_by_hand():
    """One query, two keys, a LayerNorm: the formula of Kobayashi et al. 2021 written out."""
    torch.manual_seed(0)
    E = 6
    v, b, x = torch.randn(1, 1, 2, E), torch.randn(E), torch.randn(1, 1, E)
    ln = torch.nn.LayerNorm(E)
    with torch.no_grad():
        ln.weight.uniform_(0.5, 1.5)
        ln.bias.uniform_(-1, 1)
    parts = decompose_block(v, b, x, self_offset=None, layer_norm=ln, keep_vectors=True)
    u = v[0, 0].sum(0) + b + x[0, 0]
    s = torch.sqrt(u.var(unbiased=False) + ln.eps)
    for j in range(2):
        c = v[0, 0, j]
        torch.testing.assert_close(parts.vectors[0, 0, j], ln.weight * (c - c.mean()) / s)
    torch.testing.assert_close(parts.residual[0, 0], ln.weight * (x[0, 0] - x[0, 0].mean()) / s)
    torch.testing.assert_close(parts.bias[0, 0], ln.weight * (b - b.mean()) / s + ln.bias)
    torch.testing.assert_close(parts.vectors[0, 0].sum(0) + parts.residual[0, 0] + parts.bias[0, 0],
                               ln(u[None])[0].detach())


@pytest.mark.unit
@pytest.mark.parametrize("overwrite", [False, True], ids=["copy", "in-place"])
@pytest.mark.parametrize("layer_norm", [True, False], ids=["post-norm", "pre-norm"])
@pytest.mark.parametrize("kind", ["self", "decoder-step", "cross"])
def test_decompose_block_within_float32_rounding_of_a_float64_reference(kind, layer_norm, overwrite):
    """decompose_block sums before F_i (linear) and reads the vectors in place; the float64 reference
    (tests/reference.py) transforms every term first: the same up to float32 rounding, zero terms included."""
    torch.manual_seed(1)
    B, T, S, E = 3, 5, 7 if kind != "self" else 5, 48
    v = torch.randn(B, T, S, E) * torch.rand(B, T, S, 1)
    v[:, :, 1] = 0  # a key no head attends (ReLA's zeros, the causal mask)
    v[0, 2, 3] = 2.0  # a constant term: F_i makes it exactly 0
    x, b = torch.randn(B, T, E) * 2 + 0.5, torch.randn(E) * 0.1
    v[1, 3, 2], x[1, 3] = -0.3 * torch.rand(E) - 0.1, -torch.rand(E) - 4  # a term with no positive component
    ln = torch.nn.LayerNorm(E) if layer_norm else None
    if ln is not None:
        with torch.no_grad():
            ln.weight.uniform_(0.5, 1.5)
            ln.bias.uniform_(-0.5, 0.5)
    offset = {"self": 0, "decoder-step": S - T, "cross": None}[kind]
    original = v.clone()
    parts = decompose_block(v, b, x, offset, ln, overwrite=overwrite)
    ref = ref_block_float64(original, b, x, offset, ln)
    if not overwrite:
        assert torch.equal(v, original)
    torch.testing.assert_close(parts.norms.double(), ref["norms"], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(parts.mixing.double(), ref["mixing"], rtol=0, atol=1e-6, equal_nan=True)
    torch.testing.assert_close(parts.alti.double(), ref["alti"], rtol=0, atol=1e-5)
    if kind == "cross":
        torch.testing.assert_close(parts.residual_norm.double(), ref["residual_norm"], rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(parts.alti_residual.double(), ref["alti_residual"], rtol=0, atol=1e-5)


@pytest.mark.unit
@pytest.mark.parametrize("source", ["block", "norms", "weights"])
def test_block_matrix_is_the_same_on_a_batch_and_on_its_sentences(toy_data, source):
    task, model = build(toy_data, "--attention-activation", "rela")
    sample = batch(task)
    rec = AttentionRecorder(model, block=True)
    with torch.no_grad(), rec:
        model(**sample["net_input"])
    sentences = list(split_sentences(sample, rec, task.source_dictionary, task.target_dictionary))
    src_keep = sample["net_input"]["src_tokens"].ne(task.source_dictionary.pad())
    tgt_len = sample["target"].ne(task.target_dictionary.pad()).sum(1)
    (batched,) = rec.records[("cross", 1)]
    for b, sent in enumerate(sentences):
        one = sent.records[("cross", 1)]
        full = batched.matrix(source)[b][: tgt_len[b]][:, src_keep[b]].numpy()
        np.testing.assert_allclose(one.matrix(source), full)
        np.testing.assert_allclose(one.mixing_ratio, batched.mixing_ratio[b][: tgt_len[b]].numpy())
        np.testing.assert_allclose(one.block_residual_norm, batched.block_residual_norm[b][: tgt_len[b]].numpy())
        enc = sent.records[("encoder_self", 0)]
        assert enc.block_norm.shape == (len(sent.src), len(sent.src)) and enc.mixing_ratio.shape == (len(sent.src), 3)


@pytest.mark.unit
def test_block_errors(toy_data):
    with pytest.raises(OptionError, match="--alignment-source block covers all heads"):
        AlignmentSource("block", heads=(0,))
    task, model = build(toy_data, "--attention-activation", "softmax")
    sample = batch(task)
    rec = AttentionRecorder(model, kinds=("cross",))
    with torch.no_grad(), rec:
        model(**sample["net_input"])
    with pytest.raises(OptionError, match="recorded without its block"):
        rec.records[("cross", 0)][0].matrix("block")
    model.train()
    with pytest.raises(RuntimeError, match="call model.eval"), AttentionRecorder(model, block=True):
        model(**sample["net_input"])
    model.eval()
    layer = model.decoder.layers[0]  # a NormFormer layer (--scale-attn): a LayerNorm between attention and residual
    layer.attn_ln = torch.nn.LayerNorm(layer.embed_dim)
    with pytest.raises(OptionError, match="NormFormer"):
        AttentionRecorder(model, kinds=("decoder_self",), block=True)
    AttentionRecorder(model, kinds=("cross", "encoder_self"), block=True)  # those blocks are plain
    class Bare(torch.nn.Module):  # our attention outside a fairseq-rela layer
        def __init__(self):
            super().__init__()
            from fairseq_rela.attention import ReLAMultiheadAttention

            self.attn = ReLAMultiheadAttention(8, 2, self_attention=True)

    with pytest.raises(OptionError, match="does not report its residual"):
        AttentionRecorder(Bare(), block=True)


@pytest.mark.e2e  # steps the decoder token by token: too slow for unit on a loaded CPU
@pytest.mark.parametrize("pre_norm", [False, True], ids=["post-norm", "pre-norm"])
def test_decoder_reports_block_contributions_step_by_step_as_in_a_full_forward(toy_data, pre_norm):
    """fairseq-generate's path: decoder.reporting(block) in incremental decoding (one query per step)
    gives each step the row a teacher-forced full forward gives."""
    task, model = build(toy_data, "--attention-activation", "rela", *(PRE_NORM if pre_norm else ()))
    sample = batch(task, 4)
    net = sample["net_input"]
    source = AlignmentSource("block", layer=0)
    with torch.no_grad(), model.decoder.reporting(source):
        enc = model.encoder(net["src_tokens"], src_lengths=net["src_lengths"])
        _, full = model.decoder(net["prev_output_tokens"], encoder_out=enc)
        state, rows = {}, []
        for t in range(net["prev_output_tokens"].size(1)):
            _, extra = model.decoder(net["prev_output_tokens"][:, : t + 1], encoder_out=enc, incremental_state=state)
            rows.append(extra["attn"][0])
    rec = AttentionRecorder(model, kinds=("cross",), layers=[0], block=True)
    with torch.no_grad(), rec:
        model(**net)
    (r,) = rec.records[("cross", 0)]
    torch.testing.assert_close(full["attn"][0], r.block_norm)
    real = net["prev_output_tokens"].ne(task.target_dictionary.pad())
    torch.testing.assert_close(torch.cat(rows, 1)[real], r.block_norm[real], atol=1e-5, rtol=1e-4)
    if pre_norm:  # no LayerNorm after the residual, which is not a source token: the source terms are the norms
        torch.testing.assert_close(r.block_norm, r.matrix("norms"))
    else:  # the LayerNorm rescales each row and reweighs the dimensions
        assert not torch.allclose(r.block_norm, r.matrix("norms"))


@pytest.mark.unit
def test_block_is_computed_in_bounded_chunks_with_the_same_result(toy_data, monkeypatch):
    """The block needs (batch, T, S, E) vectors: made a few sentences at a time (beam groups kept whole)."""
    import fairseq_rela.recording as recording

    task, model = build(toy_data, "--attention-activation", "rela")
    sample = batch(task, 6)
    whole = AttentionRecorder(model, block=True)
    with torch.no_grad(), whole:
        model(**sample["net_input"])
    T, S, E = sample["target"].size(1), sample["net_input"]["src_tokens"].size(1), model.decoder.embed_dim
    monkeypatch.setattr(recording, "_CHUNK_FLOATS", 2 * T * S * E)  # two sentences per chunk
    chunked = AttentionRecorder(model, block=True)
    with torch.no_grad(), chunked:
        model(**sample["net_input"])
    for key, (a,) in whole.records.items():
        (b,) = chunked.records[key]
        for name in ("block_norm", "mixing_ratio") + (("block_residual_norm",) if key[0] == "cross" else ()):
            torch.testing.assert_close(getattr(b, name), getattr(a, name), equal_nan=True)
    with pytest.raises(OptionError, match="covers all heads"):
        AttentionRecorder(model, block=True, heads=[0])


@pytest.mark.unit
@pytest.mark.parametrize("extra", [("--attention-activation", "rela", "--rela-variant", "g"),
                                   ("--attention-activation", "softmax")], ids=["rela-g", "softmax"])
def test_block_recorder_reports_the_attention_norms_of_a_plain_recorder(toy_data, monkeypatch, extra):
    """With block=True the attention's own norms and vectors come from the chunked block pass; they
    equal those of a recorder without the block (rela-g: the query-dependent path; softmax: the Gram path)."""
    import fairseq_rela.recording as recording

    task, model = build(toy_data, *extra)
    sample = batch(task, 6)
    plain = AttentionRecorder(model, keep_vectors=True)
    with torch.no_grad(), plain:
        model(**sample["net_input"])
    T, S, E = sample["target"].size(1), sample["net_input"]["src_tokens"].size(1), model.decoder.embed_dim
    monkeypatch.setattr(recording, "_CHUNK_FLOATS", 4 * T * S * E)  # chunks of four and two sentences
    for keep in (True, False):
        blocked = AttentionRecorder(model, keep_vectors=keep, block=True)
        with torch.no_grad(), blocked:
            model(**sample["net_input"])
        assert set(blocked.records) == set(plain.records)
        for key, (a,) in plain.records.items():
            (b,) = blocked.records[key]
            for name in ("fx_norm", "weighted_norm", "summed_norm", "bias") + (("vectors",) if keep else ()):
                torch.testing.assert_close(getattr(b, name), getattr(a, name), atol=1e-5, rtol=1e-5)
            assert keep or b.vectors is None


@pytest.mark.unit
@pytest.mark.parametrize("pre_norm", [False, True], ids=["post-norm", "pre-norm"])
def test_decoder_self_block_recorded_step_by_step_equals_the_full_pass(toy_data, pre_norm):
    """Incremental decoding records decoder self-attention with S keys and one query (T=1): the query is
    key S-1, where the residual joins.  Each step's record is the row the teacher-forced pass records."""
    task, model = build(toy_data, "--attention-activation", "rela", *(PRE_NORM if pre_norm else ()))
    sample = batch(task, 3)
    prev = sample["net_input"]["prev_output_tokens"]
    full = AttentionRecorder(model, kinds=("decoder_self",), block=True)
    steps = AttentionRecorder(model, kinds=("decoder_self",), block=True)
    with torch.no_grad():
        enc = model.encoder(sample["net_input"]["src_tokens"], src_lengths=sample["net_input"]["src_lengths"])
        with full:
            model.decoder(prev, encoder_out=enc)
        state = {}
        with steps:
            for t in range(prev.size(1)):
                model.decoder(prev[:, : t + 1], encoder_out=enc, incremental_state=state)
    real = prev.ne(task.target_dictionary.pad())  # right-padded: a real step's keys are all real
    for layer in range(2):
        (whole,) = full.records[("decoder_self", layer)]
        records = steps.records[("decoder_self", layer)]
        assert len(records) == prev.size(1)
        for t, r in enumerate(records):
            assert r.block_norm.shape == (prev.size(0), 1, t + 1)
            keep = real[:, t]
            torch.testing.assert_close(r.block_norm[keep, 0], whole.block_norm[keep, t, : t + 1], atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(r.mixing_ratio[keep, 0], whole.mixing_ratio[keep, t], atol=1e-5, rtol=1e-4)
            # the future keys are masked: they carry nothing in the full pass
            assert (whole.block_norm[keep, t, t + 1:] == 0).all()


@pytest.mark.unit
@pytest.mark.parametrize("chunk", [4, 12], ids=["chunk-4", "chunk-12"])
def test_beam_shared_cross_attention_block_in_chunks_equals_unshared(toy_data, monkeypatch, chunk):
    """Beam search shares a sentence's cross-attention keys and values among its hypotheses (values
    (B/beam, ...)): the block is decomposed in chunks of whole beam groups, each with its own sentence's
    values, and equals the decomposition without sharing."""
    import fairseq_rela.recording as recording

    task, model = build(toy_data, "--attention-activation", "rela")
    sample, beam = batch(task, 3), 4
    net = sample["net_input"]
    order = torch.arange(3).repeat_interleave(beam)  # each sentence's beam, as fairseq's generator expands it
    steps = torch.stack([torch.full((12,), task.target_dictionary.eos()),
                         torch.randint(task.target_dictionary.nspecial, len(task.target_dictionary), (12,),
                                       generator=torch.Generator().manual_seed(0))], 1)  # hypotheses differ

    def second_step(beam_size):
        model.set_beam_size(beam_size)
        rec, state = AttentionRecorder(model, kinds=("cross",), layers=[1], block=True), {}
        with torch.no_grad(), rec:
            enc = model.encoder.reorder_encoder_out(model.encoder(net["src_tokens"], src_lengths=net["src_lengths"]),
                                                    order)
            for t in range(2):
                model.decoder(steps[:, : t + 1], encoder_out=enc, incremental_state=state)
        cached = model.decoder.layers[1].encoder_attn._get_input_buffer(state)["prev_key"]
        assert cached.size(0) == 12 // beam_size  # keys projected once per sentence when shared
        return rec.records[("cross", 1)][-1]

    T, S, E = 1, net["src_tokens"].size(1), model.decoder.embed_dim
    unshared = second_step(1)
    monkeypatch.setattr(recording, "_CHUNK_FLOATS", chunk * T * S * E)
    shared = second_step(beam)
    for name in ("block_norm", "block_residual_norm", "mixing_ratio", "summed_norm", "weights"):
        torch.testing.assert_close(getattr(shared, name), getattr(unshared, name), atol=1e-5, rtol=1e-4,
                                   equal_nan=True)
