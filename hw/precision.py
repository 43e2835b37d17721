"""The compute precision and memory layout of the training step, decided once per device in this one place, and the
machine a number was measured on, in words."""
from __future__ import annotations

import contextlib
import functools
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from .core import default_device, tr

PRECISIONS = ("bf16", "fp16", "fp32")
PRECISION_ENV = "HW_PRECISION"      # "auto" (default), "bf16", "fp16" (CUDA only) or "fp32"
BF16_MIN_SPEEDUP = 1.2              # the probe keeps bf16 only where it is at least this much faster than fp32:
# well below what it prints where bf16 is native and far above where it is emulated, so neither a busy machine nor
# the probe's noise flips the choice (benchmarks/precision_layout.py times the real models: benchmarks/layout/*.json)


@dataclass(frozen=True)
class Precision:
    """How the training step computes on a device. name: 'bf16' / 'fp16' autocast or plain 'fp32';
    channels_last: the memory layout of the model and its inputs; reason: why, in words."""
    device: str
    name: str
    channels_last: bool
    reason: str

    def autocast(self):
        if self.name == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device, dtype=torch.bfloat16 if self.name == "bf16" else torch.float16)

    def scaler(self):
        """A gradient scaler, enabled for fp16 only (bf16 has fp32's exponent range and needs none)."""
        return torch.amp.GradScaler(self.device if self.device == "cuda" else "cpu", enabled=self.name == "fp16")

    @property
    def memory_format(self):
        return torch.channels_last if self.channels_last else torch.contiguous_format

    def evaluation(self):
        """The same layout in fp32: predictions and reported metrics are computed in fp32 on every machine."""
        return Precision(self.device, "fp32", self.channels_last, "evaluation in fp32")


def _cpuinfo(*fields):
    """The value of the first /proc/cpuinfo line that starts with one of `fields` ("" where none does, or not Linux)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return ""
    return next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith(fields) and ":" in ln), "")


def cpu_flags():
    """The CPU's feature flags that decide speed here (Linux; an empty set elsewhere)."""
    return set(_cpuinfo("flags", "Features").split()) & {"avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16",
                                                         "amx_tile", "bf16", "asimd", "sve"}


def cpu_name():
    return _cpuinfo("model name") or platform.processor() or platform.machine()


def native_bf16():
    """Whether this CPU computes bf16 natively: oneDNN says so (it honours an ONEDNN_MAX_CPU_ISA cap) and, where
    the flags can be read, they name a bf16 instruction set (AVX-512 BF16, AMX, Arm's BF16)."""
    try:
        onednn = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):      # a torch build without oneDNN (some ARM builds)
        onednn = False
    flags = cpu_flags()
    return onednn and (not flags or bool(flags & {"avx512_bf16", "amx_bf16", "bf16"}))


def machine(device=None):
    """The machine a number was measured on, in words: the GPU's name, or the CPU's model, threads and the
    features that decide its speed. Written into checkpoints, timings and benchmark results."""
    device = torch.device(device or default_device())
    if device.type == "cuda":
        return gpu_name()
    if device.type == "mps":
        return f"Apple GPU (MPS), {platform.machine()}"
    isa = torch.backends.cpu.get_cpu_capability()
    capped = ", ".join(f"{k}={os.environ[k]}" for k in ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY") if os.environ.get(k))
    return (f"{cpu_name()}, {torch.get_num_threads()} threads, {isa}, "
            f"{'native bf16' if native_bf16() else 'no native bf16'}" + (f" (capped: {capped})" if capped else ""))


def timed(fn, reps=3):
    """The best of `reps` timings of fn() in seconds, after one warm-up call."""
    fn()                                    # warm-up: the kernels for these shapes
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _probe_cpu():
    """Seconds of one 3x3 convolution step (64 -> 64 channels, 8 x 32 x 32, forward and backward, channels_last) in
    fp32 and under bf16 autocast; well under a second in all. A private generator: no random state moves."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, 64, 32, 32, generator=g).contiguous(memory_format=torch.channels_last).requires_grad_(True)
    w = (torch.randn(64, 64, 3, 3, generator=g) * 0.05).contiguous(memory_format=torch.channels_last).requires_grad_(True)
    out = {}
    for dt in ("fp32", "bf16"):
        def step():         # enable_grad: the first decision may come from inside a no_grad evaluation
            with torch.enable_grad():
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dt == "bf16"):
                    y = F.conv2d(x, w, padding=1)
                y.float().square().mean().backward()
        out[dt] = timed(step)
    return out


def gpu_name():
    """The CUDA GPU's name and compute capability, e.g. 'Tesla T4 (compute capability 7.5)'."""
    major, minor = torch.cuda.get_device_capability()
    return f"{torch.cuda.get_device_name()} (compute capability {major}.{minor})"


def _decide_cuda(requested):
    """bf16 where the GPU computes it natively (compute capability 8.0 and newer: A100, L4, H100); fp16 autocast with
    a gradient scaler on 7.x (T4, V100: tensor cores for fp16, bf16 only emulated, cuDNN has no bf16 convolutions
    there); fp32 below 7.0 (P100 and older: no tensor cores)."""
    gpu, (major, _) = gpu_name(), torch.cuda.get_device_capability()
    try:
        bf16_native = major >= 8 and torch.cuda.is_bf16_supported(including_emulation=False)
    except TypeError:           # torch < 2.3 has no including_emulation; its answer is the capability's
        bf16_native = major >= 8
    if requested == "bf16" and not bf16_native:
        raise ValueError(tr(
            f"{gpu} computes bf16 only by emulation (native bf16 needs compute capability 8.0): training would be "
            "several times slower than in fp16, if cuDNN runs it at all. Use precision='auto' (fp16 with a gradient "
            "scaler here), 'fp16' or 'fp32'.",
            f"{gpu} считает bf16 только эмуляцией (нативный bf16 — с compute capability 8.0): обучение шло бы в "
            "несколько раз медленнее, чем в fp16, если cuDNN вообще его выполнит. Укажите precision='auto' (здесь "
            "fp16 с масштабированием градиентов), 'fp16' или 'fp32'."))
    if requested != "auto":
        return Precision("cuda", requested, major >= 7, f"{gpu}; asked for: {requested}")
    if bf16_native:
        return Precision("cuda", "bf16", True, tr(f"{gpu} computes bf16 natively", f"{gpu} считает bf16 нативно"))
    if major >= 7:
        return Precision("cuda", "fp16", True, tr(
            f"{gpu} has no native bf16: fp16 autocast with a gradient scaler (tensor cores)",
            f"у {gpu} нет нативного bf16: fp16 autocast с масштабированием градиентов (тензорные ядра)"))
    return Precision("cuda", "fp32", False, tr(f"{gpu} has no tensor cores: fp32",
                                               f"у {gpu} нет тензорных ядер: fp32"))


@functools.lru_cache(maxsize=None)
def _decide(device_type, requested):
    if device_type == "cuda":
        return _decide_cuda(requested)
    if device_type != "cpu":
        if requested not in ("auto", "fp32"):
            raise ValueError(f"precision {requested!r} is not supported on {device_type}; use 'fp32' or 'auto'")
        return Precision(device_type, "fp32", False, f"fp32 on {device_type}")
    if requested == "fp16":
        raise ValueError("fp16 autocast is for CUDA GPUs; on a CPU use 'bf16', 'fp32' or 'auto'")
    # channels_last on every CPU: it trained both models faster in fp32 and in bf16, with and without native bf16
    # (benchmarks/layout/*.json, from benchmarks/precision_layout.py); a one-convolution probe cannot judge it
    if requested != "auto":
        return Precision("cpu", requested, True, f"asked for: {requested}")
    if not native_bf16():
        return Precision("cpu", "fp32", True, tr(
            "the CPU has no native bf16 (emulated, it would be many times slower)",
            "у процессора нет нативного bf16 (эмуляция была бы во много раз медленнее)"))
    t = _probe_cpu()
    speedup = t["fp32"] / t["bf16"]
    if speedup >= BF16_MIN_SPEEDUP:
        return Precision("cpu", "bf16", True, tr(
            f"the CPU has native bf16; a probe measured it {speedup:.1f}x faster than fp32",
            f"у процессора нативный bf16; замер: в {speedup:.1f} раза быстрее fp32"))
    return Precision("cpu", "fp32", True, tr(
        f"the CPU reports native bf16, but a probe measured it only {speedup:.1f}x as fast as fp32 (< {BF16_MIN_SPEEDUP}x)",
        f"процессор сообщает о нативном bf16, но замер дал только {speedup:.1f}x от скорости fp32 (< {BF16_MIN_SPEEDUP}x)"))


def evaluation_precision(device, precision=None):
    """fp32 in the memory layout that is faster on `device` (predictions and reported metrics), unless `precision`
    asks otherwise (`fit` validates each epoch in its training precision)."""
    if precision:
        return compute_precision(device, precision, verbose=False)
    return compute_precision(device, "fp32", verbose=False).evaluation()


def compute_precision(device=None, precision=None, verbose=True):
    """The training step's precision on `device`: precision 'bf16' / 'fp16' / 'fp32' forces one, None or 'auto'
    follows the environment variable HW_PRECISION, else decides: on CUDA by the GPU's compute capability
    (`_decide_cuda`: bf16 from 8.0, fp16 with a gradient scaler on 7.x, fp32 below); on a CPU bf16 only where it is
    native (its flags) and a short timed probe confirms it is at least BF16_MIN_SPEEDUP x faster than fp32, else
    fp32; MPS fp32. channels_last everywhere but on MPS. Decided
    once per process, device and request (the first call prints the choice and why); a Precision passes through."""
    if isinstance(precision, Precision):
        return precision
    device = torch.device(device or default_device())
    requested = precision if precision not in (None, "auto") else os.environ.get(PRECISION_ENV, "auto") or "auto"
    if requested not in PRECISIONS + ("auto",):
        raise ValueError(f"precision must be one of {PRECISIONS} or 'auto', not {requested!r} "
                         f"(from {'the argument' if precision not in (None, 'auto') else PRECISION_ENV})")
    first = _decide.cache_info().currsize
    p = _decide(device.type, requested)
    if verbose and _decide.cache_info().currsize > first:
        print(tr("precision on", "точность вычислений на") + f" {device.type}: {p.name}"
              f"{', channels_last' if p.channels_last else ''} ({p.reason})")
    return p


def environment():
    """Versions, device and machine, recorded in every checkpoint and shown in the notebooks."""
    import torchvision
    dev = default_device()
    return {"python": platform.python_version(), "torch": torch.__version__,
            "torchvision": torchvision.__version__, "device": dev.type, "machine": machine(dev),
            "threads": torch.get_num_threads()}
