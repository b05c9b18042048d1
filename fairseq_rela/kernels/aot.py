"""Ahead-of-time compilation of ReLA's kernels for any NVIDIA GPU, on a machine without one.

Triton compiles for a named target (``GPUTarget("cuda", capability, 32)``) with the ``ptxas`` its wheel
bundles; no driver or device is needed.  :func:`compile_call` compiles one :class:`KernelCall` exactly as
the package launches it — the same constexprs, warps and stages, and the same specialisation of its
arguments (Triton's own binder reads the tensors' dtypes, alignments and strides; CPU tensors of the same
layout stand in for the GPU's) — and reports the shared memory a block needs against the target's
limit, and the registers and spills ``ptxas -v`` reports for the same PTX.  :func:`cases` builds the
calls of the check: every kernel, for every combination of the flags that change its code.

Import with ``TRITON_INTERPRET`` unset (the interpreter replaces the kernels by Python functions).
"""
import itertools
import re
import subprocess
import tempfile
import time
from dataclasses import dataclass, asdict
from typing import Iterator, Optional, Sequence

import torch

from fairseq_rela.kernels.tiles import SHARED_LIMITS, launch_plan

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
FLAGS = ("HAS_MASK", "HAS_BIAS", "CAUSAL", "DROPOUT")


@dataclass(frozen=True)
class CompileResult:
    """One cell of the check: a kernel compiled for a target, or the error that stopped it."""
    kernel: str
    target: str
    dtype: str
    head_dim: int
    HAS_MASK: bool
    HAS_BIAS: bool
    CAUSAL: bool
    DROPOUT: bool
    block_m: int
    block_n: int
    block_d: int
    num_warps: int
    num_stages: int
    shared: Optional[int]
    limit: int
    registers: Optional[int]
    spills: Optional[int]
    seconds: float
    error: Optional[str]

    @property
    def ok(self) -> bool:
        return self.error is None and self.shared is not None and self.shared <= self.limit

    def as_dict(self) -> dict:
        return {**asdict(self), "ok": self.ok}


def parse_target(name: str) -> int:
    """``sm_86`` (or ``86``) -> 86; a capability without a known shared-memory limit is an error."""
    m = re.fullmatch(r"(?:sm_?)?(\d{2,3})a?", name.strip())
    if not m or int(m.group(1)) not in SHARED_LIMITS:
        known = ", ".join(f"sm_{c}" for c in SHARED_LIMITS)
        raise ValueError(f"unknown target '{name}' (known: {known})")
    return int(m.group(1))


def _ptxas_usage(ptx: str, capability: int) -> tuple:
    """(registers, spilled bytes) from ``ptxas -v`` on the compiled PTX, as Triton runs ptxas for it."""
    from triton.backends.nvidia.compiler import get_ptxas, sm_arch_from_capability

    with tempfile.TemporaryDirectory() as tmp:
        src = f"{tmp}/k.ptx"
        with open(src, "w") as f:
            f.write(ptx)
        out = subprocess.run([get_ptxas(capability).path, "-v", "--regAllocOptLevel=2",
                              f"--gpu-name={sm_arch_from_capability(capability)}", src, "-o", f"{tmp}/k.o"],
                             capture_output=True, text=True)
    regs = re.search(r"Used (\d+) registers", out.stderr)
    spills = [int(n) for n in re.findall(r"(\d+) bytes spill (?:stores|loads)", out.stderr)]
    return (int(regs.group(1)) if regs else None), (max(spills) if spills else None)


def compile_call(call, capability: int, usage: bool = True):
    """Compile ``call`` (a :class:`~fairseq_rela.kernels.rela_triton.KernelCall`) for ``sm_<capability>``;
    returns (shared bytes, registers, spills) — registers and spills None unless ``usage``."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource, make_backend
    from triton.runtime.jit import create_function_from_signature

    fn = call.kernel
    target = GPUTarget("cuda", capability, 32)
    backend = make_backend(target)
    binder = create_function_from_signature(fn.signature, fn.params, backend)
    bound, specialization, options = binder(*call.args, **call.meta)
    options, signature, constexprs, attrs = fn._pack_args(backend, call.meta, bound, specialization, options)
    compiled = triton.compile(ASTSource(fn, signature, constexprs, attrs), target=target, options=options.__dict__)
    regs = spills = None
    if usage:
        regs, spills = _ptxas_usage(compiled.asm["ptx"], capability)
    return compiled.metadata.shared, regs, spills


def _compile(call, capability: int, usage: bool) -> tuple:
    """(shared, registers, spills, None), or (None, None, None, the error): a compile error is a result of
    the check, reported in its cell."""
    try:
        return (*compile_call(call, capability, usage), None)
    except Exception as e:
        text = str(e).strip()
        return None, None, None, f"{type(e).__name__}: {text.splitlines()[0] if text else 'no message'}"[:300]


def _tensors(dtype: torch.dtype, head_dim: int, heads: int = 4, batch: int = 2, length: int = 128):
    """q, k, v laid out as :class:`~fairseq_rela.attention.ReLAMultiheadAttention` gives them to the kernel
    (views of ``(len, batch, heads·head_dim)`` projections, ``(B,H,T,D)`` with the head dim innermost), and
    the key-padding mask and additive mask shapes of its ``_mask``."""
    x = torch.zeros(length, batch, heads * head_dim, dtype=dtype)
    q, k, v = (x.view(length, batch, heads, head_dim).permute(1, 2, 0, 3) for _ in range(3))
    mask = torch.zeros(batch, 1, 1, length, dtype=torch.bool)
    bias = torch.zeros(length, length, dtype=dtype)
    return q, k, v, mask, bias


def cases(capability: int, dtype_name: str, head_dim: int, flag_sets: Sequence[tuple] = None,
          kernels: Sequence[str] = ("forward", "backward_kv", "backward_q"), plan=None) -> Iterator[tuple]:
    """(kernel name, flags dict, plan, KernelCall) for every flag combination (default all 16) of each kernel,
    launched with the plan :func:`~fairseq_rela.kernels.tiles.launch_plan` gives the target (or ``plan``)."""
    from fairseq_rela.kernels import rela_triton as rt

    dtype = DTYPES[dtype_name]
    plan = plan or launch_plan(capability, dtype, head_dim)
    q, k, v, mask, bias = _tensors(dtype, head_dim)
    out = torch.empty(q.shape, dtype=dtype)
    grads = [torch.empty(t.shape, dtype=dtype) for t in (q, k, v)]
    for flags in flag_sets or itertools.product((False, True), repeat=4):
        f = dict(zip(FLAGS, flags))
        m, b = rt._prepare(q, k, mask if f["HAS_MASK"] else None, bias if f["HAS_BIAS"] else None)
        p, seed = (0.1, 1234567) if f["DROPOUT"] else (0.0, 0)  # as rela_attention passes them
        calls = {"forward": rt.forward_call(q, k, v, out, m, b, f["CAUSAL"], p, seed, plan)}
        calls.update(zip(("backward_kv", "backward_q"),
                         rt.backward_calls(q, k, v, out, *grads, m, b, f["CAUSAL"], p, seed, plan)))
        for name in kernels:
            yield name, f, plan, calls[name]


def check(capability: int, dtype_name: str, head_dim: int, flag_sets: Sequence[tuple] = None,
          usage: bool = True, kernels: Sequence[str] = ("forward", "backward_kv", "backward_q"),
          plan=None) -> Iterator[CompileResult]:
    """Compile every case of :func:`cases` for ``sm_<capability>``; one :class:`CompileResult` each."""
    limit = SHARED_LIMITS[capability]
    for name, flags, plan, call in cases(capability, dtype_name, head_dim, flag_sets, kernels, plan):
        tiles = plan.tiles(name)
        t0 = time.perf_counter()
        shared, regs, spills, error = _compile(call, capability, usage)
        if error is None and shared > limit:
            error = f"OutOfResources: shared memory {shared} > {limit}"
        yield CompileResult(name, f"sm_{capability}", dtype_name, head_dim, **flags, block_m=tiles.block_m,
                            block_n=tiles.block_n, block_d=plan.block_d, num_warps=tiles.num_warps,
                            num_stages=tiles.num_stages, shared=shared, limit=limit, registers=regs,
                            spills=spills, seconds=round(time.perf_counter() - t0, 2), error=error)


def check_dropout_keep(capability: int) -> CompileResult:
    """The dropout-mask kernel (tests, debugging): one configuration for every dtype and head dim."""
    from fairseq_rela.kernels import rela_triton as rt

    call = rt.dropout_keep_call(torch.empty(2, 4, 128, 128, dtype=torch.int8), 1, 0.1, 4)
    t0 = time.perf_counter()
    shared, regs, spills, error = _compile(call, capability, True)
    return CompileResult("dropout_keep", f"sm_{capability}", "-", 0, False, False, False, True, 16, 16, 0,
                         call.meta.get("num_warps", 4), call.meta.get("num_stages", 3), shared,
                         SHARED_LIMITS[capability], regs, spills, round(time.perf_counter() - t0, 2), error)


# --- AdaSplash (sparsemax / 1.5-entmax) --------------------------------------------------------------------
# Its kernels are launched by its own Python code, so they are compiled through Triton's own launch path:
# a driver that targets a named GPU, compiles every launch for it, and runs nothing.

_DEVICES = itertools.count()


def _compile_only_driver(capability: int):
    """A Triton driver for ``sm_<capability>`` on a machine without it: ``kernel[grid](...)`` compiles the
    kernel for that target (Triton's binder, cache and compiler, as on the GPU) and launches nothing; each
    compiled kernel is kept in ``driver.compiled`` (in launch order, once each).  Each driver is a device of
    its own to Triton, so its kernel caches start empty and every kernel launched under it is seen."""
    device = f"aot-sm_{capability}-{next(_DEVICES)}"
    from triton.backends.compiler import GPUTarget
    from triton.backends.driver import DriverBase

    class _Utils:
        def get_device_properties(self, device):  # the limit is checked by the caller, against the target's
            return {"max_shared_mem": 1 << 30}

        def load_binary(self, name, kernel, shared, device):  # (module, function, registers, spills, threads)
            return None, None, 0, 0, 1024  # no module: nothing to unload when Triton frees the kernel

        def unload_module(self, module):
            pass

    class CompileOnlyDriver(DriverBase):
        def __init__(self):
            self.utils, self.compiled = _Utils(), []

        @classmethod
        def is_active(cls):
            return False

        def map_python_to_cpp_type(self, ty: str) -> str:
            return ty

        def get_current_target(self):
            return GPUTarget("cuda", capability, 32)

        def get_active_torch_device(self):
            return torch.device("cpu")

        def get_benchmarker(self):
            raise RuntimeError("compile only: nothing runs")

        def get_current_device(self):
            return device

        def get_current_stream(self, device=None):
            return 0

        def launcher_cls(self, src, metadata):
            for kernel in src.fn.device_caches[device][0].values():
                if kernel.metadata is metadata and all(k is not kernel for k in self.compiled):
                    self.compiled.append(kernel)
            return lambda *args, **kwargs: None

    return CompileOnlyDriver()


ADASPLASH_NAMES = {"_get_tau": "tau", "_get_output": "out", "_bwd_preprocess": "bwd_pre", "_bwd_kv_kernel": "bwd_kv",
                   "_bwd_q_kernel": "bwd_q"}  # adasplash_v1's kernels, short names for the table


class _CudaOnCpu(torch.overrides.TorchFunctionMode):
    """Tensors a kernel's launch code allocates on ``device="cuda"`` by name are made on the CPU (they stand
    in for the GPU's, as the inputs do)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if str(kwargs.get("device", "")).startswith("cuda"):
            kwargs["device"] = "cpu"
        return func(*args, **kwargs)


def check_launches(capability: int, dtype_name: str, head_dim: int, run, label: str, usage: bool = True,
                   names: Optional[dict] = None) -> list:
    """Compile every kernel that ``run()`` launches (third-party launch code) for ``sm_<capability>``: one
    :class:`CompileResult` per compiled kernel, named ``label:name`` (``names`` maps the kernels' function
    names to short ones), and one for ``label`` with the error if an error stopped the launches."""
    from triton.runtime.driver import driver

    compile_only = _compile_only_driver(capability)
    previous = driver._active  # (DriverConfig has no public getter that does not create the default driver)
    driver.set_active(compile_only)
    t0, error = time.perf_counter(), None
    try:
        with _CudaOnCpu():
            run()
    except Exception as e:
        text = str(e).strip()
        error = f"{type(e).__name__}: {text.splitlines()[0] if text else 'no message'}"[:300]
    finally:
        driver.set_active(previous)
    seconds = round(time.perf_counter() - t0, 2)
    limit = SHARED_LIMITS[capability]
    if error is None and not compile_only.compiled:
        error = "RuntimeError: the run launched no kernel"
    results = []
    for kernel in compile_only.compiled:
        m = kernel.metadata
        consts = {kernel.src.fn.arg_names[path[0]]: v for path, v in kernel.src.constants.items() if len(path) == 1}
        regs, spills = _ptxas_usage(kernel.asm["ptx"], capability) if usage else (None, None)
        name = (names or {}).get(kernel.src.fn.__name__, kernel.src.fn.__name__)
        results.append(CompileResult(
            f"{label}:{name}", f"sm_{capability}", dtype_name, head_dim,
            bool(consts.get("IS_VARLEN", False)), False, bool(consts.get("IS_CAUSAL", False)), False,
            int(consts.get("BLOCK_M", consts.get("PRE_BLOCK", 0)) or 0), int(consts.get("BLOCK_N", 0) or 0),
            head_dim, m.num_warps, m.num_stages, m.shared, limit, regs, spills, seconds,
            None if m.shared <= limit else f"OutOfResources: shared memory {m.shared} > {limit}"))
    for kernel in compile_only.compiled:  # this driver's device is never used again: free its kernel caches
        kernel.src.fn.device_caches.pop(compile_only.get_current_device(), None)
    if error is not None:
        results.append(CompileResult(label, f"sm_{capability}", dtype_name, head_dim, False, False, False, False,
                                     0, 0, head_dim, 0, 0, None, limit, None, None, seconds, error))
    return results


def check_adasplash(capability: int, dtype_name: str, head_dim: int, usage: bool = True) -> list:
    """AdaSplash's kernels as :func:`~fairseq_rela.kernels.sparse.fused_sparse_attention` launches them (1.5-entmax;
    sparsemax is the same kernels with another α, a run-time argument): at inference (``ada-eval``: no
    gradient, the forward without its backward's extra output) and in training (``ada``: forward and backward);
    a kernel both launch (``tau``) is in both."""
    from fairseq_rela.kernels import sparse

    dtype = DTYPES[dtype_name]

    def attention(training: bool):
        def run():
            q, k, v = (torch.zeros(2, 4, 128, head_dim, dtype=dtype, requires_grad=training) for _ in range(3))
            out = sparse.fused_sparse_attention("entmax15", q, k, v, None, None)
            if training:
                out.backward(torch.ones_like(out))
        return run

    return (check_launches(capability, dtype_name, head_dim, attention(False), "ada-eval", usage, ADASPLASH_NAMES)
            + check_launches(capability, dtype_name, head_dim, attention(True), "ada", usage, ADASPLASH_NAMES))
