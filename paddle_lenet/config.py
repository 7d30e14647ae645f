"""Experiment configuration: PaddleClas-style YAML sections, ``-o`` overrides, strict validation.

Every valid key and its type lives in :data:`SCHEMA`; a config may only set keys listed there, so a
typo (``Global.epochz``) is caught before anything runs, with the closest valid key suggested.
Override values are parsed as YAML (``yaml.safe_load``), never ``eval()``.
"""

from __future__ import annotations

import copy
import difflib
import os
from dataclasses import dataclass
from typing import Any

import yaml

from .errors import ConfigError


@dataclass(frozen=True)
class Key:
    """One config entry: its default, accepted type(s), and optional fixed choices."""

    default: Any
    types: tuple[type, ...]
    choices: tuple[Any, ...] | None = None
    nullable: bool = False
    help: str = ""


def _k(default: Any, *types: type, choices: tuple | None = None, nullable: bool = False, help: str = "") -> Key:
    return Key(default, types or (type(default),), choices, nullable, help)


SCHEMA: dict[str, dict[str, Key]] = {
    "Global": {
        "name": _k("lenet", str, help="run name; the run folder is <output_dir>/<name>"),
        "output_dir": _k("output", str, help="where run folders go"),
        "epochs": _k(10, int, help="training epochs"),
        "seed": _k(0, int, help="drives weight init, data order and dropout/stochastic layers"),
        "device": _k("auto", str, choices=("auto", "cpu", "gpu"), help="auto = GPU when paddle has CUDA and one is visible"),
        "checkpoint": _k(None, str, nullable=True, help="weights for eval/export; default: the run's final checkpoint"),
        "resume": _k(False, bool, help="continue the run in the run folder from its last checkpoint"),
        "overwrite": _k(False, bool, help="replace a finished or partial run in the run folder"),
        "threads": _k(1, int, help="CPU math threads; pinned because the thread count changes the last bits"),
        "print_every": _k(100, int, help="print a progress line every N training steps (0: once per epoch)"),
        "fast": _k(True, bool,
                   help="exact fast path: the package's CPU conv/pool kernels (paddle_lenet/ops.py), multi-tensor Adam"),
        "kernel_threads": _k(0, int, help="threads of the fast path's CPU kernels (0: all cores); results do not depend on it"),
        "eval_every": _k(1, int, help="evaluate on the test set every N epochs (the last epoch always)"),
        "vdl": _k(True, bool, help="write VisualDL logs to <run>/vdl"),
    },
    "Arch": {
        "name": _k("LeNet", str, help="a registered model name (tools/count_params.py lists them)"),
        "num_classes": _k(None, int, nullable=True, help="default: the dataset's class count"),
        "pool": _k(None, str, nullable=True,
                   choices=("max", "avg", "lp", "mixed", "stochastic", "soft", "lip", "dpp"),
                   help="LeNet family: pooling operator (default max, as in the notebook)"),
        "pool_p": _k(None, float, int, nullable=True, help="p of power-average (lp) pooling"),
        "head": _k(None, str, nullable=True, choices=("fc", "gap"), help="LeNet family: FC stack or global-average-pooling head"),
        "dropout": _k(None, bool, nullable=True, help="All-CNN family: the paper's dropout (default on)"),
    },
    "Data": {
        "name": _k("MNIST", str, choices=("MNIST", "FashionMNIST", "Cifar10", "Cifar100")),
        "root": _k(None, str, nullable=True,
                   help="null = paddle's download cache; else a folder with the original files"),
        "batch_size": _k(64, int),
        "eval_batch_size": _k(None, int, nullable=True, help="default: batch_size"),
        "num_workers": _k(0, int, help="DataLoader worker processes (0: load in the main process)"),
        "shuffle": _k(True, bool),
        "train_limit": _k(None, int, nullable=True, help="use only the first N training images (quick runs)"),
    },
    "Optimizer": {
        "name": _k("Adam", str, choices=("Adam", "SGD", "Momentum")),
        "learning_rate": _k(0.001, float, int),
        "momentum": _k(0.9, float, int, help="Momentum only"),
        "weight_decay": _k(0.0, float, int, help="L2 decay"),
        "milestones": _k([], list, help="epochs at which the learning rate is multiplied by gamma"),
        "gamma": _k(0.1, float, int),
    },
    "Metric": {
        "topk": _k([1, 2], list),
    },
    "Study": {
        "name": _k(None, str, nullable=True, help="study folder name (default: the config file's stem)"),
        "seeds": _k(5, int, list, help="a count (seeds 0..N-1) or an explicit list"),
        "workers": _k(0, int, help="runs trained in parallel processes (0: one per CPU core)"),
        "models": _k([], list, help="list of {label, overrides} entries"),
        "shifts": _k([0, 1, 2, 3, 4], list, help="pixel shifts for the translation-robustness test"),
        "compare": _k([], list, help="pairs [a, b] to test; default: every pair"),
        "paper": _k(None, dict, nullable=True, help="published numbers to print beside ours"),
    },
}


def defaults() -> dict[str, dict[str, Any]]:
    return {sec: {k: copy.deepcopy(v.default) for k, v in keys.items()} for sec, keys in SCHEMA.items()}


def _suggest(name: str, options: list[str]) -> str:
    close = difflib.get_close_matches(name, options, n=1, cutoff=0.5)
    return f"did you mean '{close[0]}'?" if close else f"valid: {', '.join(options)}"


def _check_value(section: str, key: str, value: Any) -> Any:
    spec = SCHEMA[section][key]
    where = f"{section}.{key}"
    if value is None:
        if spec.nullable:
            return None
        raise ConfigError(f"{where} must not be null; default is {spec.default!r}")
    if float in spec.types and isinstance(value, str):
        try:  # YAML 1.1 reads '1e-3' as a string; accept it as the number the user meant
            value = float(value)
        except ValueError:
            pass
    ok = isinstance(value, spec.types) and not (isinstance(value, bool) and bool not in spec.types)
    if not ok:
        want = " or ".join(t.__name__ for t in spec.types)
        raise ConfigError(
            f"{where} must be {want}, got {value!r} ({type(value).__name__}); e.g. -o {where}={spec.default!r}"
        )
    if isinstance(value, int) and not isinstance(value, bool) and float in spec.types:
        value = float(value)
    if spec.choices and value not in spec.choices:
        raise ConfigError(f"{where}={value!r} is not valid; {_suggest(str(value), list(spec.choices))}")
    return value


def validate(cfg: dict[str, Any]) -> dict[str, Any]:
    """Fill defaults, reject unknown sections/keys, and type-check every value."""
    if not isinstance(cfg, dict):
        raise ConfigError("config must be a mapping of sections (Global, Arch, Data, Optimizer, Metric)")
    out = defaults()
    for section, values in cfg.items():
        if section not in SCHEMA:
            raise ConfigError(f"unknown config section '{section}'; {_suggest(str(section), list(SCHEMA))}")
        if values is None:
            continue
        if not isinstance(values, dict):
            raise ConfigError(f"config section '{section}' must be a mapping of keys, got {type(values).__name__}")
        for key, value in values.items():
            if key not in SCHEMA[section]:
                keys = [f"{section}.{k}" for k in SCHEMA[section]]
                raise ConfigError(f"unknown config key '{section}.{key}'; {_suggest(f'{section}.{key}', keys)}")
            out[section][key] = _check_value(section, key, value)
    g, d = out["Global"], out["Data"]
    for where, v, lo in (("Global.epochs", g["epochs"], 1), ("Data.batch_size", d["batch_size"], 1),
                         ("Global.threads", g["threads"], 1), ("Data.num_workers", d["num_workers"], 0),
                         ("Global.eval_every", g["eval_every"], 1), ("Global.print_every", g["print_every"], 0),
                         ("Global.kernel_threads", g["kernel_threads"], 0)):
        if v < lo:
            raise ConfigError(f"{where} must be >= {lo}, got {v}")
    topk = out["Metric"]["topk"]
    if not topk or not all(isinstance(k, int) and not isinstance(k, bool) and k >= 1 for k in topk):
        raise ConfigError(f"Metric.topk must be a list of positive integers, got {topk!r}; e.g. -o Metric.topk=[1,2]")
    if out["Optimizer"]["learning_rate"] <= 0:
        raise ConfigError("Optimizer.learning_rate must be > 0")
    if not all(isinstance(m, int) and not isinstance(m, bool) for m in out["Optimizer"]["milestones"]):
        raise ConfigError("Optimizer.milestones must be a list of epoch numbers, e.g. [200, 250, 300]")
    if g["resume"] and g["overwrite"]:
        raise ConfigError("Global.resume and Global.overwrite contradict each other; set only one")
    return out


def parse_override(text: str) -> tuple[str, str, Any]:
    """``'Global.epochs=3'`` → ``('Global', 'epochs', 3)``; values are YAML scalars or lists."""
    if "=" not in text:
        raise ConfigError(f"malformed override '{text}'; write -o Section.key=value, e.g. -o Global.epochs=3")
    path, raw = text.split("=", 1)
    parts = path.strip().split(".")
    if len(parts) != 2 or not all(parts):
        raise ConfigError(f"malformed override '{text}'; the key must be Section.key, e.g. -o Global.epochs=3")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as e:
        raise ConfigError(f"override '{text}': value is not valid YAML ({str(e).splitlines()[0]})") from None
    return parts[0], parts[1], value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    raw = copy.deepcopy(raw)
    for text in overrides:
        section, key, value = parse_override(text)
        raw.setdefault(section, {})
        if raw[section] is None:
            raw[section] = {}
        raw[section][key] = value
    return raw


def read_yaml(path: str) -> dict[str, Any]:
    if not os.path.isfile(path):
        raise ConfigError(f"config file '{path}' not found; pass an existing YAML, e.g. -c configs/lenet.yml")
    try:
        with open(path, encoding="utf-8") as f:
            raw = yaml.safe_load(f)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"config file '{path}' is not valid YAML{at}: {problem}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read config file '{path}': {e}") from None
    return raw or {}


def load_config(path: str, overrides: list[str] | None = None) -> dict[str, Any]:
    """Read ``path``, apply ``-o`` overrides, validate; returns a fully resolved config."""
    return validate(apply_overrides(read_yaml(path), overrides or []))


def dump(cfg: dict[str, Any]) -> str:
    """YAML of a resolved config; the Study section is left out of plain runs that do not use it."""
    if cfg.get("Study") == defaults()["Study"]:
        cfg = {k: v for k, v in cfg.items() if k != "Study"}
    return yaml.safe_dump(cfg, sort_keys=False, default_flow_style=None)


def run_dir(cfg: dict[str, Any]) -> str:
    return os.path.join(cfg["Global"]["output_dir"], cfg["Global"]["name"])
