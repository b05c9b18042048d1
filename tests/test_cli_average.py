"""fairseq-rela-average (cli/average.py) against a hand-computed average, and its bad inputs."""
import pytest
import torch

from tests.helpers import run_cli

pytestmark = pytest.mark.e2e


def _checkpoint(path, seed, updates=0):
    g = torch.Generator().manual_seed(seed)
    model = {"w": torch.randn(3, 4, generator=g), "h": torch.randn(5, generator=g).half(),
             "count": torch.tensor([7, 8])}
    torch.save({"model": model, "extra_state": {"seed": seed}, "optimizer_history": [{"num_updates": updates}]}, path)
    return model


def test_average_against_hand_computed(tmp_path):
    models = [_checkpoint(tmp_path / f"checkpoint_1_{u}.pt", seed, u) for seed, u in ((1, 9), (2, 10), (3, 100))]
    _checkpoint(tmp_path / "checkpoint_1_8.pt", 4, 8)  # older: left out by --last 3
    run_cli("fairseq-rela-average", "--inputs", tmp_path, "--last", "3", "--output", tmp_path / "avg.pt")
    avg = torch.load(tmp_path / "avg.pt", weights_only=True)
    a, b, c = models
    for i in range(3):
        for j in range(4):
            assert abs(avg["model"]["w"][i, j].item() - (a["w"][i, j] + b["w"][i, j] + c["w"][i, j]).item() / 3) < 1e-6
    expected_h = [(float(a["h"][k]) + float(b["h"][k]) + float(c["h"][k])) / 3 for k in range(5)]
    assert avg["model"]["h"].dtype == torch.float16
    assert torch.equal(avg["model"]["h"], torch.tensor(expected_h).half())
    assert torch.equal(avg["model"]["count"], torch.tensor([7, 8]))
    assert avg["extra_state"]["seed"] == 3  # the newest input's other fields (update 100, not 10)

    explicit = run_cli("fairseq-rela-average", "--inputs", tmp_path / "checkpoint_1_9.pt",
                       tmp_path / "checkpoint_1_10.pt", "--output", tmp_path / "two.pt")
    assert "averaged 2 checkpoints" in explicit.stdout
    two = torch.load(tmp_path / "two.pt", weights_only=True)["model"]["w"]
    assert torch.allclose(two, (a["w"] + b["w"]) / 2, atol=1e-6)


def test_average_bad_input(tmp_path):
    _checkpoint(tmp_path / "checkpoint_1_1.pt", 1)
    (tmp_path / "broken.pt").write_bytes(b"not a checkpoint")
    cases = [
        (["--inputs", tmp_path / "broken.pt", "--output", tmp_path / "o.pt"], "broken.pt: cannot load"),
        (["--inputs", tmp_path / "missing.pt", "--output", tmp_path / "o.pt"], "missing.pt: no such checkpoint"),
        (["--inputs", tmp_path, "--last", "5", "--output", tmp_path / "o.pt"], "1 checkpoints"),
        (["--inputs", tmp_path, "--output", tmp_path / "o.pt"], "needs --last"),
    ]
    for args, message in cases:
        proc = run_cli("fairseq-rela-average", *args, check=False)
        assert proc.returncode != 0 and message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
        assert not (tmp_path / "o.pt").exists()
