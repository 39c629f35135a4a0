"""Run a sweep on Dask: a LocalCluster of worker processes, or a cluster's scheduler.

Every point is one task (:func:`accel.dse.evaluate.evaluate`); results are
appended to ``DIR/results.csv`` as they arrive, so a re-run skips what is
done (a point is done when its row is there and has every check the sweep now
asks of it; failed points are retried with ``retry_failed``). Real tool runs
(Verilator builds, yosys, nextpnr) take a cluster-wide ``distributed.Lock``,
so however many workers there are, one such job runs at a time.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from accel.dse import evaluate as ev
from accel.dse import pareto
from accel.dse.sweep import Sweep
from accel.dse.table import RESULTS, Table
from accel.errors import AccelError
from accel.outputs import refuse_dangerous

CONNECT_TIMEOUT_S = 5
SWEEP, SUMMARY = "sweep.json", "summary.json"


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _describe(sweep: Sweep) -> dict[str, Any]:
    """The sweep as run (every parameter resolved), kept beside its results."""
    return {
        "name": sweep.name,
        "model": sweep.model,
        "arch": sweep.arch,
        "axes": sweep.axes,
        "fixed": sweep.fixed,
        "settings": sweep.settings(),
        "checks": {k: vars(c) for k, c in sweep.checks.items()},
    }


def tasks(sweep: Sweep, failed: frozenset[str] | set[str] = frozenset()) -> list[dict[str, Any]]:
    """One task per point, with the checks the sweep's sampling picked for it.

    Each check takes the first ``points`` points of a seeded random order (drawn over the
    point ids, so the axes' order does not matter) that are not known to have ``failed``:
    a point that cannot be built is replaced by the next one in the order.
    """
    points = sweep.points()
    ids = [sweep.point_id(p) for p in points]
    by_id = np.argsort(ids, kind="stable")
    chosen: dict[str, set[int]] = {}
    for name, check in sweep.checks.items():
        if check.all:
            chosen[name] = set(range(len(points)))
            continue
        order = [int(by_id[i]) for i in np.random.default_rng(check.seed).permutation(len(ids))]
        chosen[name] = set([i for i in order if ids[i] not in failed][: check.points])
    return [
        {
            "id": pid,
            "model": sweep.model,
            "arch": sweep.arch,
            "params": p,
            "checks": {name: i in sel for name, sel in chosen.items()},
            "batch": sweep.batch,
            "seed": sweep.seed,
            "clock_mhz": sweep.clock_mhz,
            "quality_samples": sweep.quality_samples,
        }
        for i, (pid, p) in enumerate(zip(ids, points, strict=True))
    ]


_CHECK_COLUMN = {"rtl": "rtl_checked", "synth": "syn_lut4", "implement": "pnr_luts"}


def _done(row: dict[str, str] | None, task: dict, retry_failed: bool) -> bool:
    """Is the point's row there, with every check now asked of it (tried, if it failed)?"""
    if row is None:
        return False
    if row["status"] == "failed":
        return not retry_failed
    if row.get("check_error") and retry_failed:
        return False
    tried = row.get("check_error", "")
    return all(
        row.get(_CHECK_COLUMN[c], "") != "" or f"{c}: " in tried
        for c, on in task["checks"].items()
        if on
    )


def check_scheduler(address: str) -> None:
    """A one-line error for an address Dask could not connect to whatever the network."""
    from distributed.comm.addressing import parse_address, parse_host_port

    try:
        scheme, location = parse_address(address)
        if scheme in ("tcp", "tls", "ws", "wss", "ucx"):
            host, port = parse_host_port(location)
            if not re.fullmatch(r"[A-Za-z0-9_.:\[\]-]+", host) or not 0 < int(port) < 65536:
                raise ValueError(f"no host:port in {location!r}")
    except (ValueError, TypeError) as e:
        raise AccelError(f"bad scheduler address {address!r}: {_reason(e)}") from None


@contextlib.contextmanager
def client(scheduler: str | None, workers: int | None):
    """A distributed Client: connected to ``scheduler``, or to a new LocalCluster."""
    from distributed import Client, LocalCluster

    if scheduler:
        check_scheduler(scheduler)
        try:
            c = Client(scheduler, timeout=f"{CONNECT_TIMEOUT_S}s", set_as_default=False)
        except (OSError, TimeoutError) as e:
            raise AccelError(
                f"cannot reach the Dask scheduler at {scheduler} ({_reason(e)})"
            ) from None
        except ValueError as e:
            raise AccelError(f"bad scheduler address {scheduler!r}: {_reason(e)}") from None
        try:
            yield c
        finally:
            c.close()
        return
    n = workers or max(1, min(os.cpu_count() or 1, 4))
    with (
        LocalCluster(
            n_workers=n,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            silence_logs=logging.ERROR,
        ) as cluster,
        Client(cluster, set_as_default=False) as c,
    ):
        yield c


def _reason(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


class _Progress:
    """A rich bar on a terminal; otherwise a line every tenth of the way (stderr)."""

    def __init__(self, total: int, label: str, quiet: bool) -> None:
        self.total, self.done, self.failed, self.quiet = total, 0, 0, quiet
        self.bar = None
        self.next_line = 0
        if not quiet and sys.stderr.isatty() and total:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

            self.bar = Progress(
                "[progress.description]{task.description}",
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                console=Console(stderr=True),
            )
            self.bar.start()
            self.task = self.bar.add_task(label, total=total)
        elif not quiet:
            print(f"{label}: {total} points to evaluate", file=sys.stderr)

    def step(self, row: dict) -> None:
        self.done += 1
        self.failed += row["status"] == "failed"
        if self.bar is not None:
            self.bar.update(self.task, advance=1, description=f"{self.failed} failed")
        elif not self.quiet and (self.done >= self.next_line or self.done == self.total):
            print(f"  {self.done}/{self.total} points ({self.failed} failed)", file=sys.stderr)
            self.next_line = self.done + max(1, self.total // 10)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def run(
    sweep: Sweep,
    out: Path,
    *,
    scheduler: str | None = None,
    workers: int | None = None,
    retry_failed: bool = False,
    force: bool = False,
    quiet: bool = False,
    plots: bool = True,
) -> dict[str, Any]:
    """Evaluate the points not yet in ``out/results.csv``; write plots and a summary."""
    out = Path(out)
    if scheduler and workers:
        raise AccelError("--workers sizes the LocalCluster; a scheduler brings its own workers")
    if out.exists() and not out.is_dir():
        raise AccelError(f"output {out} exists and is not a directory")
    ours = (out / SWEEP).is_file()
    if out.is_dir() and any(out.iterdir()) and not ours and not force:
        raise AccelError(
            f"output directory {out} exists and holds no accel dse results; "
            "pick another -o DIR or pass --force"
        )
    if out.exists() and not ours:
        refuse_dangerous(out)  # results never go loose into the working directory or above
    if scheduler:
        check_scheduler(scheduler)
    t0 = time.perf_counter()
    where = scheduler or "a LocalCluster"
    evaluated: set[str] = set()
    with contextlib.ExitStack() as stack:
        # a named scheduler is reached before anything is written
        c = stack.enter_context(client(scheduler, workers)) if scheduler else None
        if force and out.is_dir():
            for name in (RESULTS, SWEEP, SUMMARY):
                (out / name).unlink(missing_ok=True)
            shutil.rmtree(out / "plots", ignore_errors=True)
        out.mkdir(parents=True, exist_ok=True)
        _write(out / SWEEP, json.dumps(_describe(sweep), indent=1, default=str) + "\n")
        table = Table(out / RESULTS, ev.columns(sweep.model, sweep.arch))
        # a sampled check whose point fails moves to another point: a second round
        for _ in range(4):
            failed = {pid for pid, r in table.rows.items() if r["status"] == "failed"}
            todo_all = tasks(sweep, failed)
            todo = [t for t in todo_all if not _done(table.rows.get(t["id"]), t, retry_failed)]
            todo = [t for t in todo if not (t["id"] in evaluated and _failed(table, t))]
            if not todo:
                break
            # points with real tool runs first: their (serialized) tools start early
            todo.sort(key=lambda t: not any(t["checks"].values()))
            if c is None:
                c = stack.enter_context(client(scheduler, workers))
                n = len(c.scheduler_info()["workers"])
                where = scheduler or f"a LocalCluster of {n} workers"
            _evaluate_all(c, todo, table, f"{sweep.name} on {where}", quiet)
            evaluated |= {t["id"] for t in todo}
    table.compact([t["id"] for t in todo_all])
    seconds = time.perf_counter() - t0
    return _finish(sweep, out, table, todo_all, len(evaluated), seconds, where, plots)


def _failed(table: Table, task: dict) -> bool:
    row = table.rows.get(task["id"])
    return row is not None and row["status"] == "failed"


def _evaluate_all(c, todo: list[dict], table: Table, label: str, quiet: bool) -> None:
    from distributed import as_completed

    run = uuid.uuid4().hex[:8]
    keys = [f"accel-dse-{t['id']}-{run}" for t in todo]
    futures = c.map(ev.evaluate, todo, key=keys, pure=False)
    by_key = {f.key: t for f, t in zip(futures, todo, strict=True)}
    progress = _Progress(len(todo), label, quiet)
    try:
        for fut in as_completed(futures, loop=c.loop):
            try:
                row = fut.result()
            except Exception as e:  # a worker died or the task could not run
                t = by_key[fut.key]
                row = {
                    "point_id": t["id"],
                    "model": t["model"],
                    "arch": t["arch"],
                    **t["params"],
                    "status": "failed",
                    "error": f"{type(e).__name__}: {_reason(e)}",
                }
            table.append(row)
            progress.step(row)
            fut.release()
    except BaseException:
        c.cancel(futures)
        raise
    finally:
        progress.close()


def frame(table_or_path, ids: list[str] | None = None):
    """The results as a pandas DataFrame (only ``ids``, in that order, if given)."""
    import pandas as pd

    path = table_or_path.path if isinstance(table_or_path, Table) else Path(table_or_path)
    df = pd.read_csv(
        path, dtype={"point_id": str, "error": str, "fits_detail": str, "check_error": str}
    )
    if ids is not None:
        df = df.set_index("point_id").loc[[i for i in ids if i in set(df["point_id"])]]
        df = df.reset_index()
    return df


def _finish(sweep, out, table, all_tasks, evaluated, seconds, where, plots) -> dict[str, Any]:
    ids = [t["id"] for t in all_tasks]
    df = frame(table, ids)
    ok = df[df["status"] == "ok"]
    failed = df[df["status"] == "failed"]
    summary: dict[str, Any] = {
        "sweep": sweep.name,
        "model": sweep.model,
        "arch": sweep.arch,
        "out": str(out),
        "results": str(out / RESULTS),
        "ran_on": where,
        "points": len(ids),
        "evaluated": evaluated,
        "skipped": len(ids) - evaluated,
        "ok": len(ok),
        "failed": len(failed),
        "seconds": round(seconds, 2),
        "axes": {k: v for k, v in sweep.axes.items()},
        "checks": _checks(df),
        "failures": [
            {"point_id": r.point_id, "error": r.error} for r in failed.head(10).itertuples()
        ],
        "check_errors": [
            {"point_id": r.point_id, "error": r.check_error}
            for r in df[df["check_error"].fillna("") != ""].head(10).itertuples()
        ],
    }
    if len(ok):
        summary["pareto"] = pareto.fronts(df, sweep.arch)
        if plots:
            paths = pareto.plot(df, sweep.arch, out / "plots", sweep.name)
            summary["plots"] = [str(p) for p in paths]
    rtl = summary["checks"].get("rtl", {})
    summary["rtl_mismatches"] = rtl.get("mismatches", 0)
    _write(out / SUMMARY, json.dumps(summary, indent=1, default=str) + "\n")
    return summary


def _checks(df) -> dict[str, Any]:
    import pandas as pd

    out: dict[str, Any] = {}
    rtl = df[df["rtl_checked"] == True]  # noqa: E712
    if len(rtl):
        out["rtl"] = {
            "points": len(rtl),
            "cycles_match": int((rtl["rtl_cycles_match"] == True).sum()),  # noqa: E712
            "bit_exact": int((rtl["rtl_bit_exact"] == True).sum()),  # noqa: E712
            "mismatches": int(
                (~((rtl["rtl_cycles_match"] == True) & (rtl["rtl_bit_exact"] == True))).sum()  # noqa: E712
            ),
        }
    syn = df[pd.to_numeric(df["syn_lut4"], errors="coerce").notna()]
    if len(syn):
        err = {}
        for r in ev.RESOURCE_COLS:
            est = pd.to_numeric(syn[f"est_{r}"], errors="coerce").to_numpy(float)
            meas = pd.to_numeric(syn[f"syn_{r}"], errors="coerce").to_numpy(float)
            rel = np.abs(est - meas) / np.maximum(meas, 1) * 100
            err[r] = round(float(np.nanmean(rel)), 2)
        out["synth"] = {"points": len(syn), "estimate_mean_abs_pct": err}
    pnr = df[pd.to_numeric(df["pnr_luts"], errors="coerce").notna()]
    if len(pnr):
        out["implement"] = {"points": len(pnr)}
    return out
