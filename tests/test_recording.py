"""The recorder and the norm decomposition (analysis/records.py: AttentionRecorder, decompose) against the
layers' real outputs (Σ_j Σ_h α f + b == y)."""
import pytest
import torch

from fairseq_rela.recording import AttentionRecorder
from fairseq_rela.attention import ReLAMultiheadAttention
from fairseq_rela.normalization import build_head_norm
from tests.helpers import batch as batch_of, build

pytestmark = pytest.mark.unit

E, H = 16, 4
ACTIVATIONS = ["softmax", "rela", "sparsemax", "entmax15"]


@pytest.mark.parametrize("norm", ["rms-g", "rms-i", "layer-g", "none-g"])
@pytest.mark.parametrize("self_attention", [True, False])
def test_module_decomposition_is_exact(norm, self_attention):
    torch.manual_seed(3)
    n, variant = norm.split("-")
    mha = ReLAMultiheadAttention(E, H, activation="rela", head_norm=build_head_norm(n, variant, E),
                                 self_attention=self_attention, encoder_decoder_attention=not self_attention,
                                 kind="encoder_self" if self_attention else "cross").eval()
    with torch.no_grad():
        for p in mha.head_norm.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    q, k = torch.randn(5, 2, E), torch.randn(7, 2, E)
    pad = torch.zeros(2, 7, dtype=torch.bool)
    pad[0, :2] = True
    with AttentionRecorder(mha, keep_vectors=True) as rec:
        if self_attention:
            out, _ = mha(q, q, q)
        else:
            out, _ = mha(q, k, k, key_padding_mask=pad)
    (r,) = rec.records[(mha.kind, 0)]
    torch.testing.assert_close(r.vectors.sum(2) + r.bias, out.transpose(0, 1), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(r.summed_norm, r.vectors.norm(dim=-1))
    if not self_attention:
        assert (r.weighted_norm[0, :, :, :2] == 0).all()  # padding carries nothing
    assert mha.recorder is None  # switched off after the context


def test_softmax_fx_norm_equals_direct_formula():
    """‖f_h(x_j)‖ = ‖(x_j W_V^h + b_V^h) W_O^h‖, computed head by head from the raw keys."""
    torch.manual_seed(4)
    mha = ReLAMultiheadAttention(E, H, encoder_decoder_attention=True, kind="cross").eval()
    q, k = torch.randn(3, 2, E), torch.randn(6, 2, E)
    with AttentionRecorder(mha) as rec:
        mha(q, k, k)
    r = rec.records[("cross", 0)][0]
    d = E // H
    for b in range(2):
        for h in range(H):
            for j in range(6):
                v = (k[j, b] @ mha.v_proj.weight.T + mha.v_proj.bias)[h * d:(h + 1) * d]
                f = v @ mha.out_proj.weight[:, h * d:(h + 1) * d].T
                torch.testing.assert_close(r.fx_norm[b, h, 0, j], f.norm(), atol=1e-5, rtol=1e-5)
                torch.testing.assert_close(r.weighted_norm[b, h, :, j], r.weights[b, h, :, j] * f.norm(),
                                           atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_model_decomposition_is_exact_for_every_attention(toy_data, activation):
    task, model = build(toy_data, "--attention-activation", activation)
    ds = task.dataset("valid") if "valid" in task.datasets else (task.load_dataset("valid") or task.dataset("valid"))
    sample = ds.collater([ds[i] for i in range(5)])
    outputs = {}
    hooks = [m.register_forward_hook(lambda mod, inp, out, name=name: outputs.__setitem__(name, out[0]))
             for name, m in model.named_modules() if isinstance(m, ReLAMultiheadAttention)]
    with AttentionRecorder(model, keep_vectors=True) as rec:
        model(**sample["net_input"])
    for h in hooks:
        h.remove()
    assert len(rec.records) == 6
    for name, out in outputs.items():
        kind = {"self_attn": "encoder_self" if name.startswith("encoder") else "decoder_self",
                "encoder_attn": "cross"}[name.split(".")[-1]]
        (r,) = rec.records[(kind, int(name.split(".")[2]))]
        torch.testing.assert_close(r.vectors.sum(2) + r.bias, out.transpose(0, 1), atol=1e-5, rtol=1e-5)


def test_recorder_refuses_a_model_without_our_attention():
    with pytest.raises(ValueError, match="no ReLAMultiheadAttention"):
        AttentionRecorder(torch.nn.Linear(2, 2))


@pytest.mark.parametrize("norm", ["rms-g", "rms-i", "layer-g", "none-g"])
def test_single_head_summed_norm_equals_that_heads_weighted_norm(norm):
    from fairseq_rela.recording import decompose

    torch.manual_seed(5)
    n, variant = norm.split("-")
    mha = ReLAMultiheadAttention(E, H, activation="rela", head_norm=build_head_norm(n, variant, E),
                                 encoder_decoder_attention=True, kind="cross").eval()
    captured = {}
    mha.recorder = lambda m, w, v, z, out, kpm: captured.update(w=w, v=v, z=z)
    mha(torch.randn(4, 2, E), torch.randn(6, 2, E), torch.randn(6, 2, E))
    for h in range(H):
        _, weighted, summed, _, _ = decompose(mha, captured["w"], captured["v"], captured["z"], heads=[h])
        torch.testing.assert_close(summed, weighted[:, h], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_decomposition_is_exact_in_training_mode_with_attention_dropout(activation):
    """The recorder gets the weights after attention dropout: what the output was made of."""
    torch.manual_seed(4)
    norm = build_head_norm("rms", "g", E) if activation == "rela" else None
    mha = ReLAMultiheadAttention(E, H, activation=activation, head_norm=norm, self_attention=True,
                                 dropout=0.5, kind="encoder_self").train()
    q = torch.randn(6, 2, E)
    with AttentionRecorder(mha, keep_vectors=True) as rec:
        out, w = mha(q, q, q)
    (r,) = rec.records[("encoder_self", 0)]
    torch.testing.assert_close(r.vectors.sum(2) + r.bias, out.transpose(0, 1), atol=1e-5, rtol=1e-5)
    dropped = (r.weights == 0) & (w.unsqueeze(0) > 0).expand(H, -1, -1, -1).transpose(0, 1)
    assert dropped.any()  # dropout really acted on what was recorded


@pytest.mark.parametrize("activation", ["softmax", "rela"])
def test_record_matrix_is_the_same_on_a_batch_and_on_its_sentences(toy_data, activation):
    """AttentionRecord.matrix (the one alignment-source function): on the recorder's batched torch
    record (what fairseq-generate reads) and on each sentence's numpy record (what the sweep reads)."""
    from fairseq_rela.recording import split_sentences
    from tests.helpers import batch

    task, model = build(toy_data, "--attention-activation", activation)
    sample = batch(task)
    rec = AttentionRecorder(model, kinds=("cross",))
    with torch.no_grad(), rec:
        model(**sample["net_input"])
    sentences = list(split_sentences(sample, rec, task.source_dictionary, task.target_dictionary))
    src_pad = sample["net_input"]["src_tokens"].ne(task.source_dictionary.pad())
    tgt_len = sample["target"].ne(task.target_dictionary.pad()).sum(1)
    for layer in range(2):
        (batched,) = rec.records[("cross", layer)]
        for b, sent in enumerate(sentences):
            one = sent.records[("cross", layer)]
            for source, heads in (("weights", None), ("weights", [1]), ("weights", [0, 2]), ("norms", None),
                                  ("norms", [3])):
                full = batched.matrix(source, heads)[b][: tgt_len[b]][:, src_pad[b]].numpy()
                assert full.shape == one.matrix(source, heads).shape
                torch.testing.assert_close(torch.from_numpy(one.matrix(source, heads)), torch.from_numpy(full))
            # weights over heads = the heads' mean; norms of one head = ‖α^h f_h‖
            torch.testing.assert_close(torch.from_numpy(one.matrix("weights")), torch.from_numpy(one.weights.mean(0)))
            torch.testing.assert_close(torch.from_numpy(one.matrix("norms", [3])), torch.from_numpy(one.weighted_norm[3]))
    with pytest.raises(ValueError, match="heads \\(0, 2\\) were not recorded"):
        batched.matrix("norms", [0, 2])
    with pytest.raises(ValueError, match="--alignment-source: unknown value 'attn'"):
        batched.matrix("attn")
    only_weights = AttentionRecorder(model, kinds=("cross",), norms=False)
    with torch.no_grad(), only_weights:
        model(**sample["net_input"])
    with pytest.raises(ValueError, match="recorded without norms"):
        only_weights.records[("cross", 0)][0].matrix("norms")


def test_recorder_restricted_to_heads_sums_only_those(toy_data):
    task, model = build(toy_data, "--attention-activation", "rela")
    sample = batch_of(task)
    full, some = AttentionRecorder(model, kinds=("cross",)), AttentionRecorder(model, kinds=("cross",), heads=[0, 2])
    with torch.no_grad():
        with full:
            model(**sample["net_input"])
        with some:
            model(**sample["net_input"])
    (a,), (b,) = full.records[("cross", 1)], some.records[("cross", 1)]
    assert b.summed_heads == (0, 2) and a.summed_heads is None
    torch.testing.assert_close(b.matrix("weights", [0, 2]), a.matrix("weights", [0, 2]))
    torch.testing.assert_close(b.matrix("norms", [0, 2]), b.summed_norm)
    assert not torch.allclose(b.matrix("norms", [0, 2]), a.matrix("norms"))


def _block_sentences(toy_data, n=4):
    from fairseq_rela.recording import split_sentences

    task, model = build(toy_data, "--attention-activation", "rela")
    sample = batch_of(task, n)
    rec = AttentionRecorder(model, block=True)
    with torch.no_grad(), rec:
        model(**sample["net_input"])
    return list(split_sentences(sample, rec, task.source_dictionary, task.target_dictionary))


def test_alti_is_an_alignment_source_over_all_heads(toy_data):
    import numpy as np

    from fairseq_rela.errors import OptionError
    from fairseq_rela.recording import ALIGNMENT_SOURCES, AlignmentSource, AttentionRecord

    assert "alti" in ALIGNMENT_SOURCES
    sent = _block_sentences(toy_data, 2)[0]
    for layer in range(2):
        record = sent.records[("cross", layer)]
        np.testing.assert_array_equal(record.matrix("alti"), record.alti)
        np.testing.assert_array_equal(sent.matrix("alti", layer), record.alti)
        assert not np.array_equal(record.matrix("alti"), record.matrix("block"))
        with pytest.raises(OptionError, match="covers all heads"):
            record.matrix("alti", [0])
    with pytest.raises(OptionError, match="recorded without its block"):
        AttentionRecord("cross", 0, np.ones((2, 3, 4))).matrix("alti")
    assert AlignmentSource("alti").needs_block and AlignmentSource("block").needs_block
    assert not AlignmentSource("norms").needs_block and AlignmentSource("norms").needs_norms
    with pytest.raises(OptionError, match="--alignment-heads: --alignment-source alti covers all heads"):
        AlignmentSource("alti", heads=(0,))


def test_rolled_out_matrix_is_alti_plus_source_columns(toy_data):
    """SentenceAttention.matrix("rollout-X", layer): the source columns of ALTI+ after that decoder layer,
    checked against the independent reference rollout of the records' per-layer ALTI shares."""
    import numpy as np

    from fairseq_rela.errors import OptionError
    from fairseq_rela.recording import ROLLED_OUT_SOURCES, AlignmentSource
    from tests.reference import ref_alti_plus

    assert ROLLED_OUT_SOURCES == ("rollout-weights", "rollout-norms", "rollout-block", "rollout-alti",
                                  "rollout-value-zeroing")
    for sent in _block_sentences(toy_data):
        S = len(sent.src)
        per_layer = {}
        for key, r in sent.records.items():
            a = torch.as_tensor(r.alti, dtype=torch.float64)
            per_layer[key] = a if r.alti_residual is None else torch.cat(
                [a, torch.as_tensor(r.alti_residual, dtype=torch.float64)[:, None]], -1)
        ref = ref_alti_plus(*[[per_layer[(kind, i)] for i in range(2)]
                              for kind in ("encoder_self", "decoder_self", "cross")])
        for layer in range(2):
            got = sent.matrix("rollout-alti", layer)
            assert got.shape == (len(sent.tgt_in), S)
            np.testing.assert_allclose(got, ref[layer, :, :S].numpy(), atol=1e-6)
        assert sent.rollout_sources() == ("weights", "norms", "block", "alti")
        assert not np.allclose(sent.matrix("rollout-weights", 1), sent.matrix("rollout-alti", 1))
        assert sent.contributions("alti") is sent.contributions("alti")  # rolled out once per sentence
        with pytest.raises(OptionError, match="covers all heads"):
            sent.matrix("rollout-alti", 0, [1])
    del sent.records[("encoder_self", 0)]
    sent._rolled.clear()
    assert sent.rollout_sources() == ()
    with pytest.raises(OptionError, match="every layer from 0"):
        sent.matrix("rollout-alti", 0)
    with pytest.raises(OptionError, match="fairseq-rela-analyze --write-links"):
        AlignmentSource("rollout-alti")


@pytest.mark.parametrize("norm", ["rms-g", "rms-i", "layer-g"])
@pytest.mark.parametrize("order", ["one-chunk-gemm", "chunked-triangular"])
def test_decomposition_equals_the_pairwise_float64_reference(norm, order, monkeypatch):
    """decompose against tests/reference.py's vectors built pair by pair in float64: ReLA-g's query-dependent
    path (per-head norms through R_h, the summed vector as one GEMM or its norm through the triangular
    factor, zero pairs skipped) and RMSNorm's / LayerNorm's shared f; beam-shared values (B' = B/2), padded
    keys, a null row, head subsets, with and without vectors; the factors kept between calls follow W_O."""
    from fairseq_rela import recording
    from tests.reference import ref_norm_decomposition

    B, T, S = 4, 5, 7
    if order == "chunked-triangular":
        monkeypatch.setattr(recording, "_CHUNK_FLOATS", 2 * B * S * E)  # queries two at a time
        monkeypatch.setattr(recording, "_TRIANGLE_MIN_PAIRS", 0)
        monkeypatch.setattr(recording, "_TRIANGLE_BLOCK", 5)  # uneven blocks of R's rows
    else:
        monkeypatch.setattr(recording, "_TRIANGLE_MIN_PAIRS", 10 ** 9)
    torch.manual_seed(7)
    n, variant = norm.split("-")
    mha = ReLAMultiheadAttention(E, H, activation="rela", head_norm=build_head_norm(n, variant, E),
                                 encoder_decoder_attention=True, kind="cross").eval()
    with torch.no_grad():
        for p in mha.head_norm.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    weights = torch.relu(torch.randn(B, H, T, S))  # ReLA: exact zeros
    weights[1, :, :, -2:] = 0  # sentence 1's last two keys are padding
    weights[2, :, 3] = 0  # a null row: no head attends
    values, z = torch.randn(B // 2, H, S, E // H) * 3, torch.randn(T, B, E) * 0.5
    factors = {}
    for step in range(2):
        if step == 1:  # W_O changed in place: the kept factors must not be reused
            with torch.no_grad():
                mha.out_proj.weight.mul_(torch.rand_like(mha.out_proj.weight) + 0.5)
        for heads in ((None, [2], [0, 3]) if step == 0 else ([0, 3], [2], None)):  # first: factors kept for [0, 3]
            fx_ref, summed_ref, vectors_ref = ref_norm_decomposition(mha, weights, values, z, heads)
            for keep in (False, True):
                fx, weighted, summed, vectors, _ = recording.decompose(mha, weights, values, z, keep, heads, factors)
                torch.testing.assert_close(fx.expand(B, H, T, S).double(), fx_ref, rtol=1e-5, atol=1e-6)
                torch.testing.assert_close(weighted.double(), weights.double() * fx_ref, rtol=1e-5, atol=1e-6)
                torch.testing.assert_close(summed.double(), summed_ref, rtol=1e-5, atol=1e-6)
                assert (summed[1, :, -2:] == 0).all() and (summed[2, 3] == 0).all()  # nothing attended: exactly 0
                if keep:
                    torch.testing.assert_close(vectors.double(), vectors_ref, rtol=1e-5, atol=1e-5)
                else:
                    assert vectors is None
    assert bool(factors) == (norm == "rms-g")  # the factors serve the query-dependent path (the gate) only
