"""ReLA's head normalisers: initialisation as in the authors' code (bzhangGo/zero, modules/rela.py)."""
import math

import pytest
import torch
from scipy import stats

from fairseq_rela.config import AttentionOptions
from fairseq_rela.normalization import GatedRMSNorm, RMSNorm, build_head_norm


def _ks_uniform(values: torch.Tensor, bound: float) -> float:
    """Kolmogorov-Smirnov p-value of ``values`` against U(-bound, bound)."""
    return stats.kstest(values.double().numpy(), "uniform", args=(-bound, 2 * bound)).pvalue


@pytest.mark.parametrize("dim", [64, 512, 2048])
def test_gate_starts_uniform_unit_scaling(dim):
    """gate ~ U(-√(3/d), √(3/d)) (TF1 variance_scaling, fan_avg, uniform, gain 1), scale = 1."""
    torch.manual_seed(dim)
    norms = [GatedRMSNorm(dim) for _ in range(20)]
    gates = torch.cat([n.gate.detach() for n in norms])
    bound = math.sqrt(3.0 / dim)
    assert gates.abs().max() <= bound
    assert gates.abs().max() > 0.95 * bound  # fills the interval, not a narrower one
    assert _ks_uniform(gates, bound) > 1e-3
    assert abs(gates.var().item() - bound ** 2 / 3) < 0.1 * bound ** 2 / 3  # variance 1/d
    assert all(torch.equal(n.weight.detach(), torch.ones(dim)) for n in norms)


def test_gate_is_about_one_half_at_start():
    torch.manual_seed(0)
    norm = GatedRMSNorm(512)
    z = torch.randn(7, 3, 512)
    gate = torch.sigmoid(norm.gate * z)
    assert (gate - 0.5).abs().max() < 0.2 and abs(gate.mean().item() - 0.5) < 0.01


def test_gate_init_ones_keeps_the_old_default():
    norm = build_head_norm("rms", "g", 256, gate_init="ones")
    assert torch.equal(norm.gate.detach(), torch.ones(256))
    with pytest.raises(ValueError, match="--rela-gate-init: unknown value 'zeros'"):
        GatedRMSNorm(8, gate_init="zeros")


def test_rela_i_gain_starts_uniform():
    torch.manual_seed(3)
    gains = torch.cat([RMSNorm(512, uniform_gain=True).weight.detach() for _ in range(20)])
    bound = math.sqrt(3.0 / 512)
    assert gains.abs().max() <= bound and _ks_uniform(gains, bound) > 1e-3


def test_gate_init_option_reaches_the_model_options():
    from argparse import Namespace

    assert AttentionOptions.from_args(Namespace(attention_activation="rela")).rela_gate_init == "uniform"
    opts = AttentionOptions.from_args(Namespace(attention_activation="rela", rela_gate_init="ones"))
    assert opts.rela_gate_init == "ones"
    with pytest.raises(ValueError, match="applies only to ReLA-g"):
        AttentionOptions.from_args(Namespace(attention_activation="rela", rela_variant="i", rela_gate_init="ones"))
