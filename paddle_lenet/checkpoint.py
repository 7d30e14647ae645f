"""Atomic, complete checkpoints, and a fallback when the newest one is damaged.

A checkpoint ``<tag>`` is three files: ``<tag>.pdparams`` (weights), ``<tag>.pdopt`` (optimizer,
LR schedule included) and ``<tag>.pdstate`` (epoch, step, RNG states, running sums, timing — everything
else needed to continue exactly). Each is written to a temporary name and renamed; ``.pdstate`` goes
last, so a checkpoint exists only once all three are whole: a SIGKILL at any moment leaves either
the new checkpoint or the previous one, never a torn mix. A file damaged later (a disk error, a user's
editor) is detected on load, and resume falls back to the previous complete checkpoint with a notice.
"""

from __future__ import annotations

import os
import pickle
import re
import shutil
import sys
from typing import Any

from . import _paddle  # noqa: F401  (paddle without its import-time warnings)
import paddle

from .errors import RunFolderError
from .files import atomic_write

_TAG = re.compile(r"^epoch_(\d+)(?:_step_(\d+))?\.pdstate$")
EXTS = (".pdparams", ".pdopt", ".pdstate")


def is_package_file(name: str) -> bool:
    """Files this module writes into ``checkpoints/`` (overwrite deletes these and nothing else)."""
    return bool(re.match(r"^(epoch_\d+(_step_\d+)?|final)\.(pdparams|pdopt|pdstate)(\.tmp\d+)?$", name))


def save(folder: str, tag: str, net_state: dict, opt_state: dict, state: dict[str, Any]) -> None:
    base = os.path.join(folder, tag)
    atomic_write(base + ".pdparams", lambda p: paddle.save(net_state, p), fsync=True)
    atomic_write(base + ".pdopt", lambda p: paddle.save(opt_state, p), fsync=True)

    def write_state(p: str) -> None:
        with open(p, "wb") as f:
            pickle.dump(state, f)

    atomic_write(base + ".pdstate", write_state, fsync=True)
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


def _load(base: str) -> tuple[dict, dict, dict[str, Any]]:
    with open(base + ".pdstate", "rb") as f:
        state = pickle.load(f)
    if not isinstance(state, dict) or "epoch" not in state:
        raise ValueError("not a run state")
    net, opt = paddle.load(base + ".pdparams"), paddle.load(base + ".pdopt")
    if not isinstance(net, dict) or not isinstance(opt, dict):
        raise ValueError("not a state dict")
    return net, opt, state


def load_latest(folder: str) -> tuple[dict, dict, dict[str, Any]] | None:
    """Newest *readable* complete checkpoint as ``(weights, optimizer state, run state)``, or None.

    A damaged newest checkpoint is skipped with a one-line notice; if every checkpoint is damaged the
    run cannot continue and the error says so.
    """
    done = _complete(folder)
    for i, (_, _, tag) in enumerate(reversed(done)):
        try:
            out = _load(os.path.join(folder, tag))
        except Exception as e:  # paddle and pickle raise many types for a damaged file
            older = done[-2 - i][2] if i + 1 < len(done) else None
            print(f"notice: checkpoint '{tag}' in {folder} is unreadable ({type(e).__name__}); "
                  + (f"falling back to '{older}'" if older else "no older checkpoint"), file=sys.stderr, flush=True)
            continue
        return out
    if done:
        raise RunFolderError(f"every checkpoint in '{folder}' is unreadable; start again with -o Global.overwrite=true")
    return None


def save_final(folder: str, tag: str) -> None:
    for ext in (".pdparams", ".pdopt"):
        atomic_write(os.path.join(folder, "final" + ext),
                     lambda p, e=ext: shutil.copyfile(os.path.join(folder, tag + e), p), fsync=True)


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
    if not isinstance(state, dict):
        raise RunFolderError(f"checkpoint '{path}' holds no weights; pass a .pdparams file written by training")
    want = net.state_dict()
    missing = [k for k in want if k not in state]
    wrong = [k for k in want if k in state and list(getattr(state[k], "shape", [])) != list(want[k].shape)]
    if missing or wrong:
        what = f"missing {missing[:3]}" if missing else f"shape mismatch in {wrong[:3]}"
        raise RunFolderError(f"checkpoint '{path}' does not fit model {type(net).__name__} ({what}); "
                             f"check Arch.name and its options")
    return state
