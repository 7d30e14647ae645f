"""The kernels' arithmetic revisions mean what they say: the output bits of every kernel are pinned.

Each kernel has a revision (``ops.REVISIONS``); a run records those of the kernels its model uses, and a study
continues only over records of the same revisions. A speed change that keeps every bit (another register tile, a
stride-2 convolution without im2col that adds the same products in the same order) keeps the kernel's revision, so
finished study records stay valid; a change that moves any bit must bump it — and only the runs of models using that
kernel stop counting. This test holds the bits of forward and backward passes of every kernel on fixed inputs, per
kernel and revision. Digests are per ISA (Paddle's build and the compiler's code paths are per ISA); on an ISA
without a recorded entry the test says how to record one. After bumping a revision: ``python tests/test_kernel_bits.py``
records this machine's digests of every kernel at its current revision.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import paddle
import pytest

from paddle_lenet import ops

GOLDEN = Path(__file__).with_name("kernel_bits.json")

# (name, C, O, k, stride, padding, H, W): every convolution geometry of the registered models, and odd sizes
CONVS = [
    ("c1_k5_p2", 1, 6, 5, 1, 2, 28, 28), ("c2_k5", 6, 16, 5, 1, 0, 14, 14), ("s2_k5", 6, 16, 5, 2, 0, 28, 28),
    ("s1_k3_p1", 16, 16, 3, 1, 1, 12, 12), ("s2_k3", 16, 16, 3, 2, 0, 12, 12), ("s2_k3_p1_odd", 3, 5, 3, 2, 1, 13, 11),
    ("s2_k4_p1", 4, 7, 4, 2, 1, 15, 16), ("s3_k5_p2", 2, 3, 5, 3, 2, 17, 19), ("c3_k5", 16, 120, 5, 1, 0, 5, 5),
    ("k3_2x2_out", 4, 9, 3, 1, 0, 4, 4), ("s2_k3_p1_2x2_out", 3, 20, 3, 2, 1, 3, 3), ("k5_1x1_out_o6", 6, 6, 5, 1, 0, 5, 5),
    ("k5_3x3_out", 16, 120, 5, 1, 0, 7, 7), ("k3_p1_5x5_out_o120", 16, 120, 3, 1, 1, 5, 5),
    ("s2_k5_p2_o6", 1, 6, 5, 2, 2, 28, 28),
]
BATCH = 37  # odd, and more than one image per gradient chunk: images are grouped in some kernels


def _digest(*tensors: paddle.Tensor) -> str:
    h = hashlib.sha256()
    for t in tensors:
        h.update(np.ascontiguousarray(t.numpy()).tobytes())
    return h.hexdigest()[:16]


def _inputs(seed: int, *shapes: tuple[int, ...]) -> list[paddle.Tensor]:
    rng = np.random.RandomState(seed)
    out = []
    for s in shapes:
        t = paddle.to_tensor(rng.standard_normal(s).astype("float32"))
        t.stop_gradient = False
        out.append(t)
    return out


def compute() -> dict[str, str]:
    """Digest of each kernel's output and gradients (w.r.t. every input) on fixed inputs."""
    ops.configure(True, 2)
    k = ops.kernels()
    assert k is not None, "kernels unavailable"
    d: dict[str, str] = {}
    for i, (name, c, o, ks, s, p, h, w) in enumerate(CONVS):
        x, wt, b = _inputs(i, (BATCH, c, h, w), (o, c, ks, ks), (o,))
        y = ops.conv2d(x, wt, b, s, p)
        (g,) = _inputs(100 + i, tuple(y.shape))
        dx, dw, db = paddle.grad([y], [x, wt, b], [g])
        d[f"conv2d/{name}"] = _digest(y, dx, dw, db)
    for i, (name, c, o, h, w) in enumerate([("lip1_6x28", 6, 6, 28, 28), ("lip2_16x10", 16, 16, 10, 10),
                                            ("odd_3to5_13x11", 3, 5, 13, 11)]):
        x, wt = _inputs(40 + i, (BATCH, c, h, w), (o, c, 3, 3))
        y = ops.conv2d(x, wt, None, 1, 1, dx_conv=True)
        (g,) = _inputs(45 + i, tuple(y.shape))
        d[f"conv2d_dx_conv/{name}"] = _digest(y, *paddle.grad([y], [x, wt], [g]))
    x, = _inputs(50, (4, 6, 10, 12))
    y = ops.max_pool2x2(x)
    (dx,) = paddle.grad([y], [x], [paddle.ones_like(y)])
    d["max_pool2x2"] = _digest(y, dx)
    for name, shape in {"avg_pool2x2": (4, 6, 10, 12), "avg_pool2x2/odd_13x11": (3, 2, 13, 11)}.items():
        x, = _inputs(55, shape)
        y = ops.avg_pool2x2(x)
        (g,) = _inputs(56, tuple(y.shape))
        d[name] = _digest(y, *paddle.grad([y], [x], [g]))
    x, = _inputs(57, (5, 7, 5, 5))
    y = ops.global_avg_pool(x)
    (g,) = _inputs(58, tuple(y.shape))
    d["global_avg_pool"] = _digest(y, *paddle.grad([y], [x], [g]))
    for name, (ks, s, p) in {"soft_window/soft_2x2": (2, 2, 0), "lip_window/3x3_s2_p1": (3, 2, 1),
                             "lip_window/odd_13x11": (3, 2, 1)}.items():
        shape = (2, 3, 13, 11) if "odd" in name else (3, 4, 12, 12)
        x, logit = _inputs(60, shape, shape)
        y = ops.soft_window(x, logit, ks, s, p)
        (g,) = _inputs(61, tuple(y.shape))
        d[name] = _digest(y, *paddle.grad([y], [x, logit], [g]))
    x, = _inputs(70, (3, 4, 12, 12))
    u = paddle.to_tensor(np.random.RandomState(71).uniform(size=(3, 4, 6, 6)).astype("float32"))
    y = ops.stochastic_pool(paddle.nn.functional.relu(x), u, 2)
    (g,) = _inputs(72, tuple(y.shape))
    d["stochastic_pool"] = _digest(y, *paddle.grad([y], [x], [g]))
    for name, shape in {"dpp": (3, 4, 12, 12), "dpp/odd_37x19": (2, 3, 37, 19)}.items():
        x, lam, alpha = _inputs(80, shape, (shape[1],), (shape[1],))
        y = ops.dpp_pool(x, lam, alpha, 2)
        (g,) = _inputs(81, tuple(y.shape))
        d[name] = _digest(y, *paddle.grad([y], [x, lam, alpha], [g]))
    for name, (shape, p) in {"lp_pool": ((3, 4, 12, 12), 3.0), "lp_pool/odd_p7": ((2, 3, 13, 11), 7.0)}.items():
        x, = _inputs(90, shape)
        y = ops.lp_pool(x, p, 2)
        (g,) = _inputs(91, tuple(y.shape))
        d[name] = _digest(y, *paddle.grad([y], [x], [g]))
    y, scale, bias = _inputs(95, (3, 4, 12, 12), (4,), (4,))
    out = ops.lip_logit(y, scale * 3.0, bias, 1e-5)
    (g,) = _inputs(96, tuple(out.shape))
    d["lip_logit"] = _digest(out, *paddle.grad([out], [y, scale, bias], [g]))
    paddle.seed(97)  # the draw kernels: Paddle's bits (tests/test_ops.py), so one digest on every ISA
    d["rand"] = _digest(ops.rand([3, 4, 12, 12], y), ops.rand([5], y))
    x, g = _inputs(98, (3, 4, 12, 12), (3, 4, 12, 12))
    out = ops.dropout(x, 0.4)
    d["dropout"] = _digest(out, *paddle.grad([out], [x], [g]), ops.rand([5], x))
    return d


def kernel_of(case: str) -> str:
    return case.split("/")[0]


def _table() -> dict:
    return json.loads(GOLDEN.read_text()) if GOLDEN.exists() else {}


def _current(table: dict, isa: str) -> dict[str, dict[str, str] | None]:
    """Each kernel's recorded digests at its current revision on ``isa`` (None: not recorded)."""
    return {k: table.get(k, {}).get(rev, {}).get(isa) for k, rev in ops.REVISIONS.items()}


def test_kernel_bits_match_the_recorded_arithmetic() -> None:
    if ops.kernels() is None:
        pytest.skip("the fast CPU kernels are unavailable here (no compiler, or disabled)")
    entries = _current(_table(), ops.isa())
    absent = sorted(k for k, e in entries.items() if e is None)
    if len(absent) == len(entries):
        pytest.skip(f"no kernel bits recorded on ISA {ops.isa()}: record them with `python tests/test_kernel_bits.py` "
                    f"on this machine and commit {GOLDEN.name}")
    assert not absent, (f"no bits recorded for {absent} at revision {[ops.REVISIONS[k] for k in absent]} on "
                        f"{ops.isa()}: run `python tests/test_kernel_bits.py` and commit {GOLDEN.name}")
    got = compute()
    changed = sorted(case for case in got if entries[kernel_of(case)].get(case) != got[case])
    assert not changed, (f"kernel bits changed for {changed}: a kernel now computes other numbers; bump its revision "
                         f"in ops.REVISIONS (its old study records then no longer count) or restore them")
    assert {c for e in entries.values() for c in e} == set(got), "the pinned cases changed: regenerate"


def test_the_recorded_arithmetic_has_digests_for_every_case() -> None:
    """The table is not stale: every kernel's current revision is in it, with every case the test computes, on every
    ISA recorded for it."""
    table = _table()
    names = {f"conv2d/{c[0]}" for c in CONVS} | {
        "max_pool2x2", "avg_pool2x2", "avg_pool2x2/odd_13x11", "global_avg_pool",
        "soft_window/soft_2x2", "lip_window/3x3_s2_p1", "lip_window/odd_13x11", "stochastic_pool", "dpp",
        "dpp/odd_37x19", "lp_pool", "lp_pool/odd_p7", "lip_logit", "conv2d_dx_conv/lip1_6x28",
        "conv2d_dx_conv/lip2_16x10", "conv2d_dx_conv/odd_3to5_13x11", "rand", "dropout"}
    for kernel, rev in ops.REVISIONS.items():
        entry = table.get(kernel, {}).get(rev)
        assert entry, f"{GOLDEN.name} has no entry for kernel {kernel} at revision {rev}"
        want = {n for n in names if kernel_of(n) == kernel}
        for isa, digests in entry.items():
            assert set(digests) == want, f"{GOLDEN.name}: {kernel} {rev} {isa} lacks {sorted(want - set(digests))}"


if __name__ == "__main__":  # record this machine's bits of every kernel at its current revision
    table = _table()
    got = compute()
    for kernel, rev in ops.REVISIONS.items():
        cases = {c: v for c, v in got.items() if kernel_of(c) == kernel}
        old = table.get(kernel, {}).get(rev, {}).get(ops.isa())
        if old is not None and any(c in old and old[c] != v for c, v in cases.items()):  # new cases may be added
            sys.exit(f"{kernel} at revision {rev} computes other bits than recorded on {ops.isa()}: bump its revision")
        table.setdefault(kernel, {}).setdefault(rev, {})[ops.isa()] = cases
    GOLDEN.write_text(json.dumps(table, indent=1, sort_keys=True) + "\n")
    print(f"recorded {len(got)} digests on {ops.isa()}: " + ", ".join(f"{k} {r}" for k, r in ops.REVISIONS.items()),
          file=sys.stderr)
