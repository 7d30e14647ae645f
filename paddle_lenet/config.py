"""Experiment configuration: PaddleClas-style YAML sections, ``-o`` overrides, strict validation.

Every valid key and its type lives in :data:`SCHEMA`; a config may only set keys listed there, so a
typo (``Global.epochz``) is caught before anything runs, with the closest valid key suggested.
Override values are parsed as YAML (``yaml.safe_load``), never ``eval()``.
"""

from __future__ import annotations

import copy
import difflib
import math
import os
from dataclasses import dataclass
from typing import Any

import yaml

from .errors import ConfigError


INT32 = 2**31 - 1

# the downsampling operators of seed 003 that ``Arch.pool`` names (models/pooling.py builds them)
POOLS = ("max", "avg", "lp", "mixed", "stochastic", "soft", "lip", "dpp")


@dataclass(frozen=True)
class Key:
    """One config entry: its default, accepted type(s), the range it must lie in, and help text.

    The range lives here, beside the default, so the README table, the error messages and the check are
    one fact. ``lo``/``hi`` bound numbers (``lo_open``: strictly above ``lo``); for lists they bound every
    item, whose type is ``item``; ``unique`` forbids repeats.
    """

    default: Any
    types: tuple[type, ...]
    choices: tuple[Any, ...] | None = None
    nullable: bool = False
    help: str = ""
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    item: type | None = None
    unique: bool = False

    def range_text(self) -> str:
        if self.choices:
            return ", ".join(f"`{c}`" for c in self.choices)
        if self.lo is None and self.hi is None:
            return ""
        lo = "" if self.lo is None else f"{_num(self.lo)}"
        hi = "" if self.hi is None else f"{_num(self.hi)}"
        if self.lo is not None and self.hi is not None:
            text = f"{'(' if self.lo_open else '['}{lo}, {hi}{')' if self.hi_open else ']'}"
        elif self.lo is not None:
            text = f"{'>' if self.lo_open else '≥'} {lo}"
        else:
            text = f"{'<' if self.hi_open else '≤'} {hi}"
        return ("each " if self.item else "") + text + (", no repeats" if self.unique else "")

    def in_range(self, v: float) -> bool:
        if self.lo is not None and (v < self.lo or (self.lo_open and v == self.lo)):
            return False
        return not (self.hi is not None and (v > self.hi or (self.hi_open and v == self.hi)))


def _num(v: float) -> str:
    if v == INT32:
        return "2³¹−1"
    return f"{v:g}" if isinstance(v, float) else f"{v:,}"


def _k(default: Any, *types: type, choices: tuple | None = None, nullable: bool = False, help: str = "",
       lo: float | None = None, hi: float | None = None, lo_open: bool = False, hi_open: bool = False,
       item: type | None = None, unique: bool = False) -> Key:
    return Key(default, types or (type(default),), choices, nullable, help, lo, hi, lo_open, hi_open, item, unique)


SCHEMA: dict[str, dict[str, Key]] = {
    "Global": {
        "name": _k("lenet", str, help="run name (a plain name, no '/' or '..'); the run folder is <output_dir>/<name>"),
        "output_dir": _k("output", str, help="where run folders go"),
        "epochs": _k(10, int, lo=1, hi=100_000, help="training epochs"),
        "seed": _k(0, int, lo=0, hi=INT32, help="drives weight init, data order and dropout/stochastic layers"),
        "device": _k("auto", str, choices=("auto", "cpu", "gpu"), help="auto = GPU when paddle has CUDA and one is visible"),
        "checkpoint": _k(None, str, nullable=True, help="weights for eval/export; default: the run's final checkpoint"),
        "resume": _k(False, bool, help="continue the run in the run folder from its last checkpoint"),
        "overwrite": _k(False, bool, help="replace a finished or partial run in the run folder"),
        "threads": _k(1, int, lo=1, hi=256, help="CPU math threads; pinned because the thread count changes the last bits"),
        "print_every": _k(100, int, lo=0, hi=INT32, help="print a progress line every N training steps (0: once per epoch)"),
        "fast": _k(True, bool,
                   help="exact fast path: the package's CPU conv/pool kernels (paddle_lenet/ops.py), multi-tensor Adam"),
        "kernel_threads": _k(0, int, lo=0, hi=256,
                             help="threads of the fast path's CPU kernels (0: all cores); results do not depend on it"),
        "eval_every": _k(1, int, lo=1, hi=100_000, help="evaluate on the test set every N epochs (the last epoch always)"),
        "vdl": _k(True, bool, help="write VisualDL logs to <run>/vdl"),
    },
    "Arch": {
        "name": _k("LeNet", str, help="a registered model name (tools/count_params.py lists them)"),
        "num_classes": _k(None, int, nullable=True, lo=1, hi=100_000,
                          help="default: the dataset's class count; never fewer than the dataset's labels"),
        "pool": _k(None, str, nullable=True,
                   choices=POOLS,
                   help="LeNet family: pooling operator (default max, as in the notebook)"),
        "pool_p": _k(None, float, int, nullable=True, lo=0, hi=64, lo_open=True, help="p of power-average (lp) pooling"),
        "head": _k(None, str, nullable=True, choices=("fc", "gap"), help="LeNet family: FC stack or global-average-pooling head"),
        "mixed_test": _k(None, str, nullable=True, choices=("expectation", "max", "avg"),
                         help="LeNet with Arch.pool=mixed: the inference rule (default expectation, 0.5·max + 0.5·avg; "
                              "public implementations' rule gives max or avg)"),
        "dropout": _k(None, bool, nullable=True, help="All-CNN family: the paper's dropout (default on)"),
    },
    "Data": {
        "name": _k("MNIST", str, choices=("MNIST", "MNIST5k", "FashionMNIST", "Cifar10", "Cifar100"),
                   help="MNIST5k: 5,000 real MNIST digits shipped with the package (offline, a subset)"),
        "root": _k(None, str, nullable=True,
                   help="null = paddle's download cache; else a folder with the original files"),
        "batch_size": _k(64, int, lo=1, hi=65_536),
        "eval_batch_size": _k(None, int, nullable=True, lo=1, hi=65_536, help="default: batch_size"),
        "num_workers": _k(0, int, lo=0, hi=64, help="DataLoader worker processes (0: load in the main process)"),
        "shuffle": _k(True, bool),
        "train_limit": _k(None, int, nullable=True, lo=1, hi=INT32,
                          help="use only the first N training images (quick runs); at most the split's size"),
    },
    "Optimizer": {
        "name": _k("Adam", str, choices=("Adam", "SGD", "Momentum")),
        "learning_rate": _k(0.001, float, int, lo=0, lo_open=True),
        "momentum": _k(0.9, float, int, lo=0, hi=1, hi_open=True, help="Momentum only"),
        "weight_decay": _k(0.0, float, int, lo=0, hi=1, help="L2 decay"),
        "milestones": _k([], list, item=int, lo=1, hi=100_000, unique=True,
                         help="epochs at which the learning rate is multiplied by gamma; increasing, ≤ Global.epochs"),
        "gamma": _k(0.1, float, int, lo=0, hi=1, lo_open=True, hi_open=True,
                   help="learning-rate factor at each milestone (Paddle's MultiStepDecay needs it below 1)"),
    },
    "Metric": {
        "topk": _k([1, 2], list, item=int, lo=1, hi=100_000, unique=True, help="each k ≤ the class count"),
    },
    "Study": {
        "name": _k(None, str, nullable=True, help="study folder name (default: the config file's stem)"),
        "seeds": _k(5, int, list, lo=1, hi=10_000, help="a count N (seeds 0..N-1) or an explicit list of distinct seeds"),
        "workers": _k(0, int, lo=0, hi=1024, help="runs trained in parallel processes (0: one per CPU core, or per GPU)"),
        "workers_per_gpu": _k(1, int, lo=1, hi=64, help="on GPU machines: runs sharing one GPU"),
        "models": _k([], list, help="list of {label, overrides} entries"),
        "shifts": _k([0, 1, 2, 3, 4], list, item=int, lo=0, hi=31, unique=True,
                     help="pixel shifts for the translation-robustness test; each smaller than the image"),
        "compare": _k([], list, help="pairs [a, b] to test; default: every pair"),
        "paper": _k(None, dict, nullable=True, help="published numbers to print beside ours"),
        "equivalence_margin": _k(0.005, float, lo=0, lo_open=True, hi=1,
                                 help="acc_top1 difference (a fraction: 0.005 = 0.5 points) within which two models "
                                      "count as equivalent (two one-sided tests, Holm over the family); stated "
                                      "before the runs"),
        "records": _k(None, str, nullable=True,
                      help="folder of the finished runs' records ({study}: the study's name); commit it, e.g. "
                           "docs/results/{study}/runs, and the study reports and continues on any machine"),
        "alpha": _k(0.05, float, lo=0, lo_open=True, hi=0.5, help="family-wise error rate of the comparisons"),
    },
}


def defaults() -> dict[str, dict[str, Any]]:
    return {sec: {k: copy.deepcopy(v.default) for k, v in keys.items()} for sec, keys in SCHEMA.items()}


def _suggest(name: str, options: list[str]) -> str:
    close = difflib.get_close_matches(name, options, n=1, cutoff=0.5)
    return f"did you mean '{close[0]}'?" if close else f"valid: {', '.join(options)}"


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


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
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{where} must be a finite number, got {value!r}")
    if _is_int(value) and float in spec.types:
        value = float(value)
    if spec.choices and value not in spec.choices:
        raise ConfigError(f"{where}={value!r} is not valid; {_suggest(str(value), list(spec.choices))}")
    if isinstance(value, list) and spec.item is not None:
        if not all(_is_int(v) for v in value):
            raise ConfigError(f"{where} must be a list of integers, got {value!r}; e.g. -o {where}={spec.default!r}")
        bad = [v for v in value if not spec.in_range(v)]
        if bad:
            raise ConfigError(f"{where}={value!r}: {bad[0]} is out of range; {where} must be {spec.range_text()}")
        if spec.unique and len(set(value)) != len(value):
            raise ConfigError(f"{where}={value!r} repeats a value; each may appear once")
    elif isinstance(value, (int, float)) and not isinstance(value, bool) and not spec.in_range(value):
        raise ConfigError(f"{where}={value!r} is out of range; it must be {spec.range_text()}")
    return value


def validate(cfg: Any) -> dict[str, Any]:
    """Fill defaults, reject unknown sections/keys, check every value's type and range and their relations.

    This is the one validation pass: it runs before a model is built, data opened or a file written.
    """
    if not isinstance(cfg, dict):
        raise ConfigError(f"a config must be a mapping of sections (Global, Arch, Data, Optimizer, Metric), "
                          f"got a YAML {type(cfg).__name__}")
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
    _check_relations(out)
    return out


def _check_relations(cfg: dict[str, Any]) -> None:
    """Rules that tie values together (and to the dataset), so a run never trains on a contradiction."""
    from .files import check_name

    g, d, o, a = cfg["Global"], cfg["Data"], cfg["Optimizer"], cfg["Arch"]
    check_name(g["name"], "Global.name")
    if not g["output_dir"].strip():
        raise ConfigError("Global.output_dir must not be empty; e.g. -o Global.output_dir=output")
    if g["resume"] and g["overwrite"]:
        raise ConfigError("Global.resume and Global.overwrite contradict each other; set only one")
    if not cfg["Metric"]["topk"]:
        raise ConfigError("Metric.topk is empty; list at least one k, e.g. -o Metric.topk=[1,2]")
    ms = o["milestones"]
    if ms != sorted(ms):
        raise ConfigError(f"Optimizer.milestones={ms} must be increasing, e.g. [5, 8]")
    if ms and ms[-1] > g["epochs"]:
        raise ConfigError(f"Optimizer.milestones={ms}: {ms[-1]} is after the last epoch (Global.epochs={g['epochs']}); "
                          f"for a shorter run also pass -o Optimizer.milestones=[]")
    info = dataset_info(d["name"])
    if d["name"] == "MNIST5k" and d["root"] is not None:
        raise ConfigError("Data.name=MNIST5k ships with the package and reads no Data.root; leave Data.root null, "
                          "or use Data.name=MNIST with your own files")
    classes = a["num_classes"] or info["num_classes"]
    if a["num_classes"] is not None and a["num_classes"] < info["num_classes"]:
        raise ConfigError(f"Arch.num_classes={a['num_classes']} is fewer than {d['name']}'s {info['num_classes']} "
                          f"labels; leave it null to use the dataset's count")
    big = [k for k in cfg["Metric"]["topk"] if k > classes]
    if big:
        raise ConfigError(f"Metric.topk={cfg['Metric']['topk']}: top-{big[0]} accuracy needs more than {classes} "
                          f"classes (it would always be 1.0); use k ≤ {classes}")
    if d["train_limit"] is not None and d["train_limit"] > info["train_size"]:
        raise ConfigError(f"Data.train_limit={d['train_limit']} is more than {d['name']}'s {info['train_size']:,} "
                          f"training images; use at most {info['train_size']} or null for all")
    size = info["shape"][1]
    big = [s for s in cfg["Study"]["shifts"] if s >= size]
    if big:
        raise ConfigError(f"Study.shifts: a shift of {big[0]} px moves a {size}×{size} image out of view; "
                          f"use shifts below {size}")
    if a["mixed_test"] is not None and a["pool"] != "mixed":
        raise ConfigError(f"Arch.mixed_test is mixed pooling's inference rule, but Arch.pool={a['pool']!r}; "
                          f"set -o Arch.pool=mixed or leave Arch.mixed_test null")
    if a["pool_p"] is not None and a["pool"] != "lp":
        raise ConfigError(f"Arch.pool_p is the p of lp pooling, but Arch.pool={a['pool']!r}; "
                          f"set -o Arch.pool=lp or leave Arch.pool_p null")


def dataset_info(name: str) -> dict[str, Any]:
    """Shape, class count and training-split size of a dataset name (no paddle import needed)."""
    sizes = {"MNIST": ((1, 28, 28), 10, 60_000), "MNIST5k": ((1, 28, 28), 10, 4_000),
             "FashionMNIST": ((1, 28, 28), 10, 60_000), "Cifar10": ((3, 32, 32), 10, 50_000),
             "Cifar100": ((3, 32, 32), 100, 50_000)}
    shape, classes, train = sizes[name]
    return {"shape": shape, "num_classes": classes, "train_size": train}


def parse_override(text: str) -> tuple[str, str, Any]:
    """``'Global.epochs=3'`` → ``('Global', 'epochs', 3)``; values are YAML scalars or lists."""
    if "=" not in text:
        raise ConfigError(f"malformed override '{text}'; write -o Section.key=value, e.g. -o Global.epochs=3")
    path, raw = text.split("=", 1)
    parts = path.strip().split(".")
    if len(parts) != 2 or not all(parts):
        raise ConfigError(f"malformed override '{text}'; the key must be Section.key, e.g. -o Global.epochs=3")
    key = SCHEMA.get(parts[0], {}).get(parts[1])
    if key is not None and key.types == (str,) and raw.strip() not in ("null", "~", ""):
        return parts[0], parts[1], raw  # a text value is taken as typed: a '#' or ': ' is part of a path, not YAML
    if any(ch in raw for ch in "#\n\r"):
        raise ConfigError(f"override '{text}': a '#' or line break in a value would be read as a YAML comment or a "
                          f"new line and lose text; {parts[0]}.{parts[1]} takes no such characters")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as e:
        raise ConfigError(f"override '{text}': value is not valid YAML ({str(e).splitlines()[0]})") from None
    return parts[0], parts[1], value


def apply_overrides(raw: Any, overrides: list[str]) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise ConfigError(f"a config must be a mapping of sections (Global, Arch, Data, Optimizer, Metric), "
                          f"got a YAML {type(raw).__name__}")
    raw = copy.deepcopy(raw)
    for text in overrides:
        section, key, value = parse_override(text)
        if raw.get(section) is None:
            raw[section] = {}
        if not isinstance(raw[section], dict):
            raise ConfigError(f"config section '{section}' must be a mapping of keys, got {type(raw[section]).__name__}")
        raw[section][key] = value
    return raw


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice: PyYAML would silently keep the last one."""

    def construct_mapping(self, node: Any, deep: bool = False) -> dict:
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"key '{key}' appears twice", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def read_yaml(path: str) -> Any:
    if os.path.isdir(path):
        raise ConfigError(f"config '{path}' is a folder; pass a YAML file, e.g. -c configs/lenet.yml")
    if not os.path.isfile(path):
        raise ConfigError(f"config file '{path}' not found; pass an existing YAML, e.g. -c configs/lenet.yml")
    try:
        with open(path, encoding="utf-8") as f:
            raw = yaml.load(f, Loader=_StrictLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"config file '{path}' is not valid YAML{at}: {problem}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read config file '{path}': {e}") from None
    return {} if raw is None else raw


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


def reference_table() -> str:
    """The README's configuration table, generated from :data:`SCHEMA` (a test keeps the README in step)."""
    def cell(v: Any) -> str:
        return "`" + yaml.safe_dump(v, default_flow_style=True).strip().removesuffix("...").strip() + "`"

    lines = ["| key | default | valid values | meaning |", "|---|---|---|---|"]
    for section, keys in SCHEMA.items():
        for key, spec in keys.items():
            valid = spec.range_text() or " or ".join(t.__name__ for t in spec.types)
            if spec.nullable:
                valid += " or null"
            text = spec.help.replace("<", "&lt;").replace(">", "&gt;").replace("|", "\\|")
            lines.append(f"| `{section}.{key}` | {cell(spec.default)} | {valid} | {text} |")
    return "\n".join(lines)
