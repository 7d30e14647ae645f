"""Atomic, complete checkpoints.

A checkpoint ``<tag>`` is three files: ``<tag>.pdparams`` (weights), ``<tag>.pdopt`` (optimizer,
LR schedule included) and ``<tag>.pdstate`` (epoch, step, RNG states, timing — everything else
needed to continue exactly). Each is written to a temporary name and renamed; ``.pdstate`` goes
last, so a checkpoint exists only once all three are whole: a SIGKILL at any moment leaves either
the new checkpoint or the previous one, never a torn mix.
"""

from __future__ import annotations

import os
import pickle
import re
import shutil
from typing import Any

import paddle

from .errors import RunFolderError

_TAG = re.compile(r"^epoch_(\d+)(?:_step_(\d+))?\.pdstate$")


def _atomic(path: str, write: Any) -> None:
    tmp = path + ".tmp"
    write(tmp)
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save(folder: str, tag: str, net_state: dict, opt_state: dict, state: dict[str, Any]) -> None:
    os.makedirs(folder, exist_ok=True)
    base = os.path.join(folder, tag)
    _atomic(base + ".pdparams", lambda p: paddle.save(net_state, p))
    _atomic(base + ".pdopt", lambda p: paddle.save(opt_state, p))

    def write_state(p: str) -> None:
        with open(p, "wb") as f:
            pickle.dump(state, f)

    _atomic(base + ".pdstate", write_state)
    if state["step"] == 0:  # a whole epoch supersedes the mid-epoch (interrupt) checkpoints before it
        for name in os.listdir(folder):
            m = _TAG.match(name)
            if m and m.group(2) and int(m.group(1)) < state["epoch"]:
                for ext in (".pdstate", ".pdparams", ".pdopt"):  # marker first: never a torn checkpoint
                    p = os.path.join(folder, name[: -len(".pdstate")] + ext)
                    if os.path.exists(p):
                        os.remove(p)


def _complete(folder: str) -> list[tuple[int, int, str]]:
    if not os.path.isdir(folder):
        return []
    out = []
    for name in os.listdir(folder):
        m = _TAG.match(name)
        tag = name[: -len(".pdstate")]
        if m and all(os.path.exists(os.path.join(folder, tag + e)) for e in (".pdparams", ".pdopt")):
            out.append((int(m.group(1)), int(m.group(2) or 0), tag))
    return sorted(out)


def latest_tag(folder: str) -> str | None:
    done = _complete(folder)
    return done[-1][2] if done else None


def load_latest(folder: str) -> tuple[dict, dict, dict[str, Any]] | None:
    """Newest complete checkpoint as ``(weights, optimizer state, run state)``, or None."""
    tag = latest_tag(folder)
    if tag is None:
        return None
    base = os.path.join(folder, tag)
    with open(base + ".pdstate", "rb") as f:
        state = pickle.load(f)
    return paddle.load(base + ".pdparams"), paddle.load(base + ".pdopt"), state


def save_final(folder: str, tag: str) -> None:
    for ext in (".pdparams", ".pdopt"):
        _atomic(os.path.join(folder, "final" + ext), lambda p, e=ext: shutil.copyfile(os.path.join(folder, tag + e), p))


def load_params(path: str, net: paddle.nn.Layer) -> dict:
    """Weights from ``path``, checked against ``net`` so a wrong file fails in one clear line."""
    if not path.endswith(".pdparams") and os.path.exists(path + ".pdparams"):
        path += ".pdparams"
    if not os.path.isfile(path):
        raise RunFolderError(f"checkpoint '{path}' not found; train the run first or pass -o Global.checkpoint=PATH")
    try:
        state = paddle.load(path)
    except Exception as e:  # paddle raises many types for a damaged file
        raise RunFolderError(f"checkpoint '{path}' cannot be read ({type(e).__name__}); it may be truncated") from None
    want = net.state_dict()
    missing = [k for k in want if k not in state]
    wrong = [k for k in want if k in state and list(state[k].shape) != list(want[k].shape)]
    if missing or wrong or not isinstance(state, dict):
        what = f"missing {missing[:3]}" if missing else f"shape mismatch in {wrong[:3]}"
        raise RunFolderError(f"checkpoint '{path}' does not fit model {type(net).__name__} ({what}); "
                             f"check Arch.name and its options")
    return state
