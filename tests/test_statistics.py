import json
import math

import numpy as np
import pytest
import torch

from fairseq_rela.analysis.runner import SentenceAttention, iter_sentences, load_checkpoint
from fairseq_rela.analysis.statistics import AttentionStatistics, head_jsd_rows, is_punct
from tests.conftest import USER_DIR, run_cli


def _sentence(kind, weights, keys, norms=None):
    sent = SentenceAttention(0, src=keys, tgt_in=keys, tgt_out=keys)
    w = np.array(weights, dtype=float)
    maps = {"weights": w}
    if norms is not None:
        maps.update(fx_norm=np.ones_like(w), weighted_norm=w, summed_norm=np.array(norms, dtype=float))
    sent.maps[(kind, 0)] = maps
    return sent


def test_hand_computed_cross_attention_statistics():
    w = [[[0.5, 0, 0.5], [0, 0, 0]],  # head 0: second row is null
         [[1.0, 0, 0], [0, 1.0, 0]]]
    stats = AttentionStatistics(set(), set())
    stats.update(_sentence("cross", w, ["a", ".", "</s>"], norms=[[1, 0, 3], [0, 2, 0]]))
    s = stats.result()["attention"]["cross"]["0"]
    assert s["sparsity"] == pytest.approx([4 / 6, 4 / 6])
    assert s["null_rate"] == pytest.approx([0.5, 0.0])
    h = lambda p: -sum(x * math.log(x) for x in p if x > 0)  # noqa: E731
    assert s["head_jsd"] == pytest.approx(h([0.75, 0, 0.25]) - (h([0.5, 0.5]) + 0) / 2)  # row 1 has one live head
    shares = s["token_share"]
    assert shares["other"]["weight"] == pytest.approx(0.375) and shares["punct"]["weight"] == pytest.approx(0.5)
    assert shares["eos"]["weight"] == pytest.approx(0.125)
    assert shares["eos"]["norm"] == pytest.approx((3 / 4) / 2) and shares["punct"]["norm"] == pytest.approx(0.5)


def test_decoder_self_attention_counts_only_causal_positions():
    stats = AttentionStatistics(set(), set())
    stats.update(_sentence("decoder_self", [[[1.0, 0.0], [0.5, 0.5]]], ["</s>", "x"]))
    assert stats.result()["attention"]["decoder_self"]["0"]["sparsity"] == [0.0]


def test_jsd_identical_heads_is_zero_disjoint_is_log2():
    same = np.array([[[0.2, 0.8]], [[0.2, 0.8]]])
    disjoint = np.array([[[1.0, 0.0]], [[0.0, 1.0]]])
    valid = np.ones((1, 2), bool)
    assert head_jsd_rows(same, valid)[0] == pytest.approx(0.0)
    assert head_jsd_rows(disjoint, valid)[0] == pytest.approx(math.log(2))


def test_punctuation_detection_handles_subword_markers():
    assert is_punct(".") and is_punct("\u2581,") and is_punct("?@@") and not is_punct("a.") and not is_punct("</s>")


def _independent_sparsity(ckpt, toy_data, kind_module="encoder_attn", layer=0):
    """Sparsity of one attention straight from need_head_weights in a plain forward (no recorder)."""
    model, task = load_checkpoint(str(ckpt), data=str(toy_data / "bin"), device="cpu")
    task.load_dataset("test")
    ds = task.dataset("test")
    zeros = total = 0
    captured = {}
    attn = getattr(model.decoder.layers[layer], kind_module)
    for i in range(len(ds)):
        sample = ds.collater([ds[i]])
        net = sample["net_input"]
        with torch.no_grad():
            enc = model.encoder(net["src_tokens"], src_lengths=net["src_lengths"])
            handle = attn.register_forward_hook(lambda m, a, kw, out: captured.update(kw=kw), with_kwargs=True)
            model.decoder(net["prev_output_tokens"], encoder_out=enc)
            handle.remove()
            kw = dict(captured["kw"], need_head_weights=True)
            _, w = attn(**kw)
        zeros += int((w == 0).sum())
        total += w.numel()
    return zeros / total, len(ds)


def test_analyze_cli_writes_statistics_that_match_an_independent_computation(toy_data, trained, tmp_path):
    ckpt = trained("rela")
    proc = run_cli("fairseq-rela-analyze", toy_data / "bin", "--path", ckpt, "--gen-subset", "test", "--user-dir",
                   USER_DIR, "--output-dir", tmp_path, "--plot-sentences", "0,2", "--plot-kinds", "cross,encoder_self",
                   "--cpu", "--max-tokens", "300")  # several batches
    assert "cross" in proc.stdout and "sparsity" in proc.stdout
    stats = json.loads((tmp_path / "stats.json").read_text())
    for name in ("heads.png", "sentence-0-cross.png", "sentence-2-encoder_self.png", "stats.txt"):
        assert (tmp_path / name).stat().st_size > 0
    expected, n = _independent_sparsity(ckpt, toy_data)
    assert stats["sentences"] == n == 41
    cross0 = stats["attention"]["cross"]["0"]
    assert cross0["sparsity_mean"] == pytest.approx(expected, abs=1e-9)
    assert 0 < expected < 1 and stats["attention_activation"] == "rela"


def test_softmax_model_is_dense_with_no_null_rows(toy_data, trained):
    model, task = load_checkpoint(str(trained("softmax")), data=str(toy_data / "bin"), device="cpu")
    stats = AttentionStatistics(set(), set())
    for sent in iter_sentences(model, task, "test", max_tokens=500):
        stats.update(sent)
        w = sent.maps[("cross", 1)]["weights"]
        np.testing.assert_allclose(w.sum(-1), 1, atol=1e-5)
    res = stats.result()["attention"]
    assert all(s["sparsity_mean"] == 0 and s["null_rate_mean"] == 0 for layers in res.values() for s in layers.values())


def test_training_logs_attention_statistics_at_validation(toy_data, tmp_path):
    from tests.conftest import TRAIN_ARGS

    proc = run_cli("fairseq-train", toy_data / "bin", "--user-dir", USER_DIR, *TRAIN_ARGS, "--task", "translation_rela",
                   "--log-attention-stats", "--attention-activation", "rela", "--max-epoch", "1", "--save-dir", tmp_path)
    (valid_line,) = [line for line in (proc.stdout + proc.stderr).splitlines() if "valid on 'valid' subset" in line]
    for kind in ("encoder_self", "decoder_self", "cross"):
        for stat in ("sparsity", "null_rate"):
            value = float(valid_line.split(f"{stat}_{kind} ")[1].split()[0])
            assert 0 <= value <= 1
    assert float(valid_line.split("sparsity_cross ")[1].split()[0]) > 0


def test_given_sentences_are_analysed_like_the_binarised_split(toy_data, trained):
    from fairseq_rela.analysis.runner import sentence_dataset

    model, task = load_checkpoint(str(trained("rela")), data=str(toy_data / "bin"), device="cpu")
    src = (toy_data / "test.src").read_text().split("\n")[:3]
    tgt = (toy_data / "test.tgt").read_text().split("\n")[:3]
    given = sorted(iter_sentences(model, task, dataset=sentence_dataset(task, list(zip(src, tgt)))), key=lambda s: s.id)
    split = {s.id: s for s in iter_sentences(model, task, "test") if s.id < 3}
    assert [s.src[:-1] for s in given] == [line.split() for line in src]
    for s in given:
        np.testing.assert_allclose(s.maps[("cross", 0)]["weighted_norm"], split[s.id].maps[("cross", 0)]["weighted_norm"],
                                   atol=1e-5)
