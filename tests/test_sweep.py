"""The alignment sweep (analysis/sweep.py) of fairseq-rela-analyze agrees with fairseq-generate's alignments,
and the RWTH example's summarize.py reads what it wrote."""
import json
import shutil
import subprocess
import sys

import pytest
from fairseq import checkpoint_utils

from fairseq_rela.alignment.aer import alignment_error_rate, read_gold, read_hypothesis
from tests.helpers import REPO, USER_DIR, generate_alignments, run_cli

pytestmark = pytest.mark.e2e


def test_sweep_agrees_with_generate(toy_data, trained, tmp_path):
    ckpt = trained("rela")
    run_cli("fairseq-rela-analyze", toy_data / "bin", "--path", ckpt, "--gen-subset", "test", "--user-dir", USER_DIR,
            "--output-dir", tmp_path, "--gold-alignment", toy_data / "test.align", "--gold-base", "0", "--cpu",
            "--no-plots")
    sweep = json.loads((tmp_path / "alignment.json").read_text())
    gold = read_gold(str(toy_data / "test.align"), base=0)
    for source, shift, layer in (("norms", "AWI", 0), ("weights", "AWO", 1), ("block", "AWI", 1)):
        out = generate_alignments(toy_data, ckpt, "--score-reference", "--alignment-source", source, "--alignment-layer",
                        str(layer), *(["--alignment-shift"] if shift == "AWI" else []))
        (tmp_path / "gen").write_text(out)
        aer = alignment_error_rate(gold, read_hypothesis(str(tmp_path / "gen"))).aer
        assert sweep["per_layer"][f"{source}-{shift}"][str(layer)] == pytest.approx(aer)
    assert set(sweep["per_layer"]) == {f"{s}-{sh}" for s in ("weights", "norms", "block") for sh in ("AWO", "AWI")}
    assert len(sweep["per_head"]) == 2 * 2 * 2 * 4  # layers x sources (weights, norms: the block is per layer) x shifts x heads
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
