"""The plugin's task options through the stock console scripts: a bad value is one `error:` line with a
non-zero exit and no traceback, found before any long work."""
import re

import pytest

from tests.conftest import TRAIN_ARGS, USER_DIR, run_cli


def _last_error_line(proc, prog: str) -> str:
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith(f"{prog}: error: "), line
    return line


@pytest.mark.parametrize("option,value,message", [
    ("--alignment-heads", "", r"--alignment-heads '': expected 'all' or comma-separated head numbers"),
    ("--alignment-heads", ",", r"--alignment-heads ',': expected"),
    ("--alignment-heads", " ", r"--alignment-heads ' ': expected"),
    ("--alignment-heads", "a,b", r"--alignment-heads 'a,b': expected"),
    ("--alignment-heads", "1,1", r"--alignment-heads '1,1': a head is listed twice"),
    ("--alignment-heads", "0,9", r"--alignment-heads 0,9: heads are 0..3"),
    ("--alignment-layer", "99", r"--alignment-layer 99: the decoder has layers 0..1"),
    ("--alignment-source", "foo", r"--alignment-source: unknown value 'foo'; choose weights or norms"),
    ("--alignment-merge", "foo", r"--alignment-merge: unknown value 'foo'"),
    ("--alignment-merge-rule", "foo", r"--alignment-merge-rule: unknown value 'foo'"),
])
def test_bad_alignment_option_is_one_line(toy_data, trained, option, value, message):
    proc = run_cli("fairseq-generate", toy_data / "bin", "--user-dir", USER_DIR, "--task", "translation_alignment",
                   "--path", trained("softmax", 1), "--print-alignment", "--score-reference", "--cpu",
                   "--gen-subset", "test", option, value, check=False)
    line = _last_error_line(proc, "fairseq-generate")
    assert re.search(message, line), line
    assert "A-" not in proc.stdout  # nothing aligned


def test_log_attention_stats_needs_a_rela_model_when_built(toy_data, tmp_path):
    args = list(TRAIN_ARGS)
    args[args.index("--arch") + 1] = "transformer"
    proc = run_cli("fairseq-train", toy_data / "bin", "--user-dir", USER_DIR, *args, "--task", "translation_rela",
                   "--log-attention-stats", "--encoder-layers", "1", "--decoder-layers", "1",
                   "--encoder-embed-dim", "16", "--decoder-embed-dim", "16", "--encoder-ffn-embed-dim", "16",
                   "--decoder-ffn-embed-dim", "16", "--max-epoch", "1", "--save-dir", tmp_path, check=False)
    line = _last_error_line(proc, "fairseq-train")
    assert "--log-attention-stats needs a rela_transformer model" in line
    assert "| epoch 001" not in proc.stdout + proc.stderr and not list(tmp_path.iterdir())  # before any training


def test_resume_with_other_attention_options_is_refused(toy_data, tmp_path):
    common = (toy_data / "bin", "--user-dir", USER_DIR, *TRAIN_ARGS, "--task", "translation_rela",
              "--save-dir", tmp_path)
    run_cli("fairseq-train", *common, "--attention-activation", "sparsemax", "--max-epoch", "1")
    before = (tmp_path / "checkpoint_last.pt").stat().st_mtime_ns
    proc = run_cli("fairseq-train", *common, "--attention-activation", "softmax", "--max-epoch", "2", check=False)
    line = _last_error_line(proc, "fairseq-train")
    assert re.search(r"checkpoint_last\.pt was trained with other attention options \(activation 'sparsemax' -> "
                     r"'softmax'\).*--allow-attention-change", line), line
    assert (tmp_path / "checkpoint_last.pt").stat().st_mtime_ns == before
    ok = run_cli("fairseq-train", *common, "--attention-activation", "softmax", "--max-epoch", "2",
                 "--allow-attention-change")
    assert re.search(r"Loaded checkpoint .*checkpoint_last\.pt \(epoch 2", ok.stdout + ok.stderr)
    same = run_cli("fairseq-train", *common, "--attention-activation", "softmax", "--max-epoch", "3")
    assert re.search(r"end of epoch 3", same.stdout + same.stderr)  # the same options resume as before
