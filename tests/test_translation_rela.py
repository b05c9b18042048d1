"""The translation_rela task (tasks/translation_rela.py) through fairseq-train: attention statistics logged at
validation, --log-attention-stats needs a rela_transformer, resuming with other attention options is refused."""
import re

import pytest

from tests.helpers import TRAIN_ARGS, USER_DIR, last_error_line, run_cli

pytestmark = pytest.mark.e2e


def test_training_logs_attention_statistics_at_validation(toy_data, tmp_path):
    from tests.helpers import TRAIN_ARGS

    proc = run_cli("fairseq-train", toy_data / "bin", "--user-dir", USER_DIR, *TRAIN_ARGS, "--task", "translation_rela",
                   "--log-attention-stats", "--attention-activation", "rela", "--max-epoch", "1", "--save-dir", tmp_path)
    (valid_line,) = [line for line in (proc.stdout + proc.stderr).splitlines() if "valid on 'valid' subset" in line]
    for kind in ("encoder_self", "decoder_self", "cross"):
        for stat in ("sparsity", "null_rate"):
            value = float(valid_line.split(f"{stat}_{kind} ")[1].split()[0])
            assert 0 <= value <= 1
    assert float(valid_line.split("sparsity_cross ")[1].split()[0]) > 0


def test_log_attention_stats_needs_a_rela_model_when_built(toy_data, tmp_path):
    args = list(TRAIN_ARGS)
    args[args.index("--arch") + 1] = "transformer"
    proc = run_cli("fairseq-train", toy_data / "bin", "--user-dir", USER_DIR, *args, "--task", "translation_rela",
                   "--log-attention-stats", "--encoder-layers", "1", "--decoder-layers", "1",
                   "--encoder-embed-dim", "16", "--decoder-embed-dim", "16", "--encoder-ffn-embed-dim", "16",
                   "--decoder-ffn-embed-dim", "16", "--max-epoch", "1", "--save-dir", tmp_path, check=False)
    line = last_error_line(proc, "fairseq-train")
    assert "--log-attention-stats needs a rela_transformer model" in line
    assert "| epoch 001" not in proc.stdout + proc.stderr and not list(tmp_path.iterdir())  # before any training


def test_resume_with_other_attention_options_is_refused(toy_data, tmp_path):
    common = (toy_data / "bin", "--user-dir", USER_DIR, *TRAIN_ARGS, "--task", "translation_rela",
              "--save-dir", tmp_path)
    run_cli("fairseq-train", *common, "--attention-activation", "sparsemax", "--max-epoch", "1")
    before = (tmp_path / "checkpoint_last.pt").stat().st_mtime_ns
    proc = run_cli("fairseq-train", *common, "--attention-activation", "softmax", "--max-epoch", "2", check=False)
    line = last_error_line(proc, "fairseq-train")
    assert re.search(r"checkpoint_last\.pt was trained with other attention options \(activation 'sparsemax' -> "
                     r"'softmax'\).*--allow-attention-change", line), line
    assert (tmp_path / "checkpoint_last.pt").stat().st_mtime_ns == before
    ok = run_cli("fairseq-train", *common, "--attention-activation", "softmax", "--max-epoch", "2",
                 "--allow-attention-change")
    assert re.search(r"Loaded checkpoint .*checkpoint_last\.pt \(epoch 2", ok.stdout + ok.stderr)
    same = run_cli("fairseq-train", *common, "--attention-activation", "softmax", "--max-epoch", "3")
    assert re.search(r"end of epoch 3", same.stdout + same.stderr)  # the same options resume as before


def test_under_the_stock_task_a_resume_whose_head_normaliser_differs_is_one_line(toy_data, tmp_path):
    """Issue 36: resuming ReLA-g as ReLA-i under the stock --task translation ended in fairseq's "Cannot load model
    parameters" traceback; the model now names the head-normaliser parameters that differ, in one line."""
    common = (toy_data / "bin", "--user-dir", USER_DIR, *TRAIN_ARGS, "--task", "translation", "--save-dir", tmp_path,
              "--attention-activation", "rela")
    run_cli("fairseq-train", *common, "--rela-variant", "g", "--max-update", "1")
    before = (tmp_path / "checkpoint_last.pt").stat().st_mtime_ns
    proc = run_cli("fairseq-train", *common, "--rela-variant", "i", "--max-update", "2", check=False)
    line = last_error_line(proc, "fairseq-train")
    assert re.search(r"error: the checkpoint has \S+\.head_norm\.gate \(and \d+ more head-normaliser parameters\): it "
                     r"was trained with other attention options", line), line
    assert (tmp_path / "checkpoint_last.pt").stat().st_mtime_ns == before
