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
import logging
import os
import platform
import sys
from pathlib import Path
from typing import Any

from . import _paddle  # noqa: F401  (paddle without its import-time warnings)
import paddle
import paddle.nn as nn
import paddle.nn.functional as F

SOURCE = Path(__file__).parent / "csrc" / "conv2d_cpu.cc"
CFLAGS = ["-O3", "-march=native", "-mprefer-vector-width=512", "-fopenmp"]

_module: Any = None
_tried = False
_threads = 0  # 0: all cores (OpenMP's default)
_enabled = True


def _cpu_fingerprint() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next((line for line in f if line.startswith("flags")), "")
    except OSError:
        return platform.processor()


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
        print("paddle_lenet: compiling the fast CPU kernels (once per machine, ~20 s) ...", file=sys.stderr, flush=True)
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

            from .cli import captured_stderr

            # the loader's helper processes print paddle's import warnings to the inherited stderr
            with contextlib.redirect_stdout(quiet), warnings.catch_warnings(), captured_stderr() as captured:
                warnings.simplefilter("ignore")
                try:
                    return load(name=name, sources=[str(SOURCE)], extra_cxx_cflags=CFLAGS, extra_ldflags=["-fopenmp"],
                                verbose=False)
                except Exception as e:
                    lines = [x for x in captured().splitlines() if "error" in x.lower()]
                    raise RuntimeError(f"{str(e).splitlines()[0][:120]}{' | ' + lines[0][:160] if lines else ''}") from None

        try:
            try:
                return build()
            except Exception:
                if fresh:
                    raise
                # a build left damaged (e.g. a compile interrupted by Ctrl-C): remove it and build once more
                import shutil

                shutil.rmtree(root / name, ignore_errors=True)
                print("paddle_lenet: rebuilding the fast CPU kernels (the cached build was damaged) ...",
                      file=sys.stderr, flush=True)
                return build()
        finally:
            logger.setLevel(level)


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
    if x.dtype != paddle.float32 or not x.place.is_cpu_place() or not paddle.in_dynamic_mode():
        return None
    return kernels()


def add_channel_bias(x: paddle.Tensor, bias: paddle.Tensor) -> paddle.Tensor:
    """``x + bias`` per channel of an NCHW tensor, with the bias expanded to ``x``'s shape first.

    Same values as the broadcast add inside ``nn.Conv2D``, but on Paddle's CPU backend the gradient
    of a broadcast add (a reduction over N, H, W) is ~6× slower than that of ``expand``; measured on
    ``[64, 6, 28, 28]``: 9.1 ms vs 1.4 ms forward+backward. Gradients agree to float rounding.
    """
    return x + bias.reshape([1, -1, 1, 1]).expand(x.shape)


def conv2d(x: paddle.Tensor, conv: nn.Conv2D) -> paddle.Tensor:
    """``conv(x)`` (square kernel, symmetric padding, no groups/dilation), through the kernels when they apply."""
    stride, padding = conv._stride[0], conv._padding
    k = _applies(x)
    if k is None or not isinstance(padding, int) or conv._stride[1] != stride or conv._groups != 1 \
            or conv._dilation != [1, 1] or conv.weight.shape[2] != conv.weight.shape[3]:
        out = F.conv2d(x, conv.weight, None, stride=stride, padding=padding)
        return out if conv.bias is None else add_channel_bias(out, conv.bias)
    bias = conv.bias if conv.bias is not None else paddle.zeros([conv.weight.shape[0]], "float32")
    return k.lenet_conv2d(x, conv.weight, bias, stride, padding, not x.stop_gradient, _threads)


def soft_window(x: paddle.Tensor, logit: paddle.Tensor, k: int, s: int, p: int, kernel: bool = True) -> paddle.Tensor:
    """Σ softmax(logit)·x over each k×k window (stride s, padding p; padded positions excluded).

    The weighted mean with weights e^logit that SoftPool (logit = x) and LIP (logit = its importance map)
    are made of. The kernel subtracts each window's maximum logit, so any logits are safe. Without it
    (``kernel=False``, or no kernels) Paddle's ops compute the same function: a softmax over the window axis
    for non-overlapping windows, else avg_pool(x·e^L) / avg_pool(e^L) shifted by the tensor's maximum, which
    needs logits within ~80 of each other (LIP's are in [0, 12]).
    """
    kern = _applies(x) if kernel else None
    if kern is not None:
        return kern.lenet_soft_window(x, logit, k, s, p, _threads)
    if k == s and p == 0:
        n, c, h, w = x.shape
        ho, wo = h // k, w // k

        def win(t: paddle.Tensor) -> paddle.Tensor:
            t = t[:, :, : ho * k, : wo * k].reshape([n, c, ho, k, wo, k]).transpose([0, 1, 2, 4, 3, 5])
            return t.reshape([n, c, ho, wo, k * k])

        return (F.softmax(win(logit), axis=-1) * win(x)).sum(-1)
    e = paddle.exp(logit - logit.max().detach())
    return F.avg_pool2d(x * e, k, s, p) / F.avg_pool2d(e, k, s, p)


def max_pool2x2(x: paddle.Tensor) -> paddle.Tensor:
    """``F.max_pool2d(x, 2, 2)`` for even H and W; ties pick the first element, as Paddle's kernel does."""
    k = _applies(x)
    if k is None or x.shape[2] % 2 or x.shape[3] % 2:
        return F.max_pool2d(x, 2, 2, return_mask=True)[0]  # the mask kernel: faster on CPU, same values
    return k.lenet_max_pool2x2(x, _threads)[0]


def stochastic_pool(x: paddle.Tensor, u: paddle.Tensor, k: int) -> paddle.Tensor | None:
    """Stochastic pooling's training draw over k×k windows given one uniform ``u`` per window, or None
    without the kernels (``StochasticPool`` then computes the same pick with Paddle's ops)."""
    kern = _window_kernels(x, k)
    return None if kern is None else kern.lenet_stochastic_pool(x, u, k, _threads)[0]


def dpp_pool(x: paddle.Tensor, lam: paddle.Tensor, alpha: paddle.Tensor, k: int) -> paddle.Tensor | None:
    """``DPPPool``'s function fused into one pass per window (forward and backward), or None without the kernels."""
    kern = _window_kernels(x, k)
    return None if kern is None else kern.lenet_dpp(x, lam, alpha, k, _threads)


def _window_kernels(x: paddle.Tensor, k: int) -> Any:
    """The kernels for k×k-window pooling of ``x``, or None (they hold a window on the stack: at most 16×16)."""
    return _applies(x) if k * k <= 256 else None
