"""The package's own CPU kernels for the fast path: conv2d + bias and 2×2 max pooling (csrc/).

Why: on CPU, Paddle's conv2d runs image by image through generic code (~3 GFLOP/s on LeNet's
1–16-channel layers) and the convolutions were ~75% of a training step. These kernels compute the
same function with register-blocked GEMMs (no im2col at all for stride 1) and split the batch
over threads; gradients are reduced per fixed batch chunk, so results are bit-identical for any
thread count. They are compiled on first use with the C++ compiler paddle's extension loader
finds (~20 s, once per machine; cached under ``PADDLE_EXTENSION_DIR``), for this CPU
(``-march=native``). Without a compiler, on GPU, or for other dtypes, every function here falls
back to Paddle's own ops — same values, Paddle's speed.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import platform
import shutil
import sys
import time
from pathlib import Path
from collections.abc import Iterable
from typing import Any

import numpy as np

from . import _paddle  # noqa: F401  (paddle without its import-time warnings)
import paddle
import paddle.nn.functional as F

from .stdio import captured_stderr

SOURCE = Path(__file__).parent / "csrc" / "conv2d_cpu.cc"
# -fno-trapping-math: lets GCC turn the clamps and selects of the exp/log polynomials into vector blends, so the
# pooling kernels' loops over windows vectorise (no reassociation; adding it moved no bit of any kernel, test_kernel_bits)
CFLAGS = ["-O3", "-march=native", "-mprefer-vector-width=512", "-fno-trapping-math", "-fopenmp"]

_module: Any = None
_tried = False
_threads = 0  # 0: all cores (OpenMP's default)
_enabled = True


def _cpuinfo_line(key: str) -> str | None:
    """The first ``key`` line of /proc/cpuinfo ("" if it has none; None without the file)."""
    try:
        with open("/proc/cpuinfo") as f:
            return next((line for line in f if line.startswith(key)), "")
    except OSError:
        return None


def _cpu_fingerprint() -> str:
    line = _cpuinfo_line("flags")
    return platform.processor() if line is None else line


def _build_name() -> str:
    """Cache key: source, flags, paddle version and install path, Python, CPU features.

    The install path (``sys.prefix``, paddle's folder) is part of the key because paddle's loader records
    the include paths in its flags: two virtualenvs sharing one key would each see "cflags have been
    changed" and rebuild the other's binary, every run. With it, each environment keeps its own build.
    """
    h = hashlib.sha1()
    for part in (SOURCE.read_bytes(), " ".join(CFLAGS).encode(), paddle.__version__.encode(),
                 _cpu_fingerprint().encode(), sys.version.encode(), sys.prefix.encode(),
                 os.path.dirname(paddle.__file__).encode()):
        h.update(part)
    return f"paddle_lenet_ops_{h.hexdigest()[:12]}"


def _load() -> Any:
    import warnings

    with warnings.catch_warnings():  # paddle's loader warns "No ccache found" on import, in every process
        warnings.simplefilter("ignore")
        from paddle.utils.cpp_extension import get_build_directory, load

    name = _build_name()
    root = Path(get_build_directory())
    root.mkdir(parents=True, exist_ok=True)
    fresh = not (root / name / f"{name}.so").exists()
    if fresh:
        print("paddle_lenet: compiling the fast CPU kernels (once per Python environment, ~20 s) ...", file=sys.stderr,
              flush=True)
    # one builder at a time: study workers may all start here on a fresh machine
    with open(root / f"{name}.lock", "w") as lock:
        with contextlib.suppress(ImportError):  # no fcntl on Windows: no lock
            import fcntl

            fcntl.flock(lock, fcntl.LOCK_EX)
        quiet = io.StringIO()
        logger = logging.getLogger("utils.cpp_extension")  # paddle's loader logs every load at INFO
        level = logger.level
        logger.setLevel(logging.WARNING)
        def build() -> Any:
            import warnings

            # the loader's helper processes print paddle's import warnings to the inherited stderr
            with contextlib.redirect_stdout(quiet), warnings.catch_warnings(), captured_stderr() as captured:
                warnings.simplefilter("ignore")
                try:
                    return load(name=name, sources=[str(SOURCE)], extra_cxx_cflags=CFLAGS, extra_ldflags=["-fopenmp"],
                                verbose=False)
                except Exception as e:
                    lines = [x for x in captured().splitlines() if "error" in x.lower()]
                    raise RuntimeError(f"{str(e).splitlines()[0][:120]}{' | ' + lines[0][:160] if lines else ''}") from None

        t0 = time.time()
        try:
            module = _load_built(root / name, name)
            if module is not None:
                return module
            try:
                module = build()
                if fresh:
                    print(f"paddle_lenet: kernels ready ({time.time() - t0:.0f} s)", file=sys.stderr, flush=True)
                _mark_built(root / name, name)
                return module
            except Exception:
                if not (root / name).exists():
                    raise  # nothing left behind to blame: no compiler, or the source does not compile
                # a build left damaged or half-made (a compile, or the loader's setup before it, interrupted by
                # Ctrl-C): the loader trips over its leftovers; remove them and build once more
                shutil.rmtree(root / name, ignore_errors=True)
                print(f"paddle_lenet: rebuilding the fast CPU kernels (an earlier build was "
                      f"{'left incomplete' if fresh else 'damaged'}) ...", file=sys.stderr, flush=True)
                module = build()
                print(f"paddle_lenet: kernels ready ({time.time() - t0:.0f} s)", file=sys.stderr, flush=True)
                _mark_built(root / name, name)
                return module
        finally:
            logger.setLevel(level)


_MARK = "paddle_lenet_built.json"


def _so_stamp(folder: Path, name: str) -> dict[str, int]:
    st = (folder / f"{name}.so").stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _mark_built(folder: Path, name: str) -> None:
    """Record that ``folder``'s library was built whole and loaded: the next process may skip paddle's loader."""
    with contextlib.suppress(OSError):  # a read-only cache only costs the next process the loader's 3 s
        tmp = folder / f"{_MARK}.tmp"
        tmp.write_text(json.dumps(_so_stamp(folder, name)))
        os.replace(tmp, folder / _MARK)


def _load_built(folder: Path, name: str) -> Any:
    """The library this environment built before, registered directly; None to go through paddle's loader.

    Paddle's ``load`` runs its setup script in a child Python even when nothing needs compiling: ~3 s in every
    process (each tool, each study run, each test subprocess). The cache key (:func:`_build_name`) already names
    the source, flags and environment, so a library that was built whole (the stamp written after a successful
    load still matches it) is the one ``load`` would return. Anything unexpected (no stamp, another library, a
    paddle without this helper) falls back to ``load``, which rebuilds what needs it.
    """
    try:
        if json.loads((folder / _MARK).read_text()) != _so_stamp(folder, name):
            return None
        from paddle.utils.cpp_extension.extension_utils import _import_module_from_library

        with contextlib.redirect_stdout(io.StringIO()):
            return _import_module_from_library(name, str(folder), False)
    except Exception:  # noqa: BLE001 - any doubt: paddle's own loader decides
        return None


def kernels() -> Any:
    """The compiled module, or None (no compiler, GPU-only build problems, disabled): then Paddle's ops."""
    global _module, _tried
    if not _enabled:
        return None
    if not _tried:
        _tried = True
        if os.environ.get("PADDLE_LENET_NO_KERNELS"):
            return None
        major = int(paddle.__version__.split(".")[0] or 0)
        if major < 3 and paddle.__version__ != "0.0.0":  # 0.0.0: a develop build
            # paddle 2.x's custom-op contract differs (its backward leaves outputs uninitialised)
            print(f"paddle_lenet: fast CPU kernels need PaddlePaddle >= 3.0 (found {paddle.__version__}); "
                  "using Paddle's conv2d (same results, slower)", file=sys.stderr, flush=True)
            return None
        try:
            _module = _load()
        except Exception as e:  # a missing compiler must not stop training: fall back, say so once
            print(f"paddle_lenet: fast CPU kernels unavailable ({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
                  "using Paddle's conv2d (same results, slower)", file=sys.stderr, flush=True)
            _module = None
    return _module


# The kernels' arithmetic revisions: which bits each kernel computes, not which source computes them. A change that
# keeps every output bit of a kernel (a faster tile, a stride-2 convolution without im2col adding the same products in
# the same order) keeps its revision, so recorded study runs stay valid; a change that moves any bit bumps that
# kernel's revision, and only the runs of models that use that kernel stop counting. LEGACY is the source hash of the
# first kernels that studies were recorded with; a kernel still at LEGACY adds nothing to a run's revision string,
# so records made before kernels had revisions of their own keep matching. tests/test_kernel_bits.py pins the bits of
# every kernel at its revision.
LEGACY = "e21a994dce6a"
REVISIONS = {
    "conv2d": LEGACY,
    "max_pool2x2": LEGACY,
    "avg_pool2x2": LEGACY,  # Paddle's avg_pool2d bit for bit (tests/test_ops.py): runs before it keep matching
    "global_avg_pool": LEGACY,  # Paddle's adaptive_avg_pool2d(x, 1) bit for bit (tests/test_ops.py), likewise
    "soft_window": "2",  # SoftPool's 2x2 windows side by side in vector registers
    "lip_window": "4",  # the soft-window kernel's 3x3/stride-2 windows (LIP) as separable row and column sums;
    # 4: the backward pass sums each window row's columns first, then the rows (a vector loop per pixel row)
    "stochastic_pool": LEGACY,
    "dpp": "2",  # windows side by side in vector registers (the same formula, other rounding)
    "lp_pool": "1",
    "lip_logit": "2",  # LIP's instance norm, sigmoid and scale in one pass; 2: the norm's sums in 16 double lanes
    "conv2d_dx_conv": "1",  # the input gradient as a convolution with the flipped kernel (LIP's logit convolutions)
    "rand": LEGACY,  # paddle.rand's draws bit for bit, the generator left where Paddle leaves it (tests/test_ops.py)
    "dropout": LEGACY,  # F.dropout's mask, output and gradient bit for bit, likewise
}


def revision(kernels: Iterable[str] | None = None) -> str:
    """The arithmetic revision of a computation that uses ``kernels`` (names of :data:`REVISIONS`; None: all):
    runs computed with other arithmetic are not the same runs. ``LEGACY`` plus ``+name.rev`` for each kernel
    whose bits changed since, e.g. ``e21a994dce6a+dpp.2``."""
    names = sorted(REVISIONS if kernels is None else set(kernels))
    unknown = [n for n in names if n not in REVISIONS]
    if unknown:
        raise KeyError(f"no such kernel: {unknown[0]}")
    return LEGACY + "".join(f"+{n}.{REVISIONS[n]}" for n in names if REVISIONS[n] != LEGACY)


def kernel_revisions(recorded: str, kernels: Iterable[str]) -> dict[str, str]:
    """Each of ``kernels``' revision in a recorded revision string (see :func:`revision`): its ``+name.rev`` part,
    else the string's base."""
    base, *parts = recorded.split("+")
    over = dict(p.split(".", 1) for p in parts if "." in p)
    return {n: over.get(n, base) for n in set(kernels) | set(over)}


def isa() -> str:
    """The widest x86 vector extension the kernels are compiled for: this CPU's (-march=native), except AVX-512 on a CPU
    with half-width AVX-512 units (:func:`avx512_half_width`)."""
    flags = set(_cpu_fingerprint().split()) - ({"avx512f"} if "-mno-avx512f" in CFLAGS else set())
    return next((f for f in ("avx512f", "avx2", "avx", "sse4_2") if f in flags), platform.machine() or "unknown")


def _cpuinfo_field(key: str) -> str:
    """The value of the first ``key`` line of /proc/cpuinfo ("" without one)."""
    line = _cpuinfo_line(key) or ""
    return line.split(":", 1)[1].strip() if ":" in line else ""


def cpu_model() -> str:
    """This CPU by name, family and model number: where a run's time was measured. A virtual machine's model name
    alone ("AMD EPYC") names neither the generation nor the speed; family 25 model 17 (Zen 4) does."""
    name = _cpuinfo_field("model name") or platform.processor() or platform.machine() or "unknown CPU"
    family, model = _cpuinfo_field("cpu family"), _cpuinfo_field("model\t")
    return f"{name} (family {family} model {model})" if family and model else name


def _cpu_vendor() -> str:
    return _cpuinfo_field("vendor_id")


def avx512_half_width(vendor: str, family: str, flags: set[str]) -> bool:
    """A CPU whose AVX-512 runs on 256-bit units, where the kernels build for AVX2 instead: AMD's Zen 4 (CPU family 25;
    Zen 3, the family's other half, has no AVX-512). Zen 4 executes a 512-bit instruction as two 256-bit halves, and
    there the AVX2 build ran faster on every layer than the AVX-512 one (LeNet_nopool's conv2 backward 1.74 vs 2.02 ms,
    LIP's first logit conv 1.69 vs 2.15). Zen 5 (family 26) has 512-bit units: on its server part (model 2) the
    AVX-512 build was the faster one on every layer, by up to 30% (LeNet_BN's conv2 forward+backward 1.66 vs 2.33 ms;
    docs/performance.md), so later families keep AVX-512; Zen 5's mobile parts, said to be half-width too, were not
    measured. Both builds compute the same bits (tests/kernel_bits.json holds equal digests for avx2 and avx512f), so
    this choice moves no number, only the speed."""
    return vendor == "AuthenticAMD" and family == "25" and "avx512f" in flags


if avx512_half_width(_cpu_vendor(), _cpuinfo_field("cpu family"), set(_cpu_fingerprint().split())):
    CFLAGS.append("-mno-avx512f")


def use_mkl_avx2() -> bool:
    """On x86 CPUs not made by Intel, ask Paddle's bundled MKL for its AVX2 code path; True if asked.

    MKL picks its code path by CPU vendor: on AMD this Paddle's MKL (mklml) runs its generic kernels, 2.5–3× slower
    for LeNet's linear layers than its AVX2 ones, which an MKL of its age still takes when ``MKL_DEBUG_CPU_TYPE=5``.
    MKL reads the variable once, at its first call in the process, so this only helps before any matmul ran (the
    engine calls it first thing); :func:`blas` says which path was taken. A user's own setting is left alone, and
    Intel CPUs too (they take their widest path anyway; 5 would narrow AVX-512 to AVX2).
    """
    if "MKL_DEBUG_CPU_TYPE" in os.environ or _cpu_vendor() in ("GenuineIntel", ""):
        return False
    flags = set(_cpu_fingerprint().split())
    if not {"avx2", "fma"} <= flags:
        return False
    os.environ["MKL_DEBUG_CPU_TYPE"] = "5"
    return True


_blas: str | None = None


def blas() -> str:
    """Which BLAS code path computes this process's Paddle matmuls: a digest of one fixed CPU product.

    Two runs on the same ISA can differ here (MKL on AMD with or without :func:`use_mkl_avx2`), and the path is
    fixed at MKL's first call, so once per process. Recorded with each run's arithmetic, beside the ISA.
    """
    global _blas
    if _blas is None:
        rng = np.random.RandomState(0)
        a, b = (paddle.to_tensor(rng.standard_normal(s).astype("float32"), place=paddle.CPUPlace())
                for s in ((64, 400), (400, 120)))
        _blas = hashlib.sha1(np.ascontiguousarray(paddle.matmul(a, b).numpy()).tobytes()).hexdigest()[:12]
    return _blas


def cpu_cores() -> int:
    """Cores this process may run on (the affinity mask, not the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def configure(enabled: bool = True, threads: int = 0) -> None:
    """``enabled``: use the kernels when they apply; ``threads``: their thread count (0 = all cores)."""
    global _enabled, _threads
    _enabled, _threads = enabled, max(0, threads)


def _applies(x: paddle.Tensor) -> Any:
    # the graph mode first: a static Variable (export's dy2static trace) has no place
    if not paddle.in_dynamic_mode() or x.dtype != paddle.float32 or not x.place.is_cpu_place():
        return None
    return kernels()


def add_channel_bias(x: paddle.Tensor, bias: paddle.Tensor) -> paddle.Tensor:
    """``x + bias`` per channel of an NCHW tensor, with the bias expanded to ``x``'s shape first.

    Same values as the broadcast add inside ``nn.Conv2D``, but on Paddle's CPU backend the gradient
    of a broadcast add (a reduction over N, H, W) is ~6× slower than that of ``expand``; measured on
    ``[64, 6, 28, 28]``: 9.1 ms vs 1.4 ms forward+backward. Gradients agree to float rounding.
    """
    return x + bias.reshape([1, -1, 1, 1]).expand(x.shape)


def conv2d(x: paddle.Tensor, weight: paddle.Tensor, bias: paddle.Tensor | None, stride: int,
           padding: int, dx_conv: bool = False) -> paddle.Tensor:
    """A square-kernel convolution with symmetric padding, through the kernels when they apply.

    ``dx_conv``: the input gradient as a convolution of the output gradient with the flipped kernel (stride 1,
    padding ≤ k − 1; ignored otherwise) — faster where the layer has few output channels, other rounding than the
    default path: kernel ``conv2d_dx_conv`` of :data:`REVISIONS`.
    """
    k = _applies(x)
    if k is None:
        out = F.conv2d(x, weight, None, stride=stride, padding=padding)
        return out if bias is None else add_channel_bias(out, bias)
    if bias is None:
        bias = paddle.zeros([weight.shape[0]], "float32")
    return k.lenet_conv2d(x, weight, bias, stride, padding, not x.stop_gradient, dx_conv, _threads)


def soft_window(x: paddle.Tensor, logit: paddle.Tensor, k: int, s: int, p: int) -> paddle.Tensor:
    """Σ softmax(logit)·x over each k×k window (stride s, padding p; padded positions excluded), in one pass.

    The kernel of ``models.pooling.soft_window`` (same function); it subtracts each window's maximum logit, so
    any logits are safe. Call only where :func:`window_kernels` is not None.
    """
    return window_kernels(x, k).lenet_soft_window(x, logit, k, s, p, _threads)[0]


def lip_logit(y: paddle.Tensor, scale: paddle.Tensor, bias: paddle.Tensor, eps: float) -> paddle.Tensor:
    """``12·sigmoid(instance_norm(y)·scale + bias)`` per plane (LIP's logit after its conv), in one pass. Call only
    where the kernels apply (it has no windows: :func:`window_kernels`' size limit does not concern it)."""
    return _applies(y).lenet_lip_logit(y, scale, bias, float(eps), _threads)[0]


def max_pool2x2(x: paddle.Tensor) -> paddle.Tensor:
    """``F.max_pool2d(x, 2, 2)`` for even H and W; ties pick the first element, as Paddle's kernel does."""
    k = _applies(x)
    if k is None or x.shape[2] % 2 or x.shape[3] % 2:
        return F.max_pool2d(x, 2, 2, return_mask=True)[0]  # the mask kernel: faster on CPU, same values
    return k.lenet_max_pool2x2(x, _threads)[0]


def avg_pool2x2(x: paddle.Tensor) -> paddle.Tensor:
    """``F.avg_pool2d(x, 2, 2)``, bit for bit (the same sums in the same order, the same division)."""
    k = _applies(x)
    if k is None:
        return F.avg_pool2d(x, 2, 2)
    return k.lenet_avg_pool2x2(x, _threads)


def global_avg_pool(x: paddle.Tensor) -> paddle.Tensor:
    """``F.adaptive_avg_pool2d(x, 1)``, bit for bit (each plane's sum in Paddle's order, its division and its
    gradient's scale)."""
    k = _applies(x)
    if k is None or len(x.shape) != 4 or x.shape[2] * x.shape[3] == 0:
        return F.adaptive_avg_pool2d(x, 1)
    return k.lenet_global_avg_pool(x, _threads)


def stochastic_pool(x: paddle.Tensor, u: paddle.Tensor, k: int) -> paddle.Tensor:
    """Stochastic pooling's training draw over k×k windows given one uniform ``u`` per window (the pick of
    ``StochasticPool``'s plain graph). Call only where :func:`window_kernels` is not None."""
    return window_kernels(x, k).lenet_stochastic_pool(x, u, k, _threads)[0]


def dpp_pool(x: paddle.Tensor, lam: paddle.Tensor, alpha: paddle.Tensor, k: int) -> paddle.Tensor:
    """``DPPPool``'s function fused into one pass per window (forward and backward). Call only where
    :func:`window_kernels` is not None."""
    keep = not (x.stop_gradient and lam.stop_gradient and alpha.stop_gradient)
    return window_kernels(x, k).lenet_dpp(x, lam, alpha, k, keep, _threads)[0]


def lp_pool(x: paddle.Tensor, p: float, k: int) -> paddle.Tensor:
    """``LpPool``'s (Σ|x|^p)^(1/p) over k×k windows in one pass per window (forward and backward). Call only where
    :func:`window_kernels` is not None."""
    return window_kernels(x, k).lenet_lp_pool(x, float(p), k, not x.stop_gradient, _threads)[0]


def rand(shape: list[int], like: paddle.Tensor) -> paddle.Tensor:
    """``paddle.rand(shape)`` (float32) on ``like``'s device: the same numbers from the same generator, which it
    leaves where ``paddle.rand`` would, so every later draw is the same too."""
    k = _applies(like)
    if k is None:
        return paddle.rand(shape, dtype=like.dtype)
    return k.lenet_rand(like.detach(), [int(d) for d in shape])


def dropout(x: paddle.Tensor, p: float) -> paddle.Tensor:
    """``F.dropout(x, p)`` in training (mode ``upscale_in_train``, no axis, 0 < p < 1): the same mask from the same
    draws, the same output and gradient, the generator left where Paddle's dropout leaves it."""
    k = _applies(x)
    # a program seed (paddle.static) makes Paddle's dropout draw from a fresh engine seeded with it at every call
    if k is None or not 0.0 < p < 1.0 or paddle.static.default_main_program().random_seed != 0:
        return F.dropout(x, p, training=True)
    return k.lenet_dropout(x, float(p))[0]


def window_kernels(x: paddle.Tensor, k: int) -> Any:
    """The kernels for k×k-window pooling of ``x``, or None (they hold a window on the stack: at most 16×16)."""
    return _applies(x) if k * k <= 256 else None
