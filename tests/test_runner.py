"""The analysis runner (analysis/runner.py): given sentences are analysed like the binarised split; a masked LM's
split is read unmasked, one sentence at a time, and a task that does not fit the model is one line."""
import numpy as np
import pytest

from fairseq_rela.analysis.runner import iter_sentences, load_checkpoint

@pytest.mark.e2e  # needs a trained toy model
def test_given_sentences_are_analysed_like_the_binarised_split(toy_data, trained):
    from fairseq_rela.analysis.runner import sentence_dataset

    model, task = load_checkpoint(str(trained("rela")), data=str(toy_data / "bin"), device="cpu")
    assert not any(m.training for m in model.modules())  # measured in eval mode: no dropout
    src = (toy_data / "test.src").read_text().split("\n")[:3]
    tgt = (toy_data / "test.tgt").read_text().split("\n")[:3]
    given = sorted(iter_sentences(model, task, dataset=sentence_dataset(task, list(zip(src, tgt)))), key=lambda s: s.id)
    split = {s.id: s for s in iter_sentences(model, task, "test") if s.id < 3}
    assert [s.src[:-1] for s in given] == [line.split() for line in src]
    for s in given:
        np.testing.assert_allclose(s.records[("cross", 0)].weighted_norm, split[s.id].records[("cross", 0)].weighted_norm,
                                   atol=1e-5)


def _masked_lm(mlm_data):
    from fairseq_rela.models.conversion import as_analysable
    from tests.helpers import build_mlm

    task, stock = build_mlm(mlm_data)
    return as_analysable(stock), task


@pytest.mark.unit
def test_a_masked_lm_is_read_unmasked_one_sentence_at_a_time(mlm_data):
    """As Kobayashi et al. fed BERT: every test line whole, `<s> w1 .. wn </s>`, no <mask>; only encoder_self
    records, the target lists empty; given sentences (text_dataset) give the same records."""
    from fairseq_rela.analysis.runner import text_dataset

    model, task = _masked_lm(mlm_data)
    lines = (mlm_data.parent / "test.src").read_text().split("\n")[:-1]
    sentences = sorted(iter_sentences(model, task, "test", max_tokens=200), key=lambda s: s.id)
    assert [s.id for s in sentences] == list(range(len(lines)))
    for sent, line in zip(sentences, lines):
        assert sent.src == ["<s>", *line.split(), "</s>"] and sent.tgt_in == sent.tgt_out == []
        assert sorted(sent.records) == [("encoder_self", 0), ("encoder_self", 1)]
        record = sent.records[("encoder_self", 1)]
        assert record.weights.shape == (4, len(sent.src), len(sent.src))
        np.testing.assert_allclose(record.weights.sum(-1), 1, atol=1e-5)  # softmax rows, no padding left
    given = sorted(iter_sentences(model, task, dataset=text_dataset(task, lines[:3])), key=lambda s: s.id)
    for a, b in zip(given, sentences[:3]):
        assert a.src == b.src
        np.testing.assert_allclose(a.records[("encoder_self", 0)].weighted_norm,
                                   b.records[("encoder_self", 0)].weighted_norm, atol=1e-5)


@pytest.mark.unit
def test_the_task_must_fit_the_model(mlm_data, toy_data):
    from fairseq_rela.analysis.runner import check_task
    from fairseq_rela.errors import OptionError
    from tests.helpers import build

    mlm, mlm_task = _masked_lm(mlm_data)
    translation_task, translation = build(toy_data)
    check_task(mlm, mlm_task, "masked_lm")
    check_task(translation, translation_task, "translation_alignment")
    for model, task, name, message in (
            (mlm, mlm_task, "translation", "--task translation: the checkpoint is a masked LM (roberta_base "
             "(RobertaModel)); analyse it with --task masked_lm"),
            (mlm, translation_task, None, "--task masked_lm: the checkpoint is a masked LM (roberta_base (RobertaModel)) "
             "trained with TranslationTask; fairseq-rela reads only checkpoints of the masked_lm task"),
            (translation, translation_task, "masked_lm", "--task masked_lm: the checkpoint is a translation model "
             "(rela_transformer_tiny (RelaTransformerModel)); analyse it with its translation task (--task translation)")):
        with pytest.raises(OptionError) as err:
            check_task(model, task, name)
        assert str(err.value) == message
    with pytest.raises(OptionError):  # the runner checks it too
        next(iter_sentences(mlm, translation_task, "test"))


@pytest.mark.unit
def test_a_non_finite_output_or_record_is_refused(toy_data, monkeypatch):
    """A model computing NaN (here a weight set to inf after loading, past load_checkpoint's check) measures
    nothing: iter_sentences raises before yielding; a record with a NaN or inf is refused too (a NaN
    mixing_ratio means undefined and passes)."""
    import math

    from fairseq_rela.analysis.runner import check_finite_records
    from fairseq_rela.checkpoint import CheckpointError
    from fairseq_rela.recording import AttentionRecord, SentenceAttention
    from tests.helpers import build

    task, model = build(toy_data)
    assert len(list(iter_sentences(model, task, "valid"))) > 0
    model.encoder.layers[0].fc1.weight.data[0, 0] = math.inf
    with pytest.raises(CheckpointError, match=r"^the model's output is not finite \(sentence \d+ first"):
        next(iter_sentences(model, task, "valid"))

    def sentence(**arrays):
        record = AttentionRecord("cross", 1, weights=np.full((4, 3, 5), 0.2), **arrays)
        return SentenceAttention(7, ["a"], ["b"], ["c"], {("cross", 1): record})

    check_finite_records(sentence(weighted_norm=np.ones((4, 3, 5)), mixing_ratio=np.full((3, 3), np.nan),
                                  alti=np.full((3, 5), np.nan), alti_residual=np.full(3, np.nan)))  # undefined rows
    model.encoder.layers[0].fc1.weight.data[0, 0] = 0.0  # a finite output again, but a record that is not:
    monkeypatch.setattr("fairseq_rela.analysis.runner.split_sentences",
                        lambda *args: [sentence(summed_norm=np.full((3, 5), np.nan))])
    with pytest.raises(CheckpointError, match=r"^cross layer 1: summed_norm of sentence 7 is not finite"):
        next(iter_sentences(model, task, "valid"))
    for arrays, field in (({"weighted_norm": np.full((4, 3, 5), np.nan)}, "weighted_norm"),
                          ({"block_norm": np.full((3, 5), np.inf)}, "block_norm"),
                          ({"mixing_ratio": np.full((3, 3), np.inf)}, "mixing_ratio")):
        with pytest.raises(CheckpointError, match=rf"^cross layer 1: {field} of sentence 7 is not finite"):
            check_finite_records(sentence(**arrays))


@pytest.mark.e2e  # needs a trained toy model
def test_load_checkpoint_refuses_a_damaged_or_non_finite_checkpoint(toy_data, trained, tmp_path):
    from fairseq_rela.checkpoint import CheckpointError
    from tests.helpers import damage_tensor_bytes, resave_with

    ckpt = trained("softmax", 1)
    damage_tensor_bytes(ckpt, tmp_path / "flipped.pt")
    resave_with(ckpt, tmp_path / "big.pt", "decoder.layers.1.fc2.weight", 2e28)  # a valid file (CRCs right)
    resave_with(ckpt, tmp_path / "nan.pt", "encoder.embed_tokens.weight", float("nan"))
    for name, message in (("flipped.pt", r"^damaged: \S+/data/\d+ fails its CRC check"),
                          ("big.pt", r"^decoder\.layers\.1\.fc2\.weight holds 2e\+28, beyond"),
                          ("nan.pt", r"^encoder\.embed_tokens\.weight holds nan \(not finite\)")):
        with pytest.raises(CheckpointError, match=message):
            load_checkpoint(str(tmp_path / name), data=str(toy_data / "bin"), device="cpu")
    model, _ = load_checkpoint(str(ckpt), data=str(toy_data / "bin"), device="cpu")
    assert model.training is False


@pytest.mark.unit
def test_iter_batches_makes_a_new_batching_for_new_settings(toy_data):
    """Called again on the same task and split with another batch_size/max_tokens, the batching follows the
    new settings (fairseq's task caches the first batch iterator made for a dataset)."""
    from fairseq_rela.analysis.runner import iter_batches, load_split
    from tests.helpers import build

    task, _ = build(toy_data)
    ds = load_split(task, "test")
    sizes = {}
    for name, kwargs in (("whole", dict(max_tokens=100000)), ("one", dict(max_tokens=None, batch_size=1)),
                         ("tokens", dict(max_tokens=60))):
        sizes[name] = [len(b["id"]) for b in iter_batches(task, ds, **kwargs)]
        assert sum(sizes[name]) == len(ds) == 41
    assert sizes["whole"] == [41] and sizes["one"] == [1] * 41
    assert 1 < len(sizes["tokens"]) < 41
