"""Studies: the same experiment over models × seeds, with statistics, robustness and a report.

A study config is a normal config (the shared settings) plus a ``Study`` section listing models,
each with its own overrides. Every run goes through :func:`paddle_lenet.engine.train` into
``<output_dir>/<study>/runs/<label>/seed_<s>/``; finished runs are skipped and partial ones resumed,
so re-running a study continues it — but only runs whose recorded ``config.yml`` matches what the study
asks for now count: a run trained with other settings is refused (or re-run with ``Global.overwrite``),
never reported under the study's name. ``--shard K/N`` splits the runs over machines; ``--report`` reads
whatever has finished.
"""

from __future__ import annotations

import json
import os
import platform
import signal
import subprocess
import sys
import time
from typing import Any

import numpy as np

from .errors import ConfigError, RunFolderError
from .jobs import (  # noqa: F401  (the study's API: load_study, job_state, ... are used from here)
    PER_STUDY, RECORD_FILES, RECORD_NEUTRAL, STUDY_NEUTRAL, _folder, _read, _result, gpu_slots, job_state,
    load_study, record_path, record_state, records_dir, run_job, visible_gpus, write_record)
from .stats import holm, mde, mean_std, permutation, tost, verdict, welch


def _run_parallel(jobs: list[dict[str, Any]], shifts: list[int], slots: list[str | None], done: Any) -> None:
    """Each job in its own ``python -m paddle_lenet.jobs`` process, one per worker slot.

    A slot is a CPU share or a GPU (``CUDA_VISIBLE_DEVICES``), see :func:`gpu_slots`. Children run in their
    own session so that a terminal's Ctrl-C reaches only this parent, which then passes one SIGTERM on to
    each running child: its run checkpoints at the next step and exits, and no new run starts. The study
    exits 130; running it again continues where it stopped.
    """
    from .errors import TrainingStopped

    pending, running = list(jobs), {}
    free = list(range(len(slots)))
    stop: list[int] = []
    failed = ""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [os.path.dirname(os.path.dirname(os.path.abspath(__file__))), os.environ.get("PYTHONPATH", "")]))
    old = {s: signal.signal(s, lambda signum, frame: stop.append(signum)) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        while (pending or running) and not stop:
            while pending and free:
                job, slot = pending.pop(0), free.pop(0)
                wenv = dict(env)
                if slots[slot] is not None:
                    wenv["CUDA_VISIBLE_DEVICES"] = slots[slot]
                cmd = [sys.executable, "-m", "paddle_lenet.jobs", json.dumps({"job": job, "shifts": shifts})]
                running[subprocess.Popen(cmd, env=wenv, start_new_session=True)] = (job, slot)
            time.sleep(0.1)
            for proc, (job, slot) in list(running.items()):
                if proc.poll() is None:
                    continue
                del running[proc]
                free.append(slot)
                if proc.returncode != 0:
                    stop.append(0)
                    # a signal reached the worker alone: 130 once its handlers are in (its stops are quiet, see
                    # jobs.py), killed by it before; any other exit printed its own line
                    rc = proc.returncode
                    why = ("was stopped by a signal (exit 130)" if rc == 130 else
                           f"was killed by {signal.Signals(-rc).name}" if -rc in signal.valid_signals() else
                           f"exited {rc} (its message is above)")
                    failed = f"{job['label']} seed {job['seed']} {why}"
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
        raise TrainingStopped(f"study run {failed}; fix it and run the same command again", 1)
    if stop:
        raise TrainingStopped(f"{signal.Signals(stop[0]).name}: study interrupted; finished runs are kept and running "
                              "ones checkpointed; run the same command again to continue", 130)


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``'K/N'`` → ``(K, N)`` with 0 ≤ K < N (Slurm's 0-based array index over the array's size)."""
    if text is None:
        return None
    try:
        k, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise ConfigError(f"--shard {text!r} must be K/N, e.g. --shard 0/4 (K counts from 0)") from None
    if not (n >= 1 and 0 <= k < n):
        raise ConfigError(f"--shard {text}: need 0 <= K < N, e.g. --shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT")
    return k, n


def _here(base: dict[str, Any]) -> dict[str, Any]:
    """Where this machine would compute a run (the device: with it, each job's kernel revision) and the test set's
    fingerprint. A record made with other arithmetic or on another test set is not this study's run."""
    from .data import fingerprint, load_split
    from .engine import select_device

    g, d = base["Global"], base["Data"]
    return {"device": select_device(g["device"]),
            "fingerprint": fingerprint(load_split(d["name"], d["root"], "test"))}


def run_study(path: str, overrides: list[str], shard: tuple[int, int] | None = None,
              report_only: bool = False) -> dict[str, Any] | None:
    """Run the study's runs (all, or one shard's), then write summary.json, report.md and figures.

    A shard only trains; ``report_only`` only reads what the runs recorded and reports, naming missing runs.
    """
    base, jobs = load_study(path, overrides)
    st = base["Study"]
    t0 = time.time()
    shifts = [int(k) for k in st["shifts"]]
    mine = [j for i, j in enumerate(jobs) if shard is None or i % shard[1] == shard[0]]
    data = {} if report_only else _here(base)
    states = {id(j): job_state(j, shifts, st, data) for j in jobs}
    stale = [j for j in (jobs if report_only else mine) if states[id(j)].startswith("stale")]
    if stale and not (base["Global"]["overwrite"] and not report_only):
        j = stale[0]
        raise RunFolderError(f"{j['label']} seed {j['seed']} ({_folder(j)}) is {states[id(j)]}; its numbers would not be "
                             f"this study's. Re-run such runs with -o Global.overwrite=true, or use another Study.name")
    for j in stale:
        j["replace_stale"] = True
    where = "" if shard is None else f" (shard {shard[0]}/{shard[1]}: {len(mine)} of them)"
    devices = "GPU " + ",".join(s for s in st["slots"] if s) if any(st["slots"]) else "CPU"
    results: list[dict[str, Any]] = []

    def done(r: dict[str, Any]) -> None:
        results.append(r)
        job = next(j for j in jobs if j["label"] == r["label"] and j["seed"] == r["seed"])
        if os.path.exists(os.path.join(_folder(job), "shift.json")):
            write_record(st, job)  # a few KB of text: commit the records folder and the run travels
        m = r["metrics"]
        state = "skipped (done)" if r["skipped"] else f"{m['train_seconds']:.0f}s"
        print(f"[{len(results)}/{len(mine)}] {r['label']} seed {r['seed']}: acc_top1 {m['acc_top1']:.4f} "
              f"shift{max(shifts)} {r['shift_acc'].get(str(max(shifts)), float('nan')):.4f} {state}", flush=True)

    finished = ("done", "record")
    if report_only:
        results = [_result(j, skipped=True, st=st) for j in jobs if states[id(j)] in finished]
    else:
        print(f"study {st['name']}: {len(st['models'])} models × {len(st['seeds'])} seeds = {len(jobs)} runs{where}, "
              f"{st['workers']} worker(s) on {devices} -> {st['root']}", flush=True)
        todo = []
        for job in mine:  # finished runs are read back, not re-run: a study resumes where it stopped
            if states[id(job)] in finished:
                done(_result(job, skipped=True, st=st))
            else:
                todo.append(job)
        try:
            if st["workers"] == 1:
                for job in todo:
                    done(run_job(job, shifts))
            else:
                _run_parallel(todo, shifts, st["slots"], done)
        finally:  # a study resumed after Ctrl-C reports the wall time of all its sessions, not just the last
            _add_wall_seconds(records_dir(st), time.time() - t0, shard)  # travels with the records
        if shard is not None:
            print(f"shard {shard[0]}/{shard[1]} done; when every shard has finished: tools/study.py -c {path} --report")
            return None
        results = [_result(j, skipped=True, st=st) for j in jobs]  # in the study's order, whatever finished first
    missing = [f"{j['label']}/seed_{j['seed']}" for j in jobs if states[id(j)] not in finished and report_only]
    from .report import mixed_blas_note, write_study_report

    from .engine import model_kernels

    uses = {j["label"]: model_kernels(j["cfg"]) for j in {j["label"]: j for j in jobs}.values()}
    summary = summarize(base, results, _total_wall_seconds(records_dir(st)), missing, uses)
    write_study_report(summary, st["root"])
    if missing:
        print(f"{len(missing)} of {len(jobs)} runs are missing from the report: {', '.join(missing[:6])}"
              f"{' ...' if len(missing) > 6 else ''}", flush=True)
    note = mixed_blas_note(summary)
    if note:
        print(note, flush=True)
    return summary


def _add_wall_seconds(root: str, seconds: float, shard: tuple[int, int] | None) -> None:
    """Accumulate wall time across invocations, one file per shard (shards may run at once)."""
    from .files import makedirs, write_json

    name = "wall_seconds.json" if shard is None else f"wall_seconds.shard{shard[0]}of{shard[1]}.json"
    path = os.path.join(root, name)
    total = seconds + (float(_read(path)["wall_seconds"]) if os.path.exists(path) else 0.0)
    makedirs(root)
    write_json(path, {"wall_seconds": round(total, 1)})


def _total_wall_seconds(root: str) -> float:
    """Wall time of the study: its own sessions plus the longest shard (shards run side by side)."""
    import glob

    own = os.path.join(root, "wall_seconds.json")
    total = float(_read(own)["wall_seconds"]) if os.path.exists(own) else 0.0
    shards = [float(_read(p)["wall_seconds"]) for p in glob.glob(os.path.join(root, "wall_seconds.shard*.json"))]
    return total + (max(shards) if shards else 0.0)


def _one_arithmetic(results: list[dict[str, Any]], uses: dict[str, list[str]]) -> str | None:
    """The study's kernel revision (None: Paddle's ops), after checking that every kernel computed all the runs that
    use it with the same bits: a model whose kernels did not change keeps its runs when another kernel's bits do.
    ``uses``: the kernels of each label's model."""
    from . import ops

    recorded = {r["label"]: set() for r in results}
    for r in results:
        recorded[r["label"]].add((r["metrics"].get("arithmetic") or {}).get("kernels"))
    if len({k is None for ks in recorded.values() for k in ks}) > 1:
        raise RunFolderError("the study mixes runs computed with the package's kernels and with Paddle's ops; re-run "
                             "the runs of one kind (Global.fast)")
    revs: dict[str, set[str]] = {}
    for label, ks in recorded.items():
        for k in ks - {None}:
            for name, rev in ops.kernel_revisions(k, uses.get(label, [])).items():
                revs.setdefault(name, set()).add(rev)
    mixed = {n: sorted(v) for n, v in revs.items() if len(v) > 1}
    if mixed:
        n, v = next(iter(sorted(mixed.items())))
        raise RunFolderError(f"the study's runs were computed with different arithmetic (kernel {n} at revisions "
                             f"{', '.join(v)}); re-run the runs of the older code")
    if any(None in ks for ks in recorded.values()):
        return None
    return ops.LEGACY + "".join(f"+{n}.{v}" for n, (v,) in sorted(revs.items()) if v != ops.LEGACY)


def summarize(base: dict[str, Any], results: list[dict[str, Any]], wall: float,
              missing: list[str] | None = None, uses: dict[str, list[str]] | None = None) -> dict[str, Any]:
    """Per-model statistics and pairwise tests, stating the settings the runs *recorded*, not the request."""
    from .data import DATASETS

    st = base["Study"]
    if not results:
        raise RunFolderError(f"no finished runs under {st['root']}/runs to report on; run the study first")
    models: dict[str, Any] = {}
    labels = list(dict.fromkeys(r["label"] for r in results))
    for label in labels:
        rs = sorted((r for r in results if r["label"] == label), key=lambda r: r["seed"])
        ms = [r["metrics"] for r in rs]
        entry: dict[str, Any] = {"model": ms[0]["model"], "params": ms[0]["params"], "flops": ms[0]["flops"],
                                 "runs": len(rs), "seeds": [r["seed"] for r in rs]}
        for key in ("trainable_params", "buffers"):
            if key in ms[0]:
                entry[key] = ms[0][key]
        for key in ("acc_top1", "acc_top2", "loss", "train_seconds"):
            if all(key in m for m in ms):
                mean, std = mean_std([m[key] for m in ms])
                entry[f"{key}_mean"], entry[f"{key}_std"] = mean, std
        entry["acc_top1_runs"] = [m["acc_top1"] for m in ms]
        entry["shift_acc"] = {k: mean_std([r["shift_acc"][k] for r in rs])[0] for k in rs[0]["shift_acc"]}
        entry["shift_acc_std"] = {k: mean_std([r["shift_acc"][k] for r in rs])[1] for k in rs[0]["shift_acc"]}
        names = rs[0]["classes"]["class_names"]
        entry["per_class"] = {n: list(mean_std([r["classes"]["per_class_accuracy"][n] for r in rs])) for n in names}
        epochs = [h["epoch"] for h in ms[0].get("history", [])]
        curve = [[h["acc_top1"] for h in m.get("history", [])] for m in ms]
        if epochs and all(len(c) == len(epochs) for c in curve):
            entry["curve"] = {"epoch": epochs, "acc_top1_mean": [mean_std(col)[0] for col in zip(*curve, strict=True)],
                              "acc_top1_std": [mean_std(col)[1] for col in zip(*curve, strict=True)]}
            train = [[h.get("train_acc_top1") for h in m.get("history", [])] for m in ms]
            if all(v is not None for t in train for v in t):
                tr = [mean_std(col)[0] for col in zip(*train, strict=True)]
                te = entry["curve"]["acc_top1_mean"]
                best = int(np.argmax(te))
                entry["curve"]["train_acc_top1_mean"] = tr
                entry["fit"] = {"best_epoch": epochs[best], "best_acc_top1": te[best], "final_acc_top1": te[-1],
                                "final_train_acc_top1": tr[-1], "final_gap": tr[-1] - te[-1],
                                "best_epoch_per_seed": [epochs[int(np.argmax(c))] for c in curve]}
        models[label] = entry
    comparisons = compare_models(models, st["compare"], st["alpha"], st["equivalence_margin"])
    recorded = [r["metrics"] for r in results]

    def agreed(key: str) -> Any:
        values = {json.dumps(m.get(key)) for m in recorded}
        if len(values) != 1:  # cannot happen for runs that passed the config check; never report a guess
            raise RunFolderError(f"the study's runs disagree on {key} ({', '.join(sorted(values))}); re-run the stale ones")
        return recorded[0].get(key)

    name = agreed("dataset")
    agreed("test_fingerprint")  # the same test set for every run, whichever machine ran it
    kernels = _one_arithmetic(results, uses or {})
    isas = sorted({(m.get("arithmetic") or {}).get("isa", "unknown") for m in recorded})
    info = DATASETS.get(name)
    return {"study": st["name"], "study_root": st["root"], "dataset": name,
            "dataset_description": info.description if info else name,
            "train_samples": agreed("train_samples"), "test_samples": agreed("test_samples"),
            "train_limit": base["Data"]["train_limit"], "epochs": agreed("epochs"),
            "seeds": sorted({r["seed"] for r in results}), "models": models, "comparisons": comparisons,
            "family": (f"{len(comparisons)} comparisons of acc_top1 (Study.compare); p-values Holm-adjusted over them"
                       if len(comparisons) > 1 else "one comparison"),
            "alpha": st["alpha"], "equivalence_margin": st["equivalence_margin"],
            "arithmetic": {"kernels": kernels, "isa": isas,
                           "blas": sorted({(m.get("arithmetic") or {}).get("blas", "unrecorded") for m in recorded})},
            "timing": sorted({json.dumps(m["timing"], sort_keys=True) if m.get("timing") else "unrecorded"
                              for m in recorded}),
            "paper": st["paper"], "missing_runs": missing or [], "wall_seconds": round(wall, 1),
            "machine": f"{platform.machine()} {platform.system()}, {os.cpu_count()} CPU cores, "
                       f"{st['workers']} worker(s)"}


def compare_models(models: dict[str, Any], pairs: list[list[str]], alpha: float, margin: float) -> list[dict[str, Any]]:
    """Every pair's acc_top1 difference with its CI, Welch and permutation p, Holm over the family, the minimum
    detectable effect and the equivalence test (TOST, Holm too), and the verdict in words."""
    comparisons = []
    for a, b in pairs:
        if a not in models or b not in models:
            continue
        xa, xb = models[a]["acc_top1_runs"], models[b]["acc_top1_runs"]
        w = welch(xa, xb)
        perm = permutation(xa, xb)
        comparisons.append({"a": a, "b": b, "metric": "acc_top1", "diff": w["diff"], "ci95": w["ci95"],
                            "p_value": w["p_value"], "test": "Welch's t", "permutation_p": perm["p"],
                            "permutation_method": perm["method"], "p_equivalence": tost(xa, xb, margin)})
    family = max(1, len(comparisons))
    for c, p, pe in zip(comparisons, holm([c["p_value"] for c in comparisons]),
                        holm([c["p_equivalence"] for c in comparisons]), strict=True):
        c["p_holm"], c["p_equivalence_holm"], c["equivalence_margin"] = p, pe, margin
        # 80% power at the family's strictest Holm threshold, alpha / m (Bonferroni): what the runs could have seen
        c["mde"] = mde(models[c["a"]]["acc_top1_runs"], models[c["b"]]["acc_top1_runs"], alpha / family)
        c["verdict"] = verdict(p, pe, margin, c["mde"], alpha)
        pa, pb = models[c["a"]].get("per_class"), models[c["b"]].get("per_class")
        if pa and pb:  # where the difference comes from: per-class accuracy differences (classes are equal-sized)
            c["by_class"] = {n: pa[n][0] - pb[n][0] for n in pa}
    return comparisons
