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
