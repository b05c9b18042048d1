"""The benchmark script runs end to end and reports every variant (no timing is asserted)."""
import json
import subprocess
import sys

import pytest

from tests.helpers import REPO

pytestmark = pytest.mark.e2e


def test_benchmark_quick_run_reports_every_variant(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "benchmark.py"), "--quick", "--layers", "1", "--dim", "32",
         "--heads", "2", "--vocab", "200", "--train-tokens", "128", "--train-lengths", "8,16", "--decode-length", "5",
         "--scaling-lengths", "16", "--output-dir", str(tmp_path)],
        capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "benchmark.json").read_text())
    ratios = result["ratio_vs_fairseq_softmax"]
    assert set(ratios) == {"fairseq-softmax", "fairseq-softmax-2", "softmax", "rela-g", "rela-i", "sparsemax",
                           "entmax15"}
    assert all(v == 1.0 for k, v in ratios["fairseq-softmax"].items() if k.startswith(("train", "decode")))
    assert {"train_tok_s@8", "train_tok_s@16", "decode_sent_s"} <= set(ratios["fairseq-softmax-2"])
    rela = [v for v in ratios if not v.startswith("fairseq")]
    assert all(ratios[v]["analysis_recording_on_over_off"] > 0 and ratios[v]["beam_shared_speedup"] > 0 for v in rela)
    assert all(ratios[v]["align_weights_over_plain"] > 0 and ratios[v]["align_norms_over_plain"] > 0
               for v in ("softmax", "rela-g", "rela-i"))
    assert all(m >= 0 for m in result["peak_memory_mib"].values())
    assert "noise floor (fairseq-softmax-2" in proc.stdout
    assert (tmp_path / "scaling.png").stat().st_size > 0 and "ratios vs stock fairseq softmax" in proc.stdout
