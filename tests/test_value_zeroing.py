"""Value zeroing (fairseq_rela/value_zeroing.py, recorded by AttentionRecorder(value_zeroing=True)) against an
independent reference that reruns a plain-torch copy of each layer once per zeroed value vector
(tests/reference.py), its properties, its rollout, and its entries in fairseq-rela-analyze and fairseq-generate."""
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fairseq_rela import value_zeroing
from fairseq_rela.contributions import layer_shares, sentence_contributions
from fairseq_rela.errors import OptionError
from fairseq_rela.models.conversion import as_rela_roberta, as_rela_transformer
from fairseq_rela.recording import AlignmentSource, AttentionRecorder, split_sentences
from tests.helpers import (USER_DIR, ParsedPage, batch, build, build_mlm, generate_alignments, render_in_chromium,
                           run_cli)
from tests.reference import ref_alti_plus, ref_model_value_zeroing

PRE_NORM = ("--encoder-normalize-before", "--decoder-normalize-before")
MODELS = {  # id -> (options, activation of the reference)
    "rela-g": (("--attention-activation", "rela", "--rela-variant", "g"), "rela"),
    "rela-i": (("--attention-activation", "rela", "--rela-variant", "i"), "rela"),
    "softmax": (("--attention-activation", "softmax"), "softmax"),
}
TINY = ("--encoder-embed-dim", "32", "--encoder-ffn-embed-dim", "64", "--encoder-layers", "2",
        "--encoder-attention-heads", "4", "--decoder-embed-dim", "32", "--decoder-ffn-embed-dim", "64",
        "--decoder-layers", "2", "--decoder-attention-heads", "4")
KINDS = [(kind, layer) for kind in ("encoder_self", "decoder_self", "cross") for layer in range(2)]


def _perturb(model, scale=0.3):
    """Biases (0 at init) and LayerNorm gains away from 0 and 1 (seeded), so that every term matters."""
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "layer_norm" in name or name.endswith("bias"):
                p.add_(torch.randn(p.shape, generator=gen) * scale)
    return model


def _sentences(task, model, sample):
    rec = AttentionRecorder(model, norms=False, value_zeroing=True)
    with torch.no_grad(), rec:
        model(**sample["net_input"])
    return rec, list(split_sentences(sample, rec, task.source_dictionary, task.target_dictionary))


def _one(sample, task, b):
    """Sentence b of the batch without padding: (src_tokens, prev_output_tokens), batch 1."""
    net = sample["net_input"]
    src = net["src_tokens"][b][net["src_tokens"][b].ne(task.source_dictionary.pad())][None]
    prev = net["prev_output_tokens"][b][sample["target"][b].ne(task.target_dictionary.pad())][None]
    return src, prev


def _check_against_reference(sent, expected):
    for key, (dist, normalised) in expected.items():
        r = sent.records[key]
        got_d, got_n = torch.as_tensor(r.value_zeroing_distance).double(), torch.as_tensor(r.value_zeroing).double()
        scale = float(dist.max())
        torch.testing.assert_close(got_d, dist, atol=2e-4 * scale, rtol=1e-3, msg=lambda m: f"{key} distances: {m}")
        # a key no head attends (padding, the future, a ReLA zero): the reference's rerun changes nothing there
        unused = ~torch.as_tensor(r.weights != 0).any(0)
        assert (got_d[unused] == 0).all() and (dist[unused] < 1e-10).all(), key
        reached = (~unused).any(-1)  # a null ReLA row: all 0 here, the reference's float64 noise normalised there
        torch.testing.assert_close(got_n[reached], normalised[reached], atol=2e-4, rtol=0,
                                   msg=lambda m: f"{key} normalised: {m}")
        assert (got_n[~reached] == 0).all()


@pytest.mark.unit
@pytest.mark.parametrize("pre_norm", [False, True], ids=["post-norm", "pre-norm"])
@pytest.mark.parametrize("name", list(MODELS))
def test_value_zeroing_equals_the_reference(toy_data, name, pre_norm):
    """Every attention of ReLA-g, ReLA-i and softmax models, post- and pre-norm, batched with padding: the
    distances and their normalised rows equal a rerun of a plain float64 copy of the layer per zeroed value."""
    options, activation = MODELS[name]
    task, model = build(toy_data, *options, *TINY, *(PRE_NORM if pre_norm else ()))
    model = _perturb(model)
    sample = batch(task, 2)
    assert sample["net_input"]["src_tokens"].eq(task.source_dictionary.pad()).any()  # padding is exercised
    assert sample["target"].eq(task.target_dictionary.pad()).any()
    _, sentences = _sentences(task, model, sample)
    zeros = 0
    for b, sent in enumerate(sentences):
        expected = ref_model_value_zeroing(model, *_one(sample, task, b), activation, F.relu)
        assert sorted(expected) == sorted(KINDS)
        _check_against_reference(sent, expected)
        zeros += sum(int((sent.records[k].weights == 0).all(0).sum()) for k in KINDS if k[0] != "decoder_self")
    assert (zeros > 0) == (activation == "rela")  # ReLA's unattended keys are there and checked


@pytest.mark.unit
@pytest.mark.parametrize("stock", ["post-norm", "pre-norm"])
def test_value_zeroing_of_a_converted_stock_transformer(toy_data, stock):
    """A stock fairseq `transformer`, converted: value zeroing equals the reference run on the stock model."""
    task, model = build(toy_data, "--arch", "transformer", *TINY, *(PRE_NORM if stock == "pre-norm" else ()))
    model = _perturb(model, 0.1)
    rela = as_rela_transformer(model)
    sample = batch(task, 2)
    _, sentences = _sentences(task, rela, sample)
    for b, sent in enumerate(sentences):
        _check_against_reference(sent, ref_model_value_zeroing(model, *_one(sample, task, b), "softmax", F.relu))


@pytest.mark.unit
@pytest.mark.parametrize("prenorm", [False, True], ids=["postnorm", "prenorm"])
def test_value_zeroing_of_a_roberta_encoder(mlm_data, prenorm):
    """fairseq's roberta (GELU), converted: encoder value zeroing equals the reference; its rollout is the
    authors' compute_joint_attention(res=False)."""
    task, stock = build_mlm(mlm_data, *(["--encoder-normalize-before"] if prenorm else []))
    stock = _perturb(stock, 0.1)
    model = as_rela_roberta(stock)
    net_input = batch(task, 1)["net_input"]
    with torch.no_grad(), AttentionRecorder(model, norms=False, value_zeroing=True) as rec:
        model(**net_input, features_only=True)
    records = {key: r for key, (r,) in rec.records.items()}
    expected = ref_model_value_zeroing(stock, net_input["src_tokens"], None, "softmax", F.gelu)
    for key, (dist, normalised) in expected.items():
        torch.testing.assert_close(records[key].value_zeroing[0].double(), normalised, atol=2e-4, rtol=0)
    got = sentence_contributions(records, "value-zeroing")
    joint = expected[("encoder_self", 1)][1] @ expected[("encoder_self", 0)][1]
    np.testing.assert_allclose(got.encoder[-1][0], joint.numpy(), atol=3e-4)


@pytest.mark.unit
def test_properties_and_rollout(toy_data):
    """Non-negative; rows that any value reaches sum to 1; the future and padding are exact zeros; the rollout
    is the authors' (encoder: no identity added) and ALTI+'s (decoder: [cross | self] distances normalised
    together per position), computed independently from the records' raw distances."""
    task, model = build(toy_data, "--attention-activation", "rela", *TINY)
    model = _perturb(model)
    _, sentences = _sentences(task, model, batch(task, 3))
    for sent in sentences:
        for key in KINDS:
            r = sent.records[key]
            vz = r.value_zeroing
            assert (vz >= 0).all() and (r.value_zeroing_distance >= 0).all()
            reached = vz.sum(-1) > 0
            np.testing.assert_allclose(vz.sum(-1)[reached], 1, atol=1e-5)
            assert ((vz.sum(-1) == 0) == (r.value_zeroing_distance.sum(-1) == 0)).all()
            if key[0] == "decoder_self":
                assert (np.triu(vz, 1) == 0).all()
        rolled = sentence_contributions(sent.records, "value-zeroing")
        enc = [sent.records[("encoder_self", i)].value_zeroing.astype(np.float64) for i in range(2)]
        enc = [np.where(m.sum(-1, keepdims=True) > 0, m, np.eye(len(m))) for m in enc]
        np.testing.assert_allclose(rolled.encoder[-1], enc[1] @ enc[0], atol=1e-6)
        self_c, cross_c = [], []
        for i in range(2):
            ds = torch.as_tensor(sent.records[("decoder_self", i)].value_zeroing_distance).double()
            dc = torch.as_tensor(sent.records[("cross", i)].value_zeroing_distance).double()
            total = ds.sum(-1, keepdim=True) + dc.sum(-1, keepdim=True)
            assert (total > 0).all()  # the decoder's own first token always reaches itself here
            self_c.append(torch.where(ds.sum(-1, keepdim=True) > 0, ds / ds.sum(-1, keepdim=True), torch.eye(len(ds))))
            cross_c.append(torch.cat([dc / total, ds.sum(-1, keepdim=True) / total], -1))
        ref = ref_alti_plus([torch.as_tensor(m) for m in enc], self_c, cross_c)
        np.testing.assert_allclose(rolled.decoder, ref.numpy(), atol=1e-6)
        np.testing.assert_allclose(sent.matrix("rollout-value-zeroing", 1), ref[1, :, : len(sent.src)].numpy(),
                                   atol=1e-6)


@pytest.mark.unit
def test_batched_in_chunks_of_one_key_is_the_same(toy_data, monkeypatch):
    """The reruns' batching (copies per call) does not change the result."""
    task, model = build(toy_data, "--attention-activation", "rela", *TINY)
    sample = batch(task, 3)
    rec, _ = _sentences(task, model, sample)
    monkeypatch.setattr(value_zeroing, "_CHUNK_FLOATS", 1)  # one copy of the batch per call
    small, _ = _sentences(task, model, sample)
    for key, (r,) in rec.records.items():
        torch.testing.assert_close(small.records[key][0].value_zeroing, r.value_zeroing, atol=1e-6, rtol=0)


@pytest.mark.unit
def test_errors(toy_data):
    task, model = build(toy_data, "--attention-activation", "rela", *TINY)
    with pytest.raises(OptionError, match="covers all heads"):
        AlignmentSource("value-zeroing", heads=(0,))
    assert AlignmentSource("value-zeroing").needs_value_zeroing and not AlignmentSource("value-zeroing").needs_block
    model.train()
    with pytest.raises(RuntimeError, match="model.eval"), AttentionRecorder(model, norms=False, value_zeroing=True):
        model(**batch(task, 2)["net_input"])
    model.eval()
    _, (sent, *_) = _sentences(task, model, batch(task, 2))
    with pytest.raises(OptionError, match="self-attention"):
        layer_shares(sent.records[("cross", 0)], "value-zeroing")
    with AttentionRecorder(model, norms=False) as rec:  # recorded without value zeroing
        model(**batch(task, 2)["net_input"])
    (plain, *_) = split_sentences(batch(task, 2), rec, task.source_dictionary, task.target_dictionary)
    assert "value-zeroing" not in plain.rollout_sources()
    with pytest.raises(OptionError, match="without value zeroing"):
        plain.matrix("value-zeroing", 0)
    # the reruns leave no trace: no zeroed values, no extra records
    assert all(m.zeroed_values is None for m in model.modules() if hasattr(m, "zeroed_values"))
    assert all(len(v) == 1 for v in rec.records.values())


@pytest.fixture(scope="module")
def vz_analysis(toy_data, trained, tmp_path_factory):
    """fairseq-rela-analyze --value-zeroing with the sweep, links and report on a trained ReLA-g model."""
    ckpt, out = trained("rela"), tmp_path_factory.mktemp("vz") / "analysis"
    run_cli("fairseq-rela-analyze", toy_data / "bin", "--path", ckpt, "--gen-subset", "test", "--user-dir", USER_DIR,
            "--output-dir", out, "--cpu", "--value-zeroing", "--gold-alignment", toy_data / "test.align",
            "--gold-base", "0", "--write-links", "--html", "--plot-sentences", "1")
    return ckpt, out, json.loads((out / "alignment.json").read_text())


@pytest.mark.e2e
def test_analyze_sweep_links_report_and_generate_agree(toy_data, vz_analysis, tmp_path):
    """The sweep scores value-zeroing and its rollout per layer; each written links/ file scores the sweep's AER;
    fairseq-generate --alignment-source value-zeroing --score-reference gives the same AER; the statistics,
    stats.txt and report.html carry it."""
    from fairseq_rela.alignment.aer import alignment_error_rate, read_gold, read_hypothesis

    ckpt, out, sweep = vz_analysis
    gold = read_gold(str(toy_data / "test.align"), base=0)
    for source in ("value-zeroing", "rollout-value-zeroing"):
        for shift in ("AWO", "AWI"):
            for layer in ("0", "1"):
                hyp = read_hypothesis(str(out / "links" / f"{source}-{shift}-L{layer}.txt"))
                assert sweep["per_layer"][f"{source}-{shift}"][layer] == pytest.approx(alignment_error_rate(gold, hyp).aer)
    gen = generate_alignments(toy_data, ckpt, "--score-reference", "--alignment-source", "value-zeroing",
                              "--alignment-layer", "0")
    (tmp_path / "gen").write_text(gen)
    aer = alignment_error_rate(gold, read_hypothesis(str(tmp_path / "gen"))).aer
    assert sweep["per_layer"]["value-zeroing-AWO"]["0"] == pytest.approx(aer)
    stats = json.loads((out / "stats.json").read_text())
    share = stats["contributions"]["value-zeroing"]["source_share"]
    assert len(share) == 2 and all(0 < s < 1 for s in share)
    assert 0 < stats["attention"]["encoder_self"]["0"]["value_zeroing_mixing"] < 1
    assert "value_zeroing_mixing" not in stats["attention"]["cross"]["0"]
    assert "vz mix" in (out / "stats.txt").read_text() and "value-zeroing" in (out / "alignment.txt").read_text()
    page = (out / "report.html").read_text()
    assert '"value_zeroing":{' in page and "value zeroing: 1" in page
    dom, console, _ = render_in_chromium(out / "report.html", tmp_path)
    body = ParsedPage(dom).find("body")[0]
    assert console == [] and "data-errors" not in body, console
    assert body["data-rendered"] == str(2 * 4 + 1)  # 2 cross layers x (weights, norms, block, value zeroing) + ALTI+


@pytest.mark.e2e
def test_generate_beam_hypotheses_are_read_teacher_forced(toy_data, vz_analysis, tmp_path):
    """Beam search with --alignment-source value-zeroing: a hypothesis equal to its reference gets the
    teacher-forced links analyze wrote for the reference (the same pass, batched otherwise)."""
    ckpt, out, _ = vz_analysis
    beam = generate_alignments(toy_data, ckpt, "--alignment-source", "value-zeroing", "--beam", "2")
    forced = (out / "links" / "value-zeroing-AWO-L1.txt").read_text().splitlines()

    def lines(tag):
        return {int(l.split("\t")[0][2:]): l.split("\t")[-1] for l in beam.splitlines() if l.startswith(tag + "-")}

    hyps, refs, beam_links = lines("H"), lines("T"), lines("A")
    same = [i for i in hyps if hyps[i] == refs[i]]
    assert len(beam_links) == len(hyps) and len(same) >= 10, (len(same), len(hyps))
    assert all(set(beam_links[i].split()) == set(forced[i].split()) for i in same)


@pytest.mark.unit
def test_unattended_keys_are_exact_zeros_whatever_the_rerun_noise(toy_data, monkeypatch):
    """Where no head attends i -> j, d_ij is an exact 0 by definition, not whatever float noise a batched
    rerun leaves (simulated here: every rerun distance off by 1e-9)."""
    import fairseq_rela.recording as recording

    task, model = build(toy_data, "--attention-activation", "rela", *TINY)
    real = recording.zeroed_distances
    monkeypatch.setattr(recording, "zeroed_distances", lambda *a, **k: real(*a, **k) + 1e-9)
    rec, _ = _sentences(task, model, batch(task, 3))
    unused_cells = 0
    for key, (r,) in rec.records.items():
        unused = ~r.weights.ne(0).any(1)
        unused_cells += int(unused.sum())
        assert (r.value_zeroing_distance[unused] == 0).all() and (r.value_zeroing[unused] == 0).all(), key
    assert unused_cells > 0


@pytest.mark.unit
def test_value_zeroing_of_a_converted_hugging_face_bert(tmp_path):
    """A Hugging Face BertModel converted by fairseq-rela-convert's function: value zeroing equals the same
    measure taken on the HF model itself, its value projection's output zeroed at one token by a forward hook
    (the authors' intervention, in HF's own layer), one rerun per token."""
    import os

    import transformers

    from fairseq_rela.analysis.runner import load_checkpoint
    from fairseq_rela.models.huggingface import convert, read_folder

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(20)]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    cfg = transformers.BertConfig(vocab_size=len(vocab), pad_token_id=0, layer_norm_eps=1e-12, hidden_size=32,
                                  num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                                  max_position_embeddings=40, hidden_act="gelu")
    torch.manual_seed(0)
    hf = transformers.BertModel(cfg).eval()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in hf.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            p.copy_(1 + 0.2 * noise if name.endswith("LayerNorm.weight") else 0.05 * noise)
    hf.save_pretrained(str(tmp_path))
    out_dir = tmp_path / "fairseq"
    conv = convert(read_folder(str(tmp_path)), data=str(out_dir))
    os.makedirs(out_dir)
    torch.save(conv.checkpoint(), out_dir / "checkpoint.pt")
    (out_dir / "dict.txt").write_text(conv.dictionary_text())
    model, task = load_checkpoint(str(out_dir / "checkpoint.pt"), data=str(out_dir), device="cpu")
    words = ["[CLS]", "w3", "w7", "w1", "w12", "w5", "[SEP]"]
    src = torch.tensor([[task.source_dictionary.index({"[CLS]": "<s>", "[SEP]": "</s>"}.get(w, w)) for w in words]])
    with torch.no_grad(), AttentionRecorder(model, norms=False, value_zeroing=True) as rec:
        model(src, features_only=True)
        states = hf(input_ids=torch.tensor([[vocab.index(w) for w in words]]), output_hidden_states=True).hidden_states
    for layer, module in enumerate(hf.encoder.layer):
        dist = torch.zeros(len(words), len(words), dtype=torch.double)
        for j in range(len(words)):
            hook = module.attention.self.value.register_forward_hook(
                lambda m, a, out, j=j: out.index_fill(1, torch.tensor([j]), 0.0))
            with torch.no_grad():
                new = module(states[layer])
            hook.remove()
            new = (new[0] if isinstance(new, tuple) else new)[0].double()
            dist[:, j] = 1 - F.cosine_similarity(new, states[layer + 1][0].double(), dim=-1)
        ours = rec.records[("encoder_self", layer)][0].value_zeroing[0].double()
        torch.testing.assert_close(ours, dist / dist.sum(-1, keepdim=True), atol=2e-5, rtol=0)
