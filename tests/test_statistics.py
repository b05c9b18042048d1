"""Attention statistics (analysis/statistics.py) on hand-computed cases and on a trained softmax model."""
import math

import numpy as np
import pytest

from fairseq_rela.analysis.runner import SentenceAttention, iter_sentences, load_checkpoint
from fairseq_rela.recording import AttentionRecord
from fairseq_rela.analysis.statistics import AttentionStatistics, format_table, head_jsd_rows, is_punct


def _sentence(kind, weights, keys, norms=None):
    sent = SentenceAttention(0, src=keys, tgt_in=keys, tgt_out=keys)
    w = np.array(weights, dtype=float)
    record = AttentionRecord(kind, 0, w)
    if norms is not None:
        record.fx_norm, record.weighted_norm, record.summed_norm = np.ones_like(w), w, np.array(norms, dtype=float)
    sent.records[(kind, 0)] = record
    return sent


@pytest.mark.unit
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


@pytest.mark.unit
def test_masked_lm_special_tokens_have_their_own_categories():
    """<s> ([CLS]) and </s> ([SEP]) apart, as in Kobayashi et al.'s BERT study; the table shows both."""
    w = [[[0.6, 0.1, 0.1, 0.2], [0.5, 0.0, 0.0, 0.5]]]
    stats = AttentionStatistics(set(), set())
    stats.update(_sentence("encoder_self", w, ["<s>", "word", ",", "</s>"], norms=[[0.6, 0.2, 0.2, 1.0],
                                                                                [0.0, 0.0, 0.0, 1.0]]))
    result = stats.result()
    shares = result["attention"]["encoder_self"]["0"]["token_share"]
    assert list(shares) == ["bos", "eos", "punct", "frequent", "other"]
    assert shares["bos"]["weight"] == pytest.approx(0.55) and shares["eos"]["weight"] == pytest.approx(0.35)
    assert shares["bos"]["norm"] == pytest.approx(0.3 / 2) and shares["eos"]["norm"] == pytest.approx((0.5 + 1) / 2)
    assert shares["punct"]["weight"] == pytest.approx(0.05) and shares["other"]["weight"] == pytest.approx(0.05)
    header, row = format_table(result).split("\n")[1:3]
    assert "bos w/n" in header and " 0.550/0.150 " in row and " 0.350/0.750 " in row


@pytest.mark.unit
def test_decoder_self_attention_counts_only_causal_positions():
    stats = AttentionStatistics(set(), set())
    stats.update(_sentence("decoder_self", [[[1.0, 0.0], [0.5, 0.5]]], ["</s>", "x"]))
    assert stats.result()["attention"]["decoder_self"]["0"]["sparsity"] == [0.0]


@pytest.mark.unit
def test_jsd_identical_heads_is_zero_disjoint_is_log2():
    same = np.array([[[0.2, 0.8]], [[0.2, 0.8]]])
    disjoint = np.array([[[1.0, 0.0]], [[0.0, 1.0]]])
    valid = np.ones((1, 2), bool)
    assert head_jsd_rows(same, valid)[0] == pytest.approx(0.0)
    assert head_jsd_rows(disjoint, valid)[0] == pytest.approx(math.log(2))


@pytest.mark.unit
def test_punctuation_detection_handles_subword_markers():
    assert is_punct(".") and is_punct("\u2581,") and is_punct("?@@") and not is_punct("a.") and not is_punct("</s>")


@pytest.mark.e2e
def test_softmax_model_is_dense_with_no_null_rows(toy_data, trained):
    model, task = load_checkpoint(str(trained("softmax")), data=str(toy_data / "bin"), device="cpu")
    stats = AttentionStatistics(set(), set())
    for sent in iter_sentences(model, task, "test", max_tokens=500):
        stats.update(sent)
        w = sent.records[("cross", 1)].weights
        np.testing.assert_allclose(w.sum(-1), 1, atol=1e-5)
    res = stats.result()["attention"]
    assert all(s["sparsity_mean"] == 0 and s["null_rate_mean"] == 0 for layers in res.values() for s in layers.values())


@pytest.mark.unit
def test_capped_correlation_samples_the_whole_split_not_its_first_sentences():
    """Batches come sorted by length: the first triples are the shortest sentences.  With a cap, ρ must
    come from a uniform sample of every sentence: here the first half is correlated +1, the second −1."""
    from scipy.stats import spearmanr

    from fairseq_rela.analysis.statistics import WeightNormCorrelation, Keys

    rng = np.random.default_rng(1)
    stat, all_w, all_f = WeightNormCorrelation(1), [], []
    stat.cap = 500
    for i in range(40):
        w = rng.random((1, 5, 6))
        f = (w if i < 20 else 1 - w) + 0.01 * rng.random((1, 5, 6))
        record = AttentionRecord("cross", 0, w)
        record.fx_norm = f
        stat.update(record, Keys(np.ones((5, 6), bool), np.zeros((6, 1)), ()))
        all_w.append(w.ravel())
        all_f.append(f.ravel())
    full = spearmanr(np.concatenate(all_w), np.concatenate(all_f)).statistic
    sampled = stat.result()["spearman_weight_fx"]
    assert abs(full) < 0.1 and abs(sampled - full) < 0.15  # the first 500 triples alone give ρ ≈ +1
    assert stat.kept == 500


def _table(result):
    """stats.txt split into its header, rows (by kind and layer) and legend."""
    lines = format_table(result).split("\n")
    blank = lines.index("")
    rows = {tuple(line.split()[:2]): line for line in lines[2:blank]}
    return lines[1], rows, [line.strip() for line in lines[blank + 1:]]


@pytest.mark.unit
def test_table_leaves_out_what_cannot_apply_and_explains_the_rest():
    """A translation model's table: no <s> among the keys, so no bos column (the legend says so); a statistic
    that is undefined in a row is "n/a", never a number (one live head: no JSD; equal norms: no rho; cross
    attention: no attention-level mixing ratio); every column shown has its line in the legend."""
    stats = AttentionStatistics(set(), set())
    stats.update(_sentence("cross", [[[0.5, 0.0, 0.5], [0.0, 1.0, 0.0]]], ["a", ".", "</s>"],
                           norms=[[1, 0, 3], [0, 2, 0]]))
    result = stats.result()
    fields = result["attention"]["cross"]["0"]
    assert fields["head_jsd"] is None and fields["spearman_weight_fx"] is None  # one head; f(x) norms all 1
    fields["mixing_ratio"] = {"attention": None, "residual": 0.25, "block": 0.5,
                              "attention_weights": None, "residual_weights": None}
    header, rows, legend = _table(result)
    row = rows[("cross", "0")]
    assert "bos w/n" not in header and "eos w/n" in header and "punct w/n" in header
    assert any(line.startswith("left out: bos w/n") for line in legend)
    cells = row.split()
    assert cells[header.split().index("JSD")] == "n/a"  # not 0.000 (cells line up with the header up to JSD)
    assert cells[-3:] == ["n/a", "n/a", "/0.250/0.500"]  # rho, then mix attn/res/blk ("n/a /0.250/0.500")
    for column in ("sparsity", "null", "JSD", "eos / punct w/n", "rho(a,|f|)", "mix attn/res/blk"):
        assert any(line.startswith(column + ":") for line in legend), column
    assert any(line.startswith("layer: counted from 0") for line in legend)
    assert any("cross attn is n/a" in line for line in legend)


@pytest.mark.unit
def test_a_category_missing_in_one_kind_is_na_there_and_shown_elsewhere():
    stats = AttentionStatistics(set(), set())
    stats.update(_sentence("cross", [[[0.5, 0.5, 0.0]]], ["a", ".", "</s>"], norms=[[1, 1, 0]]))
    stats.update(_sentence("encoder_self", [[[0.5, 0.5, 0.0]]], ["a", "b", "</s>"], norms=[[1, 1, 0]]))
    header, rows, _ = _table(stats.result())
    punct = header.split().index("punct")  # "punct w/n" is two words in the header: cells shift by one after it
    assert rows[("cross", "0")].split()[punct - 1] == "0.500/0.500"
    assert rows[("encoder_self", "0")].split()[punct - 1] == "n/a"


def _recorded(task, model, n=5):
    import torch

    from fairseq_rela.recording import AttentionRecorder, split_sentences
    from tests.helpers import batch

    sample = batch(task, n)
    rec = AttentionRecorder(model, block=True)
    with torch.no_grad(), rec:
        model(**sample["net_input"])
    return list(split_sentences(sample, rec, task.source_dictionary, task.target_dictionary))


@pytest.mark.unit
def test_alti_mixing_hand_computed():
    sent = _sentence("encoder_self", [[[0.5, 0.5], [0.5, 0.5]]], ["a", "</s>"], norms=[[1, 1], [1, 1]])
    record = sent.records[("encoder_self", 0)]
    record.block_norm, record.mixing_ratio = np.ones((2, 2)), np.full((2, 3), 0.5)
    record.alti = np.array([[0.8, 0.2], [np.nan, np.nan]])  # own shares 0.8 and undefined
    cross = AttentionRecord("cross", 0, np.ones((1, 2, 2)) / 2, block_norm=np.ones((2, 2)),
                            mixing_ratio=np.full((2, 3), 0.5), alti=np.full((2, 2), 0.1),
                            alti_residual=np.array([0.8, 0.6]))
    cross.fx_norm, cross.weighted_norm, cross.summed_norm = np.ones((1, 2, 2)), cross.weights, np.ones((2, 2))
    sent.records[("cross", 0)] = cross
    stats = AttentionStatistics(set(), set())
    stats.update(sent)
    result = stats.result()["attention"]
    assert result["encoder_self"]["0"]["alti_mixing"] == pytest.approx(0.2)  # the undefined row left out
    assert result["cross"]["0"]["alti_mixing"] == pytest.approx(1 - 0.7)  # from the source: 1 - residual share
    text = format_table(stats.result())
    assert "alti mix" in text.split("\n")[1] and "\n  alti mix: ALTI's mixing" in text


@pytest.mark.unit
def test_source_share_per_layer_and_position_over_a_split(toy_data):
    """stats["contributions"][source]: own share per encoder layer, ALTI+ source share per decoder layer and by
    target position, each the mean over every token, from an independent rollout (tests/reference.py)."""
    import torch

    from fairseq_rela.analysis.statistics import SourceShare
    from tests.helpers import build
    from tests.reference import ref_alti_plus

    task, model = build(toy_data, "--attention-activation", "rela")
    sents = _recorded(task, model)
    stats = AttentionStatistics(set(), set())
    own, share, by_pos, per_sentence = [[], []], [[], []], {}, [[], []]
    for sent in sents:
        stats.update(sent)
        S = len(sent.src)
        terms = {}
        for key, r in sent.records.items():
            a = torch.as_tensor(r.alti, dtype=torch.float64)
            terms[key] = a if r.alti_residual is None else torch.cat(
                [a, torch.as_tensor(r.alti_residual, dtype=torch.float64)[:, None]], -1)
        enc = [terms[("encoder_self", i)] for i in range(2)]
        plus = ref_alti_plus(enc, *[[terms[(k, i)] for i in range(2)] for k in ("decoder_self", "cross")])
        enc_rolled = [enc[0], enc[1] @ enc[0]]
        for layer in range(2):
            own[layer] += torch.diagonal(enc_rolled[layer]).tolist()
            share[layer] += plus[layer, :, :S].sum(-1).tolist()
            per_sentence[layer].append(plus[layer, :, :S].sum(-1).tolist())
        for t, v in enumerate(plus[-1, :, :S].sum(-1).tolist()):
            by_pos.setdefault(t, []).append(v)
    result = stats.result()
    got = result["contributions"]
    assert list(got) == ["weights", "norms", "block", "alti"]
    alti = got["alti"]
    assert alti["own_share"] == pytest.approx([np.mean(v) for v in own], abs=1e-6)
    assert alti["source_share"] == pytest.approx([np.mean(v) for v in share], abs=1e-6)
    assert alti["source_share_by_position"] == pytest.approx([np.mean(by_pos[t]) for t in sorted(by_pos)], abs=1e-6)
    assert alti["sentences_by_position"] == [len(by_pos[t]) for t in sorted(by_pos)]
    # standard error with sentences as clusters, from each sentence's mean r_s over its n_s tokens:
    # SE² = S/(S-1) Σ n_s² (r_s - m)² / N²
    for layer in range(2):
        r = np.array([np.mean(v) for v in per_sentence[layer]])
        n = np.array([len(v) for v in per_sentence[layer]], float)
        m, S = (r * n).sum() / n.sum(), len(r)
        want = np.sqrt(S / (S - 1) * (n ** 2 * (r - m) ** 2).sum()) / n.sum()
        assert alti["source_share_se"][layer] == pytest.approx(want, rel=1e-6) and want > 0
    assert len(alti["source_share_by_position"]) == max(len(s.tgt_in) for s in sents)
    # weights: the residual is half of each cross row by construction, so 1 - 2^-(layer+1) but for null rows
    assert got["weights"]["source_share"][0] <= 0.5 + 1e-9
    text = format_table(result)
    assert "token contributions through the model" in text and "decoder src      1" in text
    assert "source share by target position" in text and "\n  src: ALTI+'s source share" in text
    assert f"src ±95%         1 {1.96 * got['weights']['source_share_se'][1]:8.3f}" in text
    # positions beyond the cap are not counted
    capped = SourceShare("alti")
    capped.positions = 3
    for sent in sents:
        capped.update(sent)
    assert len(capped.result()["source_share_by_position"]) == 3


@pytest.mark.unit
def test_masked_lm_rollout_has_own_share_only(mlm_data):
    import torch

    from fairseq_rela.models.conversion import as_rela_roberta
    from fairseq_rela.recording import AttentionRecorder, split_sentences
    from tests.helpers import batch, build_mlm

    task, model = build_mlm(mlm_data)
    model = as_rela_roberta(model).eval()
    sample = batch(task, 3)
    rec = AttentionRecorder(model, block=True)
    with torch.no_grad(), rec:
        model(**sample["net_input"], features_only=True)
    stats = AttentionStatistics(set(), set())
    for sent in split_sentences(sample, rec, task.source_dictionary, task.source_dictionary):
        stats.update(sent)
    got = stats.result()["contributions"]["alti"]
    assert list(got) == ["own_share"] and len(got["own_share"]) == 2 and 0 < got["own_share"][1] < 1
    text = format_table(stats.result())
    assert "encoder own      1" in text and "decoder src" not in text and "by target position" not in text


@pytest.mark.unit
def test_clustered_standard_error_reduces_to_the_plain_one_for_one_token_sentences():
    """One token per sentence: the clustered standard error is the plain standard error of the mean."""
    from fairseq_rela.analysis.statistics import _ClusteredMean

    rng = np.random.default_rng(0)
    x = rng.random((40, 3))
    acc = _ClusteredMean()
    for row in x:
        acc.add(row[:, None])  # (L=3, T=1)
    assert acc.means() == pytest.approx(x.mean(0).tolist())
    assert acc.standard_errors() == pytest.approx((x.std(0, ddof=1) / np.sqrt(len(x))).tolist())
    acc.add(np.array([[np.nan], [0.5], [np.nan]]))  # non-finite values left out of both
    assert acc.means()[0] == pytest.approx(x[:, 0].mean()) and acc.standard_errors()[1] != pytest.approx(
        x[:, 1].std(ddof=1) / np.sqrt(len(x)))
    one = _ClusteredMean()
    one.add(np.ones((2, 4)))
    assert one.standard_errors() == [None, None]  # one sentence: no error to estimate
