"""Atomic, complete, self-describing checkpoints that load without executing anything.

A checkpoint ``<tag>`` is three files: ``<tag>.pdparams`` (weights) and ``<tag>.pdopt`` (optimizer, LR schedule
included), written by ``paddle.save`` so the notebook's ``paddle.load`` reads them unchanged, and
``<tag>.pdstate``, plain JSON: what the run is (its identity — model, operator revision, seed, the settings
that shape the weights, the arithmetic), the SHA-256 of the two weight files, and everything else needed to
continue exactly (epoch, step, RNG states, running sums, timing). Each is written to a temporary name and
renamed; ``.pdstate`` goes last, so a checkpoint exists only once all three are whole: a SIGKILL at any
moment leaves either the new checkpoint or the previous one. A file damaged or replaced later (a disk error,
an editor, another run's weights copied in) no longer matches its digest: resume falls back to the previous
complete checkpoint with a notice, and eval/export refuse it by name.

Loading never runs code from a file: the weight files are read by a restricted unpickler that admits numpy
arrays and nothing else (a crafted ``.pdparams`` that would run a command is refused), and the state is JSON.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import re
import shutil
import sys
import warnings
from typing import Any

import numpy as np
from . import _paddle  # noqa: F401  (paddle without its import-time warnings)
import paddle

from .errors import RunFolderError
from .files import atomic_write

_TAG = re.compile(r"^epoch_(\d+)(?:_step_(\d+))?\.pdstate$")
FORMAT = 2  # 2: JSON state with identity and digests (1: pickled state, refused: it could hold code)


def is_package_file(name: str) -> bool:
    """Files this module writes into ``checkpoints/`` (overwrite deletes these and nothing else)."""
    return bool(re.match(r"^(epoch_\d+(_step_\d+)?|final)\.(pdparams|pdopt|pdstate)(\.tmp\d+)?$", name))


# --------------------------------------------------------------------------- safe reading
_ALLOWED = {("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"), ("numpy", "dtype"), ("collections", "OrderedDict"),
            ("numpy._core.multiarray", "scalar"), ("numpy.core.multiarray", "scalar")}


class _ArraysOnly(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refused to load {module}.{name}: a weights file holds arrays only")


def _check_arrays(obj: Any) -> None:
    """Only dicts of arrays, numbers, strings and nested dicts (paddle's name table): nothing callable."""
    if isinstance(obj, dict):
        for v in obj.values():
            _check_arrays(v)
    elif isinstance(obj, np.ndarray):
        if obj.dtype.hasobject:
            raise pickle.UnpicklingError("an object array in a weights file")
    elif not isinstance(obj, (int, float, str, bool, type(None), np.generic)):
        raise pickle.UnpicklingError(f"a {type(obj).__name__} in a weights file")


def safe_load(path: str) -> dict[str, Any]:
    """A ``paddle.save``'d state dict, read without executing anything; raises on anything but arrays."""
    with open(path, "rb") as f:
        obj = _ArraysOnly(io.BytesIO(f.read())).load()
    if not isinstance(obj, dict):
        raise ValueError("not a state dict")
    _check_arrays(obj)
    return obj


def sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# --------------------------------------------------------------------------- RNG states as JSON
def encode_rng(paddle_state: list) -> list:
    """Paddle's generator states as JSON (device, seed, offset, the engine's text state)."""
    out = []
    for g in paddle_state:
        t = g.__getstate__()
        out.append([t[0], t[1], t[2], bytes(t[3]).decode("ascii"), *t[4:]])
    return out


def decode_rng(state: list) -> list:
    cls = type(paddle.get_rng_state()[0])
    gens = []
    for t in state:
        g = cls.__new__(cls)
        g.__setstate__((t[0], t[1], t[2], list(t[3].encode("ascii")), *t[4:]))
        gens.append(g)
    return gens


# --------------------------------------------------------------------------- writing
def save(folder: str, tag: str, net_state: dict, opt_state: dict, state: dict[str, Any]) -> None:
    """``state`` must be JSON-serialisable and hold ``identity``; the files' digests are added here."""
    base = os.path.join(folder, tag)
    atomic_write(base + ".pdparams", lambda p: _paddle_save(net_state, p), fsync=True)
    atomic_write(base + ".pdopt", lambda p: _paddle_save(opt_state, p), fsync=True)
    record = {**state, "format": FORMAT, "sha256": {"pdparams": sha256(base + ".pdparams"),
                                                    "pdopt": sha256(base + ".pdopt")}}
    text = json.dumps(record, allow_nan=False)
    atomic_write(base + ".pdstate", lambda p: _write_text(p, text), fsync=True)
    if state["step"] == 0:  # a whole epoch supersedes the mid-epoch (interrupt) checkpoints before it
        for name in os.listdir(folder):
            m = _TAG.match(name)
            if m and m.group(2) and int(m.group(1)) < state["epoch"]:
                for ext in (".pdstate", ".pdparams", ".pdopt"):  # marker first: never a torn checkpoint
                    p = os.path.join(folder, name[: -len(".pdstate")] + ext)
                    if os.path.exists(p):
                        os.remove(p)


def _paddle_save(obj: dict, path: str) -> None:
    with warnings.catch_warnings():  # plain SGD has no state: paddle warns "state dict is empty" every epoch
        warnings.simplefilter("ignore")
        paddle.save(obj, path)


def _write_text(path: str, text: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def save_final(folder: str, tag: str) -> None:
    """``final.*``: a copy of checkpoint ``tag``, state (identity, digests) included; the state goes last."""
    for ext in (".pdparams", ".pdopt", ".pdstate"):
        atomic_write(os.path.join(folder, "final" + ext),
                     lambda p, e=ext: shutil.copyfile(os.path.join(folder, tag + e), p), fsync=True)


# --------------------------------------------------------------------------- reading
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


def epochs_done(folder: str) -> int | None:
    done = _complete(folder)
    return done[-1][0] if done else None


def read_state(base: str) -> dict[str, Any]:
    """The JSON state of checkpoint ``base`` (path without extension); ValueError if it is not one of ours."""
    try:
        with open(base + ".pdstate", encoding="utf-8") as f:
            state = json.load(f)
    except UnicodeDecodeError:
        raise ValueError("not a JSON run state (a checkpoint of an older version, or damaged)") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT or not isinstance(state.get("identity"), dict):
        raise ValueError("not a run state of this version")
    return state


def _verified(base: str, state: dict[str, Any], ext: str) -> dict[str, Any]:
    if sha256(base + "." + ext) != state.get("sha256", {}).get(ext):
        raise ValueError(f"{os.path.basename(base)}.{ext} is not the file its checkpoint recorded (changed or replaced)")
    return safe_load(base + "." + ext)


def _load(base: str) -> tuple[dict, dict, dict[str, Any]]:
    state = read_state(base)
    return _verified(base, state, "pdparams"), _verified(base, state, "pdopt"), state


def load_latest(folder: str) -> tuple[dict, dict, dict[str, Any]] | None:
    """Newest *readable, intact* complete checkpoint as ``(weights, optimizer state, run state)``, or None.

    A damaged newest checkpoint is skipped with a one-line notice; if every checkpoint is damaged the
    run cannot continue and the error says so.
    """
    done = _complete(folder)
    notices = []
    for _, _, tag in reversed(done):
        try:
            out = _load(os.path.join(folder, tag))
        except Exception as e:  # paddle, pickle and json raise many types for a damaged file
            why = str(e).splitlines()[0][:120] if isinstance(e, ValueError) and str(e) else type(e).__name__
            notices.append(f"checkpoint '{tag}' in {folder} is unusable ({why})")
            continue
        for n, line in enumerate(notices):  # one line for each skipped checkpoint, naming what is used instead
            print(f"notice: {line}; falling back to '{done[-2 - n][2]}'", file=sys.stderr, flush=True)
        return out
    if done:
        raise RunFolderError(f"no checkpoint in '{folder}' is usable ({len(done)} tried; newest: {notices[0]}); "
                             f"start again with -o Global.overwrite=true")
    return None


def load_params(path: str, net: paddle.nn.Layer, own: bool = True) -> tuple[dict, dict[str, Any] | None]:
    """Weights from ``path`` and their recorded state, checked so a wrong file fails in one clear line.

    ``own``: the file is a run's own checkpoint, which must carry its state (identity and digest); a file a
    user names explicitly (``Global.checkpoint``) may be a bare ``.pdparams`` (state None: identity unchecked).
    Weights holding NaN or infinity are refused: they cannot give a meaningful number.
    """
    if not path.endswith(".pdparams") and os.path.exists(path + ".pdparams"):
        path += ".pdparams"
    if not os.path.isfile(path):
        raise RunFolderError(f"checkpoint '{path}' not found; train the run first or pass -o Global.checkpoint=PATH")
    base = path[: -len(".pdparams")] if path.endswith(".pdparams") else path
    state = None
    try:
        if own or os.path.exists(base + ".pdstate"):
            state = read_state(base)
            weights = _verified(base, state, "pdparams")
        else:
            weights = safe_load(path)
    except FileNotFoundError:
        raise RunFolderError(f"checkpoint '{path}' has no {os.path.basename(base)}.pdstate record; it cannot be "
                             f"checked against the run; retrain, or name the file with -o Global.checkpoint=PATH") from None
    except Exception as e:  # paddle, pickle and json raise many types for a damaged or crafted file
        why = str(e).splitlines()[0][:140] if isinstance(e, (ValueError, pickle.UnpicklingError)) else type(e).__name__
        raise RunFolderError(f"checkpoint '{path}' cannot be used ({why}); retrain the run or restore the file") from None
    want = net.state_dict()
    missing = [k for k in want if k not in weights]
    wrong = [k for k in want if k in weights and list(getattr(weights[k], "shape", [])) != list(want[k].shape)]
    if missing or wrong:
        what = f"missing {missing[:3]}" if missing else f"shape mismatch in {wrong[:3]}"
        raise RunFolderError(f"checkpoint '{path}' does not fit model {type(net).__name__} ({what}); "
                             f"check Arch.name and its options")
    bad = [k for k in want if not np.isfinite(np.asarray(weights[k], dtype="float64")).all()]
    if bad:
        raise RunFolderError(f"checkpoint '{path}' holds non-finite weights (NaN or inf in {bad[0]}); no number "
                             f"computed from it would mean anything; retrain the run")
    return weights, state
