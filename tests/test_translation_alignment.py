"""The translation_alignment task (tasks/translation_alignment.py) through the stock fairseq-generate on the
toy corpus: every sentence gets an alignment, soft alignments, and bad alignment options are one `error:` line
with a non-zero exit and no traceback, found before any long work."""
import re

import pytest

from fairseq_rela.alignment.aer import alignment_error_rate, read_gold, read_hypothesis
from tests.helpers import USER_DIR, generate_alignments, last_error_line, run_cli

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("mode", ["--score-reference", "--beam=4"])
def test_every_sentence_gets_an_alignment(toy_data, trained, tmp_path, mode):
    out = generate_alignments(toy_data, trained("softmax"), "--alignment-source", "norms", "--alignment-layer", "1", mode)
    a_lines = [line for line in out.splitlines() if line.startswith("A-")]
    assert len(a_lines) == 41  # the task ignores --required-batch-size-multiple 8 for test sets
    (tmp_path / "gen").write_text(out)
    gold = read_gold(str(toy_data / "test.align"), base=0)
    r = alignment_error_rate(gold, read_hypothesis(str(tmp_path / "gen")))
    assert r.aer < 0.35  # the reversal is learnt; links are read at the predicting position


def test_soft_alignment_has_one_score_per_source_word(toy_data, trained):
    out = generate_alignments(toy_data, trained("rela"), "--score-reference", "--print-alignment", "soft",
                    "--alignment-source", "weights", "--alignment-heads", "0,2")
    lines = dict(line.split("\t", 1) for line in out.splitlines() if line[:2] in ("S-", "A-"))
    for i in range(41):
        src_words, rows = lines[f"S-{i}"].split(), lines[f"A-{i}"].split()
        assert len(rows) == len(src_words)  # one row per target word (same length as source here)
        assert all(len(r.split(",")) == len(src_words) for r in rows)


def test_bad_alignment_options(toy_data, trained):
    proc = run_cli("fairseq-generate", toy_data / "bin", "--user-dir", USER_DIR, "--task", "translation_alignment",
                   "--path", trained("softmax"), "--print-alignment", "--alignment-layer", "5", "--cpu",
                   "--gen-subset", "test", check=False)
    assert proc.returncode != 0 and "--alignment-layer 5: the decoder has layers 0..1" in proc.stderr


@pytest.mark.parametrize("option,value,message", [
    ("--alignment-heads", "", r"--alignment-heads '': expected 'all' or comma-separated head numbers"),
    ("--alignment-heads", ",", r"--alignment-heads ',': expected"),
    ("--alignment-heads", " ", r"--alignment-heads ' ': expected"),
    ("--alignment-heads", "a,b", r"--alignment-heads 'a,b': expected"),
    ("--alignment-heads", "1,1", r"--alignment-heads '1,1': a head is listed twice"),
    ("--alignment-heads", "0,9", r"--alignment-heads 0,9: heads are 0..3"),
    ("--alignment-layer", "99", r"--alignment-layer 99: the decoder has layers 0..1"),
    ("--alignment-source", "foo", r"--alignment-source: unknown value 'foo'; choose one of weights, norms"),
    ("--alignment-merge", "foo", r"--alignment-merge: unknown value 'foo'"),
    ("--alignment-merge-rule", "foo", r"--alignment-merge-rule: unknown value 'foo'"),
])
def test_bad_alignment_option_is_one_line(toy_data, trained, option, value, message):
    proc = run_cli("fairseq-generate", toy_data / "bin", "--user-dir", USER_DIR, "--task", "translation_alignment",
                   "--path", trained("softmax", 1), "--print-alignment", "--score-reference", "--cpu",
                   "--gen-subset", "test", option, value, check=False)
    line = last_error_line(proc, "fairseq-generate")
    assert re.search(message, line), line
    assert "A-" not in proc.stdout  # nothing aligned


def test_a_damaged_or_non_finite_checkpoint_is_one_line(toy_data, trained, tmp_path):
    """fairseq's torch.load would print a traceback for a truncated file and load flipped bytes as weights: the
    task checks the --path files before fairseq loads them, and the loaded parameters before aligning."""
    from tests.helpers import damage_tensor_bytes, resave_with

    ckpt = trained("softmax", 1)
    data = ckpt.read_bytes()
    (tmp_path / "half.pt").write_bytes(data[: len(data) // 2])
    damage_tensor_bytes(ckpt, tmp_path / "flipped.pt")
    resave_with(ckpt, tmp_path / "big.pt", "decoder.layers.0.encoder_attn.k_proj.weight", 2e28)
    for name, message in (("half.pt", r"half\.pt: truncated: the zip archive"),
                          ("flipped.pt", r"flipped\.pt: damaged: \S+/data/\d+ fails its CRC check"),
                          ("big.pt", r"big\.pt: decoder\.layers\.0\.encoder_attn\.k_proj\.weight holds 2e\+28")):
        proc = run_cli("fairseq-generate", toy_data / "bin", "--user-dir", USER_DIR, "--task", "translation_alignment",
                       "--path", tmp_path / name, "--print-alignment", "--score-reference", "--cpu",
                       "--gen-subset", "test", check=False)
        line = last_error_line(proc, "fairseq-generate")
        assert re.search(rf"^fairseq-generate: error: --path .*{message}", line), line
        assert "A-" not in proc.stdout


@pytest.mark.e2e
def test_alti_alignments_equal_the_recorders_matrix(toy_data, trained):
    """--alignment-source alti prints the links of the recorder's ALTI matrix; rolled-out sources and head lists are
    refused in one line."""
    from fairseq_rela.alignment.links import align
    from fairseq_rela.analysis.runner import iter_sentences, load_checkpoint
    ckpt = trained("rela")
    out = generate_alignments(toy_data, ckpt, "--alignment-source", "alti", "--alignment-layer", "1",
                              "--score-reference", "--required-batch-size-multiple", "1")
    gen = {int(m[1]): {tuple(map(int, link.split("-"))) for link in m[2].split()}
           for m in re.finditer(r"^A-(\d+)\t(.*)$", out, re.M)}
    model, task = load_checkpoint(str(ckpt), data=str(toy_data / "bin"), device="cpu")
    sents = list(iter_sentences(model, task, "test", block=True))
    assert len(gen) == len(sents) > 0
    for sent in sents:
        links, _ = align(sent.matrix("alti", 1), sent.src, sent.tgt_out[:-1], False, "none", "none", "sum_mean")
        assert set(links) == gen[sent.id]
    for bad in (("--alignment-source", "rollout-alti"), ("--alignment-source", "alti", "--alignment-heads", "0")):
        proc = run_cli("fairseq-generate", toy_data / "bin", "--user-dir", USER_DIR, "--task", "translation_alignment",
                       "--path", ckpt, "--print-alignment", "--cpu", "--gen-subset", "test", *bad, check=False)
        assert "--alignment-" in last_error_line(proc, "fairseq-generate")
