"""A run folder ``<output_dir>/<name>/``: what it holds, who owns it, and whether it matches a config.

Shared by training (refuse to clobber, resume only the same experiment), the study (reuse a finished run
only if it was trained with exactly the settings asked for now) and the tools that read a run
(eval/export take the run's own config).
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

import yaml

from . import checkpoint as ckpt
from .config import SCHEMA, run_dir, validate
from .errors import ConfigError, RunFolderError
from .files import FolderLock, fs_error

# Keys that may differ between a run and a later command without changing a single number it produced.
NEUTRAL = {("Global", k) for k in ("name", "output_dir", "checkpoint", "resume", "overwrite", "print_every",
                                   "kernel_threads", "vdl", "eval_every", "epochs")} | {("Data", "num_workers")}
NEUTRAL |= {("Study", k) for k in SCHEMA["Study"]}


def config_difference(saved: dict[str, Any], cfg: dict[str, Any], ignore: set[tuple[str, str]] = NEUTRAL,
                      ) -> tuple[str, Any, Any] | None:
    """First ``(Section.key, recorded, requested)`` that differs and matters, else None."""
    for section, keys in SCHEMA.items():
        for key in keys:
            if (section, key) in ignore:
                continue
            a = saved.get(section, {}).get(key, keys[key].default)
            b = cfg.get(section, {}).get(key, keys[key].default)
            if a != b:
                return f"{section}.{key}", a, b
    return None


# What shapes a checkpoint's weights: a checkpoint whose record differs in one of these is another run's.
# (mixed pooling's inference rule does not touch training: the same weights may be scored under another rule)
WEIGHT_KEYS = ({("Arch", k) for k in SCHEMA["Arch"] if k != "mixed_test"} | {("Optimizer", k) for k in SCHEMA["Optimizer"]}
               | {("Data", k) for k in ("name", "batch_size", "shuffle", "train_limit")} | {("Global", "seed")})
# ... and what else a resumed run must share with its first part: the same arithmetic and history rules
RESUME_KEYS = WEIGHT_KEYS | {("Global", k) for k in ("threads", "device", "fast", "eval_every")} | {("Arch", "mixed_test")}


def identity(cfg: dict[str, Any], arch_revision: int, arithmetic: dict[str, Any]) -> dict[str, Any]:
    """What a checkpoint says it is: model, operator revision, the settings that made it, the arithmetic."""
    return {"model": cfg["Arch"]["name"], "arch_revision": arch_revision, "arithmetic": arithmetic,
            "settings": {f"{s}.{k}": cfg[s][k] for s, k in sorted(RESUME_KEYS)}}


def check_identity(recorded: dict[str, Any], cfg: dict[str, Any], arch_revision: int, where: str,
                   arithmetic: dict[str, Any] | None = None) -> None:
    """Refuse, naming the first difference, a checkpoint that is not this config's run.

    ``arithmetic`` (resume only): the kernels must be the ones the run started with — a run computed half
    with the package's kernels and half with Paddle's ops would equal neither.
    """
    keys = RESUME_KEYS if arithmetic is not None else WEIGHT_KEYS
    settings = recorded.get("settings", {})
    if recorded.get("model") != cfg["Arch"]["name"]:
        raise RunFolderError(f"{where} holds a {recorded.get('model')} model, but the run's config says "
                             f"Arch.name={cfg['Arch']['name']}; the checkpoint is another run's")
    if recorded.get("arch_revision") != arch_revision:
        raise RunFolderError(f"{where} was trained with revision {recorded.get('arch_revision')} of the network and "
                             f"Arch now builds revision {arch_revision} (the operator's definition changed since); "
                             f"start it again with -o Global.overwrite=true")
    for s, k in sorted(keys):
        name = f"{s}.{k}"
        if name in settings and settings[name] != cfg[s][k]:
            raise RunFolderError(f"{where} was trained with {name}={settings[name]!r}, but the run's config says "
                                 f"{cfg[s][k]!r}; the checkpoint and the config are of different runs")
    if arithmetic is not None and recorded.get("arithmetic", {}).get("kernels") != arithmetic.get("kernels"):
        def say(a: dict[str, Any]) -> str:
            return f"the package's CPU kernels (revision {a['kernels']})" if a.get("kernels") else "Paddle's own ops"

        raise RunFolderError(f"{where} was computed with {say(recorded.get('arithmetic', {}))} and this process would "
                             f"continue with {say(arithmetic)}; a run mixing the two equals neither: resume where the "
                             f"same arithmetic is available, or start again with -o Global.overwrite=true")


class RunFolder:
    """Paths and rules of one run folder; nothing is written until :meth:`lock` is called."""

    FILES = ("config.yml", "metrics.json", "shift.json")

    def __init__(self, cfg: dict[str, Any]) -> None:
        self.cfg = cfg
        self.dir = run_dir(cfg)
        self.ckpt_dir = os.path.join(self.dir, "checkpoints")
        self.vdl_dir = os.path.join(self.dir, "vdl")
        self.config_path = os.path.join(self.dir, "config.yml")
        self.metrics_path = os.path.join(self.dir, "metrics.json")
        self._lock: FolderLock | None = None

    # ---- reading
    def holds_run(self) -> bool:
        """A run worth keeping: finished (``metrics.json``) or with a complete checkpoint to resume from.

        What a run stopped before its first checkpoint leaves (``config.yml``, an empty log) holds nothing
        and is cleared by the next run into the folder.
        """
        return os.path.exists(self.metrics_path) or ckpt.latest_tag(self.ckpt_dir) is not None

    def saved_config(self) -> dict[str, Any] | None:
        """The run's recorded config, validated; a damaged file is a one-line error naming it."""
        if not os.path.exists(self.config_path):
            return None
        try:
            with open(self.config_path, encoding="utf-8") as f:
                raw = yaml.safe_load(f)
            return validate(raw)
        except (OSError, UnicodeDecodeError, yaml.YAMLError, ConfigError) as e:
            why = str(e).splitlines()[0][:160] if isinstance(e, ConfigError) else type(e).__name__
            raise RunFolderError(f"the run's config '{self.config_path}' is damaged ({why}); restore it, or start the "
                                 f"run again with -o Global.overwrite=true") from None

    def check(self) -> None:
        """Read-only checks before anything is built or written: the promise 'nothing lost, nothing mixed'."""
        g = self.cfg["Global"]
        if os.path.exists(self.dir) and not os.path.isdir(self.dir):
            raise RunFolderError(f"'{self.dir}' is a file, not a run folder; move it or choose another -o Global.name")
        out = g["output_dir"]
        if os.path.exists(out) and not os.path.isdir(out):
            raise RunFolderError(f"Global.output_dir '{out}' is a file; choose a folder")
        holds = os.path.isdir(self.dir) and self.holds_run()
        if holds and not (g["resume"] or g["overwrite"]):
            saved = self.saved_config()
            diff = config_difference(saved, self.cfg) if saved is not None else None
            if diff:  # another experiment: resuming it would be refused, so do not suggest it
                raise RunFolderError(
                    f"run folder '{self.dir}' already holds a run with {diff[0]}={diff[1]!r} (you asked for "
                    f"{diff[2]!r}); pass -o Global.overwrite=true to replace it, or choose another -o Global.name")
            raise RunFolderError(
                f"run folder '{self.dir}' already holds a run; pass -o Global.resume=true to continue it, "
                f"-o Global.overwrite=true to replace it, or choose another -o Global.name")
        if holds and g["resume"]:
            saved = self.saved_config()
            if saved is not None:
                diff = config_difference(saved, self.cfg)
                if diff:
                    raise RunFolderError(f"cannot resume '{self.dir}': {diff[0]} was {diff[1]!r} and is now {diff[2]!r}; "
                                         f"resume with the run's own settings (see {self.config_path})")
            done = self.epochs_done()
            if done is not None and done > g["epochs"]:
                raise RunFolderError(f"cannot resume '{self.dir}' with Global.epochs={g['epochs']}: it has already trained "
                                     f"{done} epochs; pass -o Global.epochs={done} (or more, to extend it)")

    def epochs_done(self) -> int | None:
        return ckpt.epochs_done(self.ckpt_dir)

    # ---- writing (owner only)
    def lock(self) -> FolderLock:
        """Take ownership (creates the folder); a second process gets a one-line 'in use by PID …' error."""
        self._lock = FolderLock(self.dir).acquire()
        return self._lock

    def release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def clear(self) -> None:
        """Remove what the package wrote here, and only that: never a user's file that shares the folder."""
        try:
            for f in self.FILES:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(os.path.join(self.dir, f))
            for sub, owned in ((self.ckpt_dir, ckpt.is_package_file), (self.vdl_dir, _is_vdl)):
                for name in self._package_files(sub, owned):
                    os.remove(os.path.join(sub, name))
                with contextlib.suppress(OSError):  # only if now empty
                    os.rmdir(sub)
        except OSError as e:
            raise fs_error(e, self.dir) from None

    def remove_if_empty(self) -> None:
        """Undo the creation of a folder that never received a run (a failure before the first checkpoint)."""
        self.clear()
        with contextlib.suppress(OSError):
            os.remove(os.path.join(self.dir, ".lock"))
            os.rmdir(self.dir)

    @staticmethod
    def _package_files(folder: str, owned: Any) -> list[str]:
        if not os.path.isdir(folder):
            return []
        return [n for n in os.listdir(folder) if owned(n)]


def _is_vdl(name: str) -> bool:
    return name.startswith("vdlrecords.") and name.endswith(".log")


def resolve_run_config(config: str, overrides: list[str]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The config a tool acting on a run should use, and the run's ``metrics.json`` (None if unfinished).

    ``config`` is a run folder or a YAML config; a YAML names its run by ``Global.output_dir``/``name``.
    When the run folder holds a recorded ``config.yml``, that is the base — the user's ``-o`` overrides go
    on top of it — so a run trained with ``-o Data.name=FashionMNIST -o Data.root=...`` is evaluated and
    exported as it was trained, without repeating every override.
    """
    from .config import apply_overrides, load_config, validate

    if os.path.isdir(config):
        path = os.path.join(config, "config.yml")
        if not os.path.isfile(path):
            raise RunFolderError(f"'{config}' is a folder without config.yml; pass a run folder (e.g. output/lenet) "
                                 f"or a YAML config")
        where = {"Global": {"output_dir": os.path.dirname(os.path.normpath(config)) or ".",
                            "name": os.path.basename(os.path.normpath(config))}}
        user = None
    else:
        user = load_config(config, overrides)
        where = {"Global": {"output_dir": user["Global"]["output_dir"], "name": user["Global"]["name"]}}
    rf = RunFolder(where)
    if not os.path.isfile(rf.config_path):
        if user is None:
            raise RunFolderError(f"'{rf.dir}' holds no run config")
        return user, None
    saved = rf.saved_config()  # validated: a damaged file is a one-line error
    raw = apply_overrides({s: dict(v) for s, v in saved.items()}, overrides)
    for k in ("output_dir", "name"):
        raw["Global"][k] = where["Global"][k]
    cfg = validate(raw)
    metrics = None
    if os.path.isfile(rf.metrics_path):
        from .files import read_json

        metrics = read_json(rf.metrics_path, "run metrics")
    return cfg, metrics


def check_same_data(cfg: dict[str, Any], metrics: dict[str, Any] | None, fingerprint: str, allow: bool) -> None:
    """Refuse to evaluate a run on data other than its own test set unless asked for (``allow``)."""
    if metrics is None or allow:
        return
    if metrics.get("dataset") not in (None, cfg["Data"]["name"]):
        raise RunFolderError(f"the run was trained on {metrics['dataset']}, not {cfg['Data']['name']}; to evaluate it on "
                             f"other data on purpose, pass --other-data")
    want = metrics.get("test_fingerprint")
    if want and want != fingerprint:
        raise RunFolderError(f"the test files under Data.root={cfg['Data']['root']!r} are not the test set this run "
                             f"was evaluated on ({metrics['dataset']}, {metrics.get('test_samples')} images); "
                             f"point Data.root at the run's data, or pass --other-data to evaluate on these on purpose")
