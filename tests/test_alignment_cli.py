"""Alignments through the stock fairseq-generate and the analysis sweep, on the toy corpus."""
import json
import shutil
import subprocess
import sys

import pytest
from fairseq import checkpoint_utils

from fairseq_rela.analysis.aer import alignment_error_rate, read_gold, read_hypothesis
from tests.conftest import REPO, USER_DIR, run_cli


def _generate(toy_data, ckpt, *args):
    proc = run_cli("fairseq-generate", toy_data / "bin", "--user-dir", USER_DIR, "--task", "translation_alignment",
                   "--path", ckpt, "--print-alignment", "--cpu", "--required-batch-size-multiple", "8",
                   "--gen-subset", "test", "--max-tokens", "300", *args)
    return proc.stdout


@pytest.mark.parametrize("mode", ["--score-reference", "--beam=4"])
def test_every_sentence_gets_an_alignment(toy_data, trained, tmp_path, mode):
    out = _generate(toy_data, trained("softmax"), "--alignment-source", "norms", "--alignment-layer", "1", mode)
    a_lines = [line for line in out.splitlines() if line.startswith("A-")]
    assert len(a_lines) == 41  # the task ignores --required-batch-size-multiple 8 for test sets
    (tmp_path / "gen").write_text(out)
    gold = read_gold(str(toy_data / "test.align"), base=0)
    r = alignment_error_rate(gold, read_hypothesis(str(tmp_path / "gen")))
    assert r.aer < 0.35  # the reversal is learnt; links are read at the predicting position


def test_soft_alignment_has_one_score_per_source_word(toy_data, trained):
    out = _generate(toy_data, trained("rela"), "--score-reference", "--print-alignment", "soft",
                    "--alignment-source", "weights", "--alignment-heads", "0,2")
    lines = dict(line.split("\t", 1) for line in out.splitlines() if line[:2] in ("S-", "A-"))
    for i in range(41):
        src_words, rows = lines[f"S-{i}"].split(), lines[f"A-{i}"].split()
        assert len(rows) == len(src_words)  # one row per target word (same length as source here)
        assert all(len(r.split(",")) == len(src_words) for r in rows)


def test_sweep_agrees_with_generate(toy_data, trained, tmp_path):
    ckpt = trained("rela")
    run_cli("fairseq-rela-analyze", toy_data / "bin", "--path", ckpt, "--gen-subset", "test", "--user-dir", USER_DIR,
            "--output-dir", tmp_path, "--gold-alignment", toy_data / "test.align", "--gold-base", "0", "--cpu",
            "--no-plots")
    sweep = json.loads((tmp_path / "alignment.json").read_text())
    gold = read_gold(str(toy_data / "test.align"), base=0)
    for source, shift, layer in (("norms", "AWI", 0), ("weights", "AWO", 1)):
        out = _generate(toy_data, ckpt, "--score-reference", "--alignment-source", source, "--alignment-layer",
                        str(layer), *(["--alignment-shift"] if shift == "AWI" else []))
        (tmp_path / "gen").write_text(out)
        aer = alignment_error_rate(gold, read_hypothesis(str(tmp_path / "gen"))).aer
        assert sweep["per_layer"][f"{source}-{shift}"][str(layer)] == pytest.approx(aer)
    assert set(sweep["per_layer"]) == {"weights-AWO", "weights-AWI", "norms-AWO", "norms-AWI"}
    assert len(sweep["per_head"]) == 2 * 2 * 2 * 4  # layers x sources x shifts x heads
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert stats["num_updates"] == checkpoint_utils.load_checkpoint_to_cpu(str(ckpt))["optimizer_history"][-1]["num_updates"]
    _summarize_example(tmp_path, sweep, stats["num_updates"])


def _summarize_example(analysis, sweep, updates):
    """The RWTH example's summarize.py reads what fairseq-rela-analyze wrote (one row per model)."""
    work = analysis / "work"
    for name in (f"rela@{updates}", "softmax"):
        d = work / f"analysis-{name}"
        d.mkdir(parents=True)
        for f in ("alignment.json", "stats.json"):
            shutil.copy(analysis / f, d / f)
    subprocess.run([sys.executable, str(REPO / "examples" / "rwth_alignment" / "summarize.py"), str(work)],
                   check=True, capture_output=True)
    rows = [line.split(" | ") for line in (work / "results.md").read_text().splitlines() if line.startswith("| rela ")]
    assert len(rows) == 1 and rows[0][1] == str(updates)
    assert rows[0][3].endswith(f"({100 * sweep['best_layer']['aer']:.1f})")
    assert (work / "aer_by_layer.png").stat().st_size > 0


def test_bad_alignment_options(toy_data, trained):
    proc = run_cli("fairseq-generate", toy_data / "bin", "--user-dir", USER_DIR, "--task", "translation_alignment",
                   "--path", trained("softmax"), "--print-alignment", "--alignment-layer", "5", "--cpu",
                   "--gen-subset", "test", check=False)
    assert proc.returncode != 0 and "--alignment-layer 5: the decoder has layers 0..1" in proc.stderr
