"""Shared fixtures: a synthetic parallel corpus with known word alignments, binarised and trained
through the real fairseq console scripts."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fairseq_rela.toy import write_toy_corpus

REPO = Path(__file__).resolve().parents[1]
USER_DIR = str(REPO / "fairseq_rela")
BIN = Path(sys.executable).parent
SHARED_DATA = Path(os.environ.get("FAIRSEQ_RELA_DATA", REPO.parent / "shared" / "data"))


def run_cli(name: str, *args: str, cwd=None, check=True, input=None) -> subprocess.CompletedProcess:
    """Run an installed console script (fairseq-train, fairseq-rela-aer, ...) and return its result."""
    proc = subprocess.run(
        [str(BIN / name), *map(str, args)], cwd=cwd, capture_output=True, text=True, input=input,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"{name} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return proc


@pytest.fixture(scope="session")
def toy_data(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("toy")
    write_toy_corpus(d)
    run_cli("fairseq-preprocess", "--source-lang", "src", "--target-lang", "tgt", "--trainpref", d / "train",
            "--validpref", d / "valid", "--testpref", d / "test", "--destdir", d / "bin", "--workers", "1")
    return d


TRAIN_ARGS = (
    "--arch", "rela_transformer_tiny", "--optimizer", "adam", "--adam-betas", "(0.9,0.98)", "--clip-norm", "1.0",
    "--lr", "2e-3", "--lr-scheduler", "inverse_sqrt", "--warmup-updates", "100", "--max-tokens", "1000",
    "--dropout", "0.0", "--seed", "1", "--cpu",
    "--no-progress-bar", "--log-interval", "50", "--no-epoch-checkpoints",
)


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
