"""The fit stage shared by all studies: fit one method on a chunk of replicates.

Output contract (one row per predicted row): ``rep, split, row, cate, lower, upper, decision,
seconds, failed, error, ate, ate_lower, ate_upper``. A method that raises on one replicate records
``failed = 1`` with the error message and the study goes on.

Two builders of the same table: :func:`fit_replicates` (a DataFrame; CRT and dataset fits) and
:func:`fit_replicates_arrow` (a pyarrow Table with the same columns, values and Parquet types;
the OTR fit jobs, whose chunks have up to 1.1 million test rows per method). Parquet types: rep,
row int64; cate, lower, upper, seconds, ate, ate_lower, ate_upper float64; decision, failed int8;
split, error string.
"""

from __future__ import annotations

import sys
import time
import traceback
from typing import Iterable, Iterator

import numpy as np
import pandas as pd

from clusterhte import methods, seeds
from clusterhte.data.trial import TrialData

FIT_COLUMNS = ["rep", "split", "row", "cate", "lower", "upper", "decision", "seconds", "failed",
               "error", "ate", "ate_lower", "ate_upper"]


def _fit_each(replicates, *, study, cell, method, params, root_seed, log, total, threads, on_fitted):
    """Fit ``method`` on each (rep, train, preds); yields (rep, preds, seconds, error, results)."""
    params = with_threads(method, params, threads)
    for i, (rep, train, preds) in enumerate(replicates):
        seed = seeds.int_seed(root_seed, study, cell, int(rep), method)
        t0 = time.perf_counter()
        err = None
        results = {}
        try:
            est = methods.make(method, params, random_state=seed)
            est.fit(train)
            for split, td in preds.items():
                results[split] = est.predict(td)
            if on_fitted is not None:
                on_fitted(rep, est, train, results)
        except methods.MethodError:
            raise  # a configuration problem, not a replicate failure
        except Exception as e:  # noqa: BLE001 - record and go on, as the study design requires
            err = f"{type(e).__name__}: {e}"
            traceback.print_exc(file=log)
        secs = time.perf_counter() - t0
        yield rep, preds, secs, err, results
        status = "FAILED " + err if err else "ok"
        of = f"/{total}" if total else ""
        print(f"[{study} fit {method} {cell}] replicate {rep} ({i + 1}{of}) {secs:.3f} s {status}",
              file=log, flush=True)


def fit_replicates(replicates: Iterable[tuple[int, TrialData, dict[str, TrialData]]], *, study: str,
                   cell: str, method: str, params: dict, root_seed: int,
                   larger_is_better: bool = True, log=sys.stderr, total: int | None = None,
                   threads: int = 1, on_fitted=None) -> pd.DataFrame:
    """Fit ``method`` on each (rep, train, {split: prediction table}) and stack the predictions.

    ``threads`` (the rule's core count) is passed to estimators that take ``n_threads``; it is not
    a hyperparameter, so it does not enter the provenance or trigger reruns. ``on_fitted(rep, est,
    train, results)``, when given, sees each fitted estimator and its predictions ({split:
    CateResult}) before they are tabulated (e.g. for outcome diagnostics and draws).
    """
    cols: dict[str, list] = {c: [] for c in FIT_COLUMNS}
    for rep, preds, secs, err, results in _fit_each(
            replicates, study=study, cell=cell, method=method, params=params, root_seed=root_seed,
            log=log, total=total, threads=threads, on_fitted=on_fitted):
        for split, td in preds.items():
            n = td.n
            cols["rep"].append(np.full(n, int(rep), dtype=np.int64))
            cols["split"].append(np.full(n, split, dtype=object))
            cols["row"].append(np.arange(n, dtype=np.int64))
            cols["seconds"].append(np.full(n, secs))
            if err is None:
                r = results[split]
                r.larger_is_better = larger_is_better
                ate, alo, ahi = r.ate()
                vals = {"cate": r.point, "lower": r.lower, "upper": r.upper,
                        "decision": r.decision.astype("int8"), "failed": np.zeros(n, dtype=np.int8),
                        "error": np.full(n, "", dtype=object), "ate": np.full(n, ate, dtype=float),
                        "ate_lower": np.full(n, alo, dtype=float), "ate_upper": np.full(n, ahi, dtype=float)}
            else:
                nan = np.full(n, np.nan)
                vals = {"cate": nan, "lower": nan, "upper": nan, "decision": np.full(n, -1, dtype=np.int8),
                        "failed": np.ones(n, dtype=np.int8), "error": np.full(n, err, dtype=object),
                        "ate": nan, "ate_lower": nan, "ate_upper": nan}
            for c, v in vals.items():
                cols[c].append(np.broadcast_to(np.asarray(v), (n,)))
    # one frame for the whole chunk (per-replicate frames and a concat cost more than the fits)
    out = pd.DataFrame({c: np.concatenate(v) for c, v in cols.items()})
    for c in ("split", "error"):
        out[c] = out[c].astype(str)
    return out


def fit_replicates_arrow(replicates: Iterable[tuple[int, TrialData, dict[str, TrialData]]], *,
                         study: str, cell: str, method: str, params: dict, root_seed: int,
                         larger_is_better: bool = True, log=sys.stderr, total: int | None = None,
                         threads: int = 1):
    """:func:`fit_replicates` as a pyarrow Table: the same columns, values and Parquet types.

    The per-replicate constants (``rep``, ``split``, ``seconds``, ``failed``, ``error``, ``ate*``)
    are kept once per (replicate, split) and expanded to rows only when the Arrow columns are
    built (``np.repeat``; strings through a dictionary ``take``), so no per-row Python object is
    made and no pandas frame is consolidated: a chunk of 50 replicates at (J, n) = (150, 150) has
    1.1 million rows per method.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    reps, splits, ns, secs_l, errs, ates = [], [], [], [], [], []
    cate, lower, upper, dec = [], [], [], []
    for rep, preds, secs, err, results in _fit_each(
            replicates, study=study, cell=cell, method=method, params=params, root_seed=root_seed,
            log=log, total=total, threads=threads, on_fitted=None):
        for split, td in preds.items():
            n = td.n
            reps.append(int(rep))
            splits.append(split)
            ns.append(n)
            secs_l.append(secs)
            errs.append("" if err is None else err)
            if err is None:
                r = results[split]
                r.larger_is_better = larger_is_better
                ates.append(r.ate())
                cate.append(r.point)
                lower.append(r.lower)
                upper.append(r.upper)
                dec.append(r.decision.astype(np.int8))
            else:
                nan = np.full(n, np.nan)
                ates.append((np.nan, np.nan, np.nan))
                cate.append(nan)
                lower.append(nan)
                upper.append(nan)
                dec.append(np.full(n, -1, dtype=np.int8))
    ns_a = np.asarray(ns, dtype=np.int64)
    total_rows = int(ns_a.sum())
    starts = np.cumsum(ns_a) - ns_a

    def rep_(values, dtype):
        return np.repeat(np.asarray(values, dtype=dtype), ns_a)

    def strings(values):
        names, codes = np.unique(np.asarray(values, dtype=object).astype(str), return_inverse=True)
        return pc.take(pa.array(names.tolist(), type=pa.large_string()), pa.array(rep_(codes, np.int32)))

    def cat(parts, dtype):
        return np.concatenate(parts).astype(dtype, copy=False) if parts else np.empty(0, dtype)

    ate_a = np.asarray(ates, dtype=float).reshape(-1, 3)
    failed = np.asarray([e != "" for e in errs], dtype=np.int8)
    cols = {
        "rep": rep_(reps, np.int64),
        "split": strings(splits),
        "row": np.arange(total_rows, dtype=np.int64) - np.repeat(starts, ns_a),
        "cate": cat(cate, np.float64),
        "lower": cat(lower, np.float64),
        "upper": cat(upper, np.float64),
        "decision": cat(dec, np.int8),
        "seconds": rep_(secs_l, np.float64),
        "failed": rep_(failed, np.int8),
        "error": strings(errs),
        "ate": rep_(ate_a[:, 0], np.float64),
        "ate_lower": rep_(ate_a[:, 1], np.float64),
        "ate_upper": rep_(ate_a[:, 2], np.float64),
    }
    return pa.table({c: cols[c] for c in FIT_COLUMNS})


def with_threads(method: str, params: dict, threads: int) -> dict:
    """``params`` plus ``n_threads=threads`` when the estimator takes a thread count."""
    params = dict(params)
    if "n_threads" in methods.get(method).param_names():
        params.setdefault("n_threads", max(1, int(threads)))
    return params


def chunk_reps(replicates: int, reps_per_chunk: int, k: int) -> range:
    """Replicate numbers of chunk ``k``."""
    lo = k * reps_per_chunk
    if lo >= replicates or k < 0:
        raise ValueError(f"chunk {k} is out of range for {replicates} replicates in chunks of {reps_per_chunk}")
    return range(lo, min(lo + reps_per_chunk, replicates))


def n_chunks(replicates: int, reps_per_chunk: int) -> int:
    return -(-int(replicates) // int(reps_per_chunk))


def iter_by_rep(df: pd.DataFrame) -> Iterator[tuple[int, pd.DataFrame]]:
    for rep, g in df.groupby("rep", sort=True):
        yield int(rep), g


def chunk_provenance(*, rule: str, config: dict, seed=None, extra: dict | None = None):
    """Provenance records for the chunk files of a job that writes several chunks.

    Returns ``record(inputs, **config_items)``: the job-wide part (package, libraries, config) is
    built once; each chunk's record lists only the input files that chunk was made from, with
    their sha256, and adds ``config_items`` (e.g. the chunk number) to the config.
    """
    from clusterhte import io

    base = io.provenance(rule=rule, inputs=(), config=config, seed=seed, extra=extra)

    def record(inputs=(), **config_items) -> dict:
        rec = dict(base)
        if config_items:
            cfg = dict(config, **config_items)
            rec["config"] = cfg
            rec["config_hash"] = io.config_hash(cfg)
        rec["inputs"] = [{"path": str(p), "sha256": io.sha256_file(p)} for p in inputs]
        return rec

    return record


def limit_threads(threads: int = 1):
    """Give BLAS/OpenMP exactly ``threads`` threads in this process, also after numpy is loaded.

    ``clusterhte.smk.limit_threads`` sets the environment variables, which OpenBLAS reads only
    when numpy is first imported -- and importing ``clusterhte.smk`` already imports numpy (via
    pandas/pyarrow), so in a workflow script the variables alone come too late. This sets them for
    child processes and limits the loaded pools with threadpoolctl. Returns the controller
    (``.restore_original_limits()`` undoes it).
    """
    import os

    from threadpoolctl import threadpool_limits

    n = max(1, int(threads))
    for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ[v] = str(n)
    return threadpool_limits(limits=n)
