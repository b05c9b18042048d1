"""The GPU path checked without a GPU (fairseq_rela/kernels/aot.py, tiles.py; scripts/check_kernels.py,
fairseq-rela-kernels): ReLA's kernels compiled ahead of time for real targets with the launch plan the package
uses there, every cell within the target's shared memory; the plan per GPU; the command's refusals; the
first command a GPU user runs, exercised on the CPU under Triton's interpreter.

Compilation runs in subprocesses without TRITON_INTERPRET (other test files set it for this process)."""
import json
import os
import re
import subprocess
import sys

import pytest
import torch

from fairseq_rela.kernels.tiles import FP32_ROWS, HALF_ROWS, SHARED_LIMITS, LaunchPlan, block_d, launch_plan
from tests.helpers import BIN, REPO

COMPILE_ENV = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
COMPILE_ENV.update(PYTHONWARNINGS="ignore", TRITON_DEFAULT_FP_FUSION="1")


def _check(*args, env=COMPILE_ENV, prog=(sys.executable, str(REPO / "scripts" / "check_kernels.py"))):
    return subprocess.run([*prog, *args], capture_output=True, text=True, env=env, cwd=REPO, timeout=1800)


@pytest.mark.e2e
@pytest.mark.parametrize("targets,dtype", [("sm_75,sm_86", "fp32"), ("sm_90", "fp16")])
def test_ci_subset_compiles_within_every_targets_shared_memory(tmp_path, targets, dtype):
    # the cells a change is most likely to break: fp32 where shared memory is tight, fp16 on Hopper; the
    # flag combinations the package launches (padding mask, additive mask, dropout)
    out = tmp_path / "cells.json"
    proc = _check("--targets", targets, "--dtypes", dtype, "--head-dims", "64", "--flags", "package", "--no-usage",
                  "--json", str(out))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    cells = json.loads(out.read_text())["cells"]
    rela = [c for c in cells if c["kernel"] != "dropout_keep"]
    assert len(rela) == len(targets.split(",")) * 3 * 8 and all(c["ok"] for c in cells)
    for c in rela:
        assert c["shared"] <= c["limit"] == SHARED_LIMITS[int(c["target"][3:])]
        # the check compiled the plan the package launches on that target
        tiles = launch_plan(int(c["target"][3:]), getattr(torch, {"fp32": "float32", "fp16": "float16"}[dtype]),
                            c["head_dim"]).tiles(c["kernel"])
        assert (c["block_m"], c["block_n"], c["num_warps"], c["num_stages"]) == \
               (tiles.block_m, tiles.block_n, tiles.num_warps, tiles.num_stages)
    assert "cells compiled within their target's shared memory" in proc.stdout


@pytest.mark.e2e
def test_a_cell_over_its_limit_fails_the_check():
    # the fast fp32 tiles on an RTX 30xx/40xx (sm_86): backward dQ needs more than its 101,376 B
    code = ("import sys, torch; from fairseq_rela.kernels import tiles; from fairseq_rela.cli.kernels import main; "
            "fast = tiles.Tiles(64, 64); tiles.FP32_ROWS = ((101376, {64: (fast, fast, fast)}),); "
            "sys.exit(main(['compile', '--targets', 'sm_86', '--dtypes', 'fp32', '--head-dims', '64', "
            "'--flags', 'bounds', '--no-usage']))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=COMPILE_ENV, cwd=REPO,
                          timeout=1800)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "FAILED backward_q sm_86 fp32 head dim 64" in proc.stdout and "> 101376" in proc.stdout


@pytest.mark.unit
@pytest.mark.parametrize("args,says", [
    (("--targets", "sm_61"), "--targets: unknown target 'sm_61'"),
    (("--dtypes", "fp8"), "--dtypes: unknown fp8"),
    (("--head-dims", "0"), "--head-dims: head dims must be 1..256"),
])
def test_bad_options_are_one_line(args, says):
    proc = _check(*args, "--no-usage")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith(f"fairseq-rela-kernels: error: {says}")


@pytest.mark.unit
def test_compile_refuses_the_interpreter():
    proc = _check("--targets", "sm_90", env={**COMPILE_ENV, "TRITON_INTERPRET": "1"})
    assert proc.returncode == 2 and "unset it" in proc.stderr.strip().splitlines()[-1]


@pytest.mark.unit
def test_plans():
    for dtype in (torch.float16, torch.bfloat16):  # the fast tiles everywhere but the T4 at head dim 128
        for cc in SHARED_LIMITS:
            assert launch_plan(cc, dtype, 64) == LaunchPlan.uniform(64, 64, 64)
            assert (launch_plan(cc, dtype, 128) == LaunchPlan.uniform(64, 32, 128)) == (cc != 75), cc
        assert launch_plan(75, dtype, 128) == LaunchPlan(*HALF_ROWS[1][1][128], 128)
    fast = launch_plan(None, torch.float32, 64)
    assert launch_plan(90, torch.float32, 64) == launch_plan(80, torch.float32, 64) == fast
    for cc, row in ((86, 1), (89, 1), (120, 1), (75, 2)):  # fp32 on GPUs with less shared memory
        assert launch_plan(cc, torch.float32, 64) == LaunchPlan(*FP32_ROWS[row][1][64], 64), cc
    # the device's own limit decides where it is known; an unknown GPU takes the smallest listed limit
    assert launch_plan(90, torch.float32, 128, shared_limit=101376) == launch_plan(86, torch.float32, 128)
    assert launch_plan(99, torch.float32, 64) == launch_plan(75, torch.float32, 64)
    assert launch_plan(86, torch.float32, 128) != launch_plan(86, torch.float32, 64)
    assert [block_d(d) for d in (1, 12, 16, 17, 64, 65, 128)] == [16, 16, 16, 32, 64, 128, 128]


@pytest.mark.e2e
def test_first_command_on_a_device(tmp_path):
    # what a GPU user runs first, exercised on the CPU under the interpreter: the path of each attention,
    # the self-check of every mask kind, and the interleaved timing
    env = {**COMPILE_ENV, "TRITON_INTERPRET": "1"}
    proc = subprocess.run([str(BIN / "fairseq-rela-kernels"), "--device", "cpu", "--head-dim", "8", "--seconds",
                           "1"], capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert re.search(r"encoder self +training / full pass +eager", out)  # auto takes the kernel on CUDA only
    assert len(re.findall(r"dropout=\w+ +ok$", out, re.M)) == 8 and "FAILED" not in out
    assert "ReLA fused" in out and "softmax SDPA" in out and "x eager ReLA's speed" in out


@pytest.mark.unit
def test_without_a_gpu_the_first_command_compiles_instead():
    proc = subprocess.run([str(BIN / "fairseq-rela-kernels"), "--device", "cpu", "--head-dim", "8"],
                          capture_output=True, text=True, env=COMPILE_ENV, timeout=300)
    assert proc.returncode == 2 and "TRITON_INTERPRET=1" in proc.stderr.strip().splitlines()[-1]


FAKE_LAUNCHER = '''
"""A third-party package whose own Python code launches Triton kernels (AdaSplash's shape): the check must
compile what it launches for the target, run nothing, and see allocations made on "cuda" by name."""
import torch
import triton
import triton.language as tl


@triton.jit
def _scale(x_ptr, y_ptr, n, BLOCK: tl.constexpr):
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.store(y_ptr + i, tl.load(x_ptr + i, mask=i < n) * 2, mask=i < n)


@triton.jit
def _grad(q_ptr, k_ptr, g_ptr, BLOCK: tl.constexpr):  # a dot product: tiles in shared memory
    r = tl.arange(0, BLOCK)
    q = tl.load(q_ptr + r[:, None] * BLOCK + r[None, :])
    k = tl.load(k_ptr + r[:, None] * BLOCK + r[None, :])
    tl.store(g_ptr + r[:, None] * BLOCK + r[None, :], tl.dot(q, k).to(q.dtype))


class _Attention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k):
        g = torch.zeros((64, 64), device="cuda", dtype=q.dtype)  # as AdaSplash's forward helpers allocate
        ctx.save_for_backward(q, k, g)
        y = torch.empty_like(q)
        _scale[(triton.cdiv(q.numel(), 1024),)](q, y, q.numel(), BLOCK=1024)
        return y

    @staticmethod
    def backward(ctx, dy):
        q, k, g = ctx.saved_tensors
        _grad[(1,)](q, k, g, BLOCK=64)
        return torch.zeros_like(q), None


def adasplash_v1(q, k, v, alpha=1.5, is_causal=False, varlen=None, niter=10):
    import json, os  # what the package passed, for the test to read
    with open(os.environ["FAKE_ADASPLASH_LOG"], "a") as f:
        f.write(json.dumps({"alpha": alpha, "causal": is_causal, "grad": q.requires_grad, "shape": list(q.shape),
                            "dtype": str(q.dtype), "contiguous": all(t.is_contiguous() for t in (q, k, v)),
                            "varlen": varlen.tolist(), "varlen_dtype": str(varlen.dtype)}) + "\\n")
    return _Attention.apply(q, k)
'''


def _fake_adasplash(tmp_path):
    (tmp_path / "fake").mkdir()
    (tmp_path / "fake" / "adasplash.py").write_text(FAKE_LAUNCHER)
    return {**COMPILE_ENV, "PYTHONPATH": os.pathsep.join([str(tmp_path / "fake"), str(REPO)]),
            "FAKE_ADASPLASH_LOG": str(tmp_path / "calls.jsonl")}


@pytest.mark.e2e
def test_adasplash_kernels_compile_through_tritons_launch_path_and_nothing_runs(tmp_path):
    """--adasplash only: fused_sparse_attention's launches of a package's kernels (here a stand-in with
    AdaSplash's shape), at inference and in training, each compiled for the target and none run (a real launch
    of CPU pointers would crash); the forward's "cuda" allocation lands on the CPU."""
    out = tmp_path / "ada.json"
    proc = _check("--adasplash", "only", "--targets", "sm_86", "--dtypes", "fp16", "--head-dims", "64", "--json",
                  str(out), env=_fake_adasplash(tmp_path))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    cells = json.loads(out.read_text())["cells"]
    assert [c["kernel"] for c in cells] == ["ada-eval:_scale", "ada:_scale", "ada:_grad"]
    assert all(c["ok"] and c["target"] == "sm_86" and c["limit"] == SHARED_LIMITS[86] for c in cells)
    assert cells[2]["shared"] > 0 and cells[2]["registers"] and cells[2]["block_m"] == 0  # the dot's tiles
    assert "AdaSplash's Triton kernels" in proc.stdout and "3 of 3 cells compiled" in proc.stdout
    # called as the package calls it: inference, then training; 1.5-entmax, not causal, right-padding lengths
    calls = [json.loads(line) for line in (tmp_path / "calls.jsonl").read_text().splitlines()]
    assert [c["grad"] for c in calls] == [False, True]
    for c in calls:
        assert c["alpha"] == 1.5 and not c["causal"] and c["contiguous"] and c["dtype"] == "torch.float16"
        assert c["shape"] == [2, 4, 128, 64] and c["varlen"] == [128, 128] and c["varlen_dtype"] == "torch.int32"


@pytest.mark.e2e
def test_an_adasplash_kernel_over_its_limit_or_not_compiling_fails_the_check(tmp_path):
    env = _fake_adasplash(tmp_path)
    code = ("import sys; from fairseq_rela.kernels import tiles; from fairseq_rela.cli.kernels import main; "
            "tiles.SHARED_LIMITS[86] = 1024; sys.exit(main(['compile', '--adasplash', 'only', '--targets', 'sm_86', "
            "'--dtypes', 'fp16', '--head-dims', '64', '--no-usage']))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO, timeout=1800)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "FAILED ada:_grad sm_86 fp16 head dim 64" in proc.stdout and "> 1024" in proc.stdout
    # a kernel that does not compile (a non-power-of-two arange) is the run's error, in its cell
    fake = tmp_path / "fake" / "adasplash.py"
    fake.write_text(fake.read_text().replace("tl.arange(0, BLOCK)\n    q = ", "tl.arange(0, 3)\n    q = "))
    proc = _check("--adasplash", "only", "--targets", "sm_86", "--dtypes", "fp16", "--head-dims", "64", "--no-usage",
                  env=env)
    assert proc.returncode == 1 and "FAILED ada sm_86 fp16 head dim 64" in proc.stdout, proc.stdout + proc.stderr
    assert "ada:_scale" in proc.stdout  # what launched before the error is still reported


@pytest.mark.e2e
def test_adasplash_not_installed_is_said_not_hidden(tmp_path):
    env = {**COMPILE_ENV, "PYTHONPATH": str(REPO)}  # (where the environment's path has adasplash, it is found)
    proc = _check("--adasplash", "only", "--targets", "sm_86", "--dtypes", "fp16", "--head-dims", "64", env=env)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].endswith(
        "compile --adasplash only: adasplash is not installed (pip install adasplash)"), proc.stderr
    proc = _check("--targets", "sm_86", "--dtypes", "fp16", "--head-dims", "64", "--flags", "bounds", "--no-usage",
                  env=env)
    assert proc.returncode == 0 and "AdaSplash (sparsemax, 1.5-entmax) is not installed" in proc.stdout


@pytest.mark.e2e
def test_adasplash_direct_refuses_without_adasplash_in_one_line():
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "adasplash_direct.py"), "--head-dim", "256"],
                          capture_output=True, text=True, env={**COMPILE_ENV, "PYTHONPATH": str(REPO)}, cwd=REPO,
                          timeout=600)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [
        "adasplash_direct.py: error: adasplash is not importable (pip install --no-deps -t DIR adasplash; PYTHONPATH=DIR)"]
