"""checkpoint.py: the allow-list's neighbours, the checks made before a checkpoint is measured: the file whole
(zip CRC, which torch.load never checks), every value finite and of a sane magnitude, one-line messages."""
import pytest
import torch

from fairseq_rela.checkpoint import (MAX_MAGNITUDE, CheckpointError, check_tensors, first_bad_tensor, first_line,
                                     verify_file)
from tests.helpers import damage_tensor_bytes

pytestmark = pytest.mark.unit


def _save(path, **kwargs):
    torch.save({"model": {"a.weight": torch.zeros(64, 64), "b.bias": torch.ones(8)}}, path, **kwargs)
    return path


def test_verify_file_catches_what_torch_load_does_not(tmp_path):
    good = _save(tmp_path / "good.pt")
    verify_file(str(good))
    member = damage_tensor_bytes(good, tmp_path / "flipped.pt", value=2e28)
    loaded = torch.load(tmp_path / "flipped.pt", weights_only=True)["model"]  # torch reads it, no complaint
    assert float(loaded["a.weight"].abs().max()) == pytest.approx(2e28, rel=1e-6)
    with pytest.raises(CheckpointError, match=rf"damaged: {member} fails its CRC check"):
        verify_file(str(tmp_path / "flipped.pt"))
    data = good.read_bytes()
    (tmp_path / "half.pt").write_bytes(data[: len(data) // 2])
    (tmp_path / "empty.pt").write_bytes(b"")
    (tmp_path / "text.pt").write_text("not a checkpoint")
    for name, message in (("half.pt", r"^truncated: the zip archive"), ("empty.pt", r"^the file is empty \(0 bytes\)$"),
                          ("text.pt", r"^not a torch checkpoint"), ("missing.pt", r"^no such file$")):
        with pytest.raises(CheckpointError, match=message):
            verify_file(str(tmp_path / name))
    verify_file(str(_save(tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)))  # no CRC to check


@pytest.mark.parametrize("value,message", [
    (float("nan"), r"^b\.bias holds nan \(not finite\)"),
    (float("inf"), r"^b\.bias holds inf \(not finite\)"),
    (float("-inf"), r"^b\.bias holds -inf \(not finite\)"),
    (2e28, r"^b\.bias holds 2e\+28, beyond ±1\.8e\+19 \(its square overflows float32"),
    (-2e28, r"^b\.bias holds -2e\+28, beyond"),
])
def test_check_tensors_names_the_first_bad_tensor(value, message):
    good = torch.randn(4, 4)
    bad = torch.ones(8)
    bad[5] = value
    with pytest.raises(CheckpointError, match=message):
        check_tensors([("a.weight", good), ("b.bias", bad), ("c.weight", torch.full((2,), float("nan")))])


def test_check_tensors_passes_what_a_trained_model_may_hold():
    big = torch.tensor([MAX_MAGNITUDE * 0.99, -1e18])  # large but finite, its square still a float32
    check_tensors([("big", big), ("half", torch.tensor([65504.0, -3.0], dtype=torch.float16)),
                   ("bf16", torch.tensor([1e18], dtype=torch.bfloat16)),
                   ("steps", torch.tensor([2 ** 62])), ("empty", torch.zeros(0))])
    assert first_bad_tensor([("half", torch.tensor([float("inf")], dtype=torch.float16))]) == ("half", float("inf"))
    name, value = first_bad_tensor([("x", torch.tensor([1.0, float("nan")]))])
    assert name == "x" and value != value  # nan


def test_first_line_of_an_empty_message_is_the_type():
    assert first_line(IndexError()) == "IndexError"
    assert first_line(RuntimeError("\n  first\nsecond")) == "first"
