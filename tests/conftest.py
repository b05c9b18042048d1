"""Shared fixtures: a synthetic parallel corpus with known word alignments, binarised and trained
through the real fairseq console scripts.  Non-fixture helpers are in helpers.py."""
from pathlib import Path

import pytest

import fairseq_rela.models  # noqa: F401  (registers: fairseq's --user-dir loader skips an already imported package)
import fairseq_rela.tasks  # noqa: F401
from fairseq_rela.toy import write_toy_corpus
from tests.helpers import MLM_ARGS, TRAIN_ARGS, USER_DIR, run_cli


@pytest.fixture(scope="session")
def toy_data(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("toy")
    write_toy_corpus(d)
    run_cli("fairseq-preprocess", "--source-lang", "src", "--target-lang", "tgt", "--trainpref", d / "train",
            "--validpref", d / "valid", "--testpref", d / "test", "--destdir", d / "bin", "--workers", "1")
    return d


def train(toy_data: Path, activation: str, epochs: int, *extra: str) -> Path:
    save = toy_data / f"ckpt-{activation}-e{epochs}-{'-'.join(extra) or 'default'}"  # one model per settings
    if not (save / "checkpoint_last.pt").exists():
        run_cli("fairseq-train", toy_data / "bin", "--user-dir", USER_DIR, *TRAIN_ARGS,
                "--attention-activation", activation, "--max-epoch", str(epochs), "--save-dir", save, *extra)
    return save / "checkpoint_last.pt"


@pytest.fixture(scope="session")
def trained(toy_data):
    """``trained(activation, epochs=20, *extra)`` -> checkpoint path, trained once per session."""
    return lambda activation, epochs=20, *extra: train(toy_data, activation, epochs, *extra)


@pytest.fixture(scope="session")
def mlm_data(toy_data) -> Path:
    """The toy corpus's source side, binarised for --task masked_lm (``fairseq-preprocess --only-source``)."""
    d = toy_data / "mlm"
    if not (d / "bin" / "dict.txt").exists():
        run_cli("fairseq-preprocess", "--only-source", "--trainpref", toy_data / "train.src", "--validpref",
                toy_data / "valid.src", "--testpref", toy_data / "test.src", "--destdir", d / "bin", "--workers", "1")
    return d


@pytest.fixture(scope="session")
def mlm_trained(mlm_data) -> Path:
    """A tiny roberta trained a few updates by the stock ``fairseq-train --task masked_lm``."""
    save = mlm_data / "ckpt"
    if not (save / "checkpoint_last.pt").exists():
        run_cli("fairseq-train", mlm_data / "bin", *MLM_ARGS, "--optimizer", "adam", "--lr", "1e-3", "--max-tokens",
                "512", "--max-update", "5", "--seed", "1", "--cpu", "--no-progress-bar", "--num-workers", "0",
                "--no-epoch-checkpoints", "--save-dir", save)
    return save / "checkpoint_last.pt"
