"""Studies: the same experiment over models × seeds, with statistics, robustness and a report.

A study config is a normal config (the shared settings) plus a ``Study`` section listing models,
each with its own overrides. Every run goes through :func:`paddle_lenet.engine.train` into
``<output_dir>/<study>/runs/<label>/seed_<s>/``; finished runs are skipped and partial ones resumed,
so re-running a study continues it.
"""

from __future__ import annotations

import copy
import json
import os
import platform
import re
import signal
import subprocess
import sys
import time
from itertools import combinations
from typing import Any

from .config import apply_overrides, defaults, read_yaml, validate
from .errors import ConfigError


def _seeds(spec: int | list) -> list[int]:
    if isinstance(spec, int):
        if spec < 1:
            raise ConfigError(f"Study.seeds must be >= 1, got {spec}")
        return list(range(spec))
    if not spec or not all(isinstance(s, int) and not isinstance(s, bool) for s in spec):
        raise ConfigError(f"Study.seeds must be a count or a list of integers, got {spec!r}")
    return list(spec)


def load_study(path: str, overrides: list[str]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Resolve a study config into its settings and one validated config per (model, seed)."""
    raw = apply_overrides(read_yaml(path), overrides)
    base = validate(raw)
    st = base["Study"]
    st["name"] = st["name"] or os.path.splitext(os.path.basename(path))[0]
    if not st["models"]:
        raise ConfigError("Study.models is empty; list models as - {label: NAME, overrides: {Arch.name: NAME}}")
    labels = []
    jobs = []
    seeds = _seeds(st["seeds"])
    root = os.path.join(base["Global"]["output_dir"], st["name"])
    if st["workers"] < 0:
        raise ConfigError(f"Study.workers must be >= 0 (0: one per CPU core), got {st['workers']}")
    from .ops import cpu_cores

    st["workers"] = min(st["workers"] or cpu_cores(), len(seeds) * len(st["models"]))
    for i, m in enumerate(st["models"]):
        if not isinstance(m, dict) or not isinstance(m.get("label", ""), str) or set(m) - {"label", "overrides"}:
            raise ConfigError(f"Study.models[{i}] must be a mapping with 'label' and 'overrides', got {m!r}")
        ov = m.get("overrides") or {}
        if not isinstance(ov, dict):
            raise ConfigError(f"Study.models[{i}].overrides must map Section.key to a value, got {ov!r}")
        label = m.get("label") or ov.get("Arch.name")
        if not label or not re.fullmatch(r"[A-Za-z0-9_.+-]+", label):
            raise ConfigError(f"Study.models[{i}] needs a label of letters, digits, '_', '-', '.', '+', got {label!r}")
        if label in labels:
            raise ConfigError(f"Study.models: label '{label}' appears twice; labels name the run folders")
        labels.append(label)
        model_raw = copy.deepcopy(raw)
        model_raw.pop("Study", None)
        for key, value in ov.items():
            if not isinstance(key, str) or key.count(".") != 1:
                raise ConfigError(f"Study.models[{i}] override key {key!r} must be Section.key")
            section, k = key.split(".")
            model_raw.setdefault(section, {})[k] = value
        from .models import get_entry

        get_entry(validate(model_raw)["Arch"]["name"])  # an unknown model fails before any run starts
        for seed in seeds:
            cfg = validate(model_raw)
            cfg["Study"] = defaults()["Study"]
            cfg["Global"].update(seed=seed, output_dir=os.path.join(root, "runs", label), name=f"seed_{seed}",
                                 print_every=0, overwrite=False, resume=False)
            if not cfg["Global"]["kernel_threads"]:  # share the cores between the workers, never oversubscribe
                cfg["Global"]["kernel_threads"] = max(1, cpu_cores() // st["workers"])
            jobs.append({"label": label, "seed": seed, "cfg": cfg})
    pairs = st["compare"] or [list(p) for p in combinations(labels, 2)]
    for p in pairs:
        if not (isinstance(p, list) and len(p) == 2 and all(x in labels for x in p)):
            raise ConfigError(f"Study.compare entry {p!r} must be a pair of model labels from {labels}")
    st["compare"] = pairs
    st["seeds"] = seeds
    st["root"] = root
    return base, jobs


def run_job(job: dict[str, Any], shifts: list[int]) -> dict[str, Any]:
    """Train (or resume, or skip) one run and measure its shift robustness."""
    from .cli import quiet_paddle

    quiet_paddle()
    from .engine import shift_accuracy, train

    cfg = job["cfg"]
    folder = os.path.join(cfg["Global"]["output_dir"], cfg["Global"]["name"])
    skipped = os.path.exists(os.path.join(folder, "metrics.json"))
    if not skipped:
        cfg = copy.deepcopy(cfg)
        cfg["Global"]["resume"] = os.path.isdir(folder)
        train(cfg, quiet=True, prefix=f"[{job['label']} seed {job['seed']}] ")
    spath = os.path.join(folder, "shift.json")
    if not os.path.exists(spath):
        shift = shift_accuracy(cfg, shifts)
        with open(spath + ".tmp", "w", encoding="utf-8") as f:
            json.dump(shift, f)
        os.replace(spath + ".tmp", spath)
    return _result(job, skipped)


def _run_parallel(jobs: list[dict[str, Any]], shifts: list[int], workers: int, done: Any) -> None:
    """Each job in its own ``python -m paddle_lenet.study`` process, ``workers`` at a time.

    Children run in their own session so that a terminal's Ctrl-C reaches only this parent, which then
    passes one SIGTERM on to each running child: its run checkpoints at the next step and exits, and no new
    run starts. The study exits 130; running it again continues where it stopped.
    """
    from .errors import TrainingStopped

    pending, running = list(jobs), {}
    stop: list[int] = []
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [os.path.dirname(os.path.dirname(os.path.abspath(__file__))), os.environ.get("PYTHONPATH", "")]))
    old = {s: signal.signal(s, lambda signum, frame: stop.append(signum)) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        while (pending or running) and not stop:
            while pending and len(running) < workers:
                job = pending.pop(0)
                cmd = [sys.executable, "-m", "paddle_lenet.study", json.dumps({"job": job, "shifts": shifts})]
                running[subprocess.Popen(cmd, env=env, start_new_session=True)] = job
            time.sleep(0.1)
            for proc, job in list(running.items()):
                if proc.poll() is None:
                    continue
                del running[proc]
                if proc.returncode != 0:
                    stop.append(0)
                    failed = f"{job['label']} seed {job['seed']} exited {proc.returncode} (its message is above)"
                    break
                done(_result(job, skipped=False))
        for proc in running:
            proc.send_signal(signal.SIGTERM)
        for proc in running:
            proc.wait()
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    if stop and stop[0] == 0:
        raise TrainingStopped(f"study stopped: run {failed}; fix it and run the same command again", 1)
    if stop:
        raise TrainingStopped("study interrupted; finished runs are kept and running ones checkpointed; "
                              "run the same command again to continue", 130)


def _result(job: dict[str, Any], skipped: bool) -> dict[str, Any]:
    cfg = job["cfg"]
    folder = os.path.join(cfg["Global"]["output_dir"], cfg["Global"]["name"])
    with open(os.path.join(folder, "metrics.json"), encoding="utf-8") as f:
        metrics = json.load(f)
    with open(os.path.join(folder, "shift.json"), encoding="utf-8") as f:
        shift = json.load(f)
    return {"label": job["label"], "seed": job["seed"], "metrics": metrics, "shift_acc": shift, "skipped": skipped}


def run_study(path: str, overrides: list[str]) -> dict[str, Any]:
    """Run every (model, seed) of a study, then write summary.json, report.md and figures."""
    base, jobs = load_study(path, overrides)
    st = base["Study"]
    t0 = time.time()
    shifts = [int(k) for k in st["shifts"]]
    print(f"study {st['name']}: {len(st['models'])} models × {len(st['seeds'])} seeds = {len(jobs)} runs, "
          f"{st['workers']} worker(s) -> {st['root']}", flush=True)
    results = []

    def done(r: dict[str, Any]) -> None:
        results.append(r)
        m = r["metrics"]
        state = "skipped (done)" if r["skipped"] else f"{m['train_seconds']:.0f}s"
        print(f"[{len(results)}/{len(jobs)}] {r['label']} seed {r['seed']}: acc_top1 {m['acc_top1']:.4f} "
              f"shift4 {r['shift_acc'].get(str(max(shifts)), float('nan')):.4f} {state}", flush=True)

    todo = []
    for job in jobs:  # finished runs are read back, not re-run: a study resumes where it stopped
        folder = os.path.join(job["cfg"]["Global"]["output_dir"], job["cfg"]["Global"]["name"])
        if all(os.path.exists(os.path.join(folder, f)) for f in ("metrics.json", "shift.json")):
            done(_result(job, skipped=True))
        else:
            todo.append(job)
    try:
        if st["workers"] == 1:
            for job in todo:
                done(run_job(job, shifts))
        else:
            _run_parallel(todo, shifts, st["workers"], done)
    finally:  # a study resumed after Ctrl-C reports the wall time of all its sessions, not just the last
        wall = _add_wall_seconds(st["root"], time.time() - t0)
    from .report import write_study_report

    summary = summarize(base, results, wall)
    write_study_report(summary, st["root"])
    return summary


def _add_wall_seconds(root: str, seconds: float) -> float:
    """Accumulate the study's wall time across invocations in ``<root>/wall_seconds.json``."""
    path = os.path.join(root, "wall_seconds.json")
    total = seconds
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            total += float(json.load(f)["wall_seconds"])
    os.makedirs(root, exist_ok=True)
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        json.dump({"wall_seconds": round(total, 1)}, f)
    os.replace(path + ".tmp", path)
    return total


def summarize(base: dict[str, Any], results: list[dict[str, Any]], wall: float) -> dict[str, Any]:
    from .stats import in_words, mean_std, permutation_p, welch

    st = base["Study"]
    models: dict[str, Any] = {}
    labels = list(dict.fromkeys(r["label"] for r in results))
    for label in labels:
        rs = sorted((r for r in results if r["label"] == label), key=lambda r: r["seed"])
        ms = [r["metrics"] for r in rs]
        entry: dict[str, Any] = {"model": ms[0]["model"], "params": ms[0]["params"], "flops": ms[0]["flops"],
                                 "runs": len(rs), "seeds": [r["seed"] for r in rs]}
        for key in ("acc_top1", "acc_top2", "loss", "train_seconds"):
            mean, std = mean_std([m[key] for m in ms])
            entry[f"{key}_mean"], entry[f"{key}_std"] = mean, std
        entry["acc_top1_runs"] = [m["acc_top1"] for m in ms]
        entry["shift_acc"] = {k: mean_std([r["shift_acc"][k] for r in rs])[0] for k in rs[0]["shift_acc"]}
        epochs = [h["epoch"] for h in ms[0].get("history", [])]
        curve = [[h["acc_top1"] for h in m.get("history", [])] for m in ms]
        if epochs and all(len(c) == len(epochs) for c in curve):
            entry["curve"] = {"epoch": epochs, "acc_top1_mean": [mean_std(col)[0] for col in zip(*curve, strict=True)],
                              "acc_top1_std": [mean_std(col)[1] for col in zip(*curve, strict=True)]}
        models[label] = entry
    comparisons = []
    for a, b in st["compare"]:
        if a not in models or b not in models:
            continue
        xa, xb = models[a]["acc_top1_runs"], models[b]["acc_top1_runs"]
        w = welch(xa, xb)
        comparisons.append({"a": a, "b": b, "metric": "acc_top1", "diff": w["diff"], "ci95": w["ci95"],
                            "p_value": w["p_value"], "test": "Welch's t", "permutation_p": permutation_p(xa, xb),
                            "verdict": in_words(w["p_value"])})
    g, d = base["Global"], base["Data"]
    return {"study": st["name"], "study_root": st["root"], "dataset": d["name"], "train_limit": d["train_limit"],
            "epochs": g["epochs"],
            "seeds": st["seeds"], "models": models, "comparisons": comparisons, "paper": st["paper"],
            "wall_seconds": round(wall, 1),
            "machine": f"{platform.machine()} {platform.system()}, {os.cpu_count()} CPU cores, "
                       f"{st['workers']} worker(s)"}


def _worker_main(argv: list[str] | None = None) -> int:
    """``python -m paddle_lenet.study JOB_JSON``: one run of a parallel study (see :func:`_run_parallel`)."""
    spec = json.loads((argv or sys.argv[1:])[0])
    run_job(spec["job"], spec["shifts"])
    return 0


if __name__ == "__main__":
    from .cli import run

    run(_worker_main)
