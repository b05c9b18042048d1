"""The analysis runner (analysis/runner.py): given sentences are analysed like the binarised split."""
import numpy as np
import pytest

from fairseq_rela.analysis.runner import iter_sentences, load_checkpoint

pytestmark = pytest.mark.e2e  # needs a trained toy model


def test_given_sentences_are_analysed_like_the_binarised_split(toy_data, trained):
    from fairseq_rela.analysis.runner import sentence_dataset

    model, task = load_checkpoint(str(trained("rela")), data=str(toy_data / "bin"), device="cpu")
    src = (toy_data / "test.src").read_text().split("\n")[:3]
    tgt = (toy_data / "test.tgt").read_text().split("\n")[:3]
    given = sorted(iter_sentences(model, task, dataset=sentence_dataset(task, list(zip(src, tgt)))), key=lambda s: s.id)
    split = {s.id: s for s in iter_sentences(model, task, "test") if s.id < 3}
    assert [s.src[:-1] for s in given] == [line.split() for line in src]
    for s in given:
        np.testing.assert_allclose(s.records[("cross", 0)].weighted_norm, split[s.id].records[("cross", 0)].weighted_norm,
                                   atol=1e-5)
