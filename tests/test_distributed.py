"""Distributed and resumed training through the real console scripts (fairseq-rela-launch, fairseq-train):
two gloo processes keep identical parameters on both ranks, and without dropout equal (bit for bit) one process with
--update-freq 2 (with dropout they do not: each rank draws the masks one process draws for its first batch); an
interrupted run resumed from checkpoint_last.pt ends where an uninterrupted one does."""
import textwrap

import pytest
import torch

from tests.helpers import TRAIN_ARGS, USER_DIR, run_cli

pytestmark = pytest.mark.e2e

# A test-only fairseq plugin: the translation task, subclassed at fairseq's begin_valid_epoch seam to save
# each rank's parameters (fairseq saves checkpoints on rank 0 only).
DUMP_PLUGIN = '''
import os
import torch
import fairseq_rela.models  # noqa: F401  (registers rela_transformer, allow-lists checkpoint globals)
from fairseq.tasks import register_task
from fairseq.tasks.translation import TranslationConfig, TranslationTask


@register_task("translation_rank_dump", dataclass=TranslationConfig)
class TranslationRankDump(TranslationTask):
    def begin_valid_epoch(self, epoch, model):
        super().begin_valid_epoch(epoch, model)
        rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
        torch.save(model.state_dict(), os.path.join(os.environ["RANK_DUMP_DIR"], f"rank{rank}.pt"))
'''

ARGS = [a for a in TRAIN_ARGS if a != "--cpu"]  # the launcher's --cpu adds it


def params(path):
    state = torch.load(path, map_location="cpu", weights_only=True)
    return state["model"] if "model" in state else state


@pytest.fixture(scope="module")
def dump_plugin(tmp_path_factory):
    d = tmp_path_factory.mktemp("plugin") / "rank_dump_plugin"
    d.mkdir()
    (d / "__init__.py").write_text(textwrap.dedent(DUMP_PLUGIN))
    return d


def launch(toy_data, plugin, save, dump, nproc, *extra):
    dump.mkdir(parents=True, exist_ok=True)
    import os

    os.environ["RANK_DUMP_DIR"] = str(dump)
    try:
        return run_cli("fairseq-rela-launch", "--nproc-per-node", nproc, "--cpu", "--", toy_data / "bin",
                       "--user-dir", plugin, "--task", "translation_rank_dump", *ARGS,
                       "--attention-activation", "rela", "--rela-variant", "g", "--max-update", "6",
                       "--save-dir", save, "--data-buffer-size", "0", *extra)  # see run_cli
    finally:
        del os.environ["RANK_DUMP_DIR"]


@pytest.mark.parametrize("dropout", ["0", "0.1"], ids=["no-dropout", "dropout-0.1"])
def test_two_gloo_processes_equal_one_with_update_freq_2_only_without_dropout(toy_data, dump_plugin, tmp_path,
                                                                              dropout):
    # fairseq reseeds every update with seed + updates: with two processes both ranks' batches get the masks that
    # one process (--update-freq 2) draws for the first of its two batches only
    rates = ["--dropout", dropout, "--attention-dropout", dropout, "--activation-dropout", dropout]
    launch(toy_data, dump_plugin, tmp_path / "ckpt2", tmp_path / "dump2", 2, *rates)
    launch(toy_data, dump_plugin, tmp_path / "ckpt1", tmp_path / "dump1", 1, "--update-freq", "2", *rates)
    r0, r1 = params(tmp_path / "dump2/rank0.pt"), params(tmp_path / "dump2/rank1.pt")
    single = params(tmp_path / "dump1/rank0.pt")
    assert not (tmp_path / "dump1/rank1.pt").exists()
    saved = params(tmp_path / "ckpt2/checkpoint_last.pt")
    assert torch.load(tmp_path / "ckpt2/checkpoint_last.pt", weights_only=True)["optimizer_history"][-1][
        "num_updates"] == 6
    assert set(r0) == set(r1) == set(single)
    for k in r0:
        assert torch.equal(r0[k], r1[k]), f"ranks differ in {k}"
        assert torch.equal(saved[k], r0[k])
    gap = max((r0[k] - single[k]).abs().max().item() for k in r0)
    if dropout == "0":
        assert gap == 0, f"2 processes vs 1 with --update-freq 2 differ by {gap:.2e}"
    else:
        assert gap > 0, f"with dropout {dropout}, 2 processes equal 1 with --update-freq 2: the README says they differ"


@pytest.mark.parametrize("activation", [("rela", "--rela-variant", "g"), ("entmax15",)], ids=["rela-g", "entmax15"])
def test_resumed_run_equals_uninterrupted(toy_data, tmp_path, activation):
    common = [toy_data / "bin", "--user-dir", USER_DIR, *ARGS, "--cpu",
              "--attention-activation", *activation, "--dropout", "0.1"]
    run_cli("fairseq-train", *common, "--max-update", "12", "--save-dir", tmp_path / "full")
    run_cli("fairseq-train", *common, "--max-update", "5", "--save-dir", tmp_path / "resumed")
    first = torch.load(tmp_path / "resumed/checkpoint_last.pt", weights_only=True)
    assert first["optimizer_history"][-1]["num_updates"] == 5
    assert first["extra_state"]["train_iterator"]["iterations_in_epoch"] > 0  # interrupted mid-epoch
    log = run_cli("fairseq-train", *common, "--max-update", "12", "--save-dir", tmp_path / "resumed")
    assert "@ 5 updates" in log.stdout + log.stderr  # fairseq: "Loaded checkpoint ... (epoch 1 @ 5 updates)"
    full, resumed = params(tmp_path / "full/checkpoint_last.pt"), params(tmp_path / "resumed/checkpoint_last.pt")
    five = params(tmp_path / "full/checkpoint_last.pt")
    assert set(full) == set(resumed)
    for k in full:
        assert torch.equal(full[k], resumed[k]), f"{k} differs after resuming"
    assert any(not torch.equal(first["model"][k], five[k]) for k in five)  # the 7 further updates changed something
