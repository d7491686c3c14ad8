"""The fit stage shared by all studies: fit one method on a chunk of replicates.

Output contract (one row per predicted row): ``rep, split, row, cate, lower, upper, decision,
seconds, failed, error, ate, ate_lower, ate_upper``. A method that raises on one replicate records
``failed = 1`` with the error message and the study goes on.

Two builders: :func:`fit_replicates` (a DataFrame; CRT and dataset fits) and
:func:`fit_replicates_arrow` (the OTR fit jobs, whose chunks have up to 1.1 million test rows per
method): a *compact* pyarrow Table with one column per row-varying value (rep, row, cate,
decision) and the per-replicate constants in its metadata; :func:`expand_fit_table` turns it back
into the full table, value for value. Parquet types of the full table: rep, row int64; cate,
lower, upper, seconds, ate, ate_lower, ate_upper float64; decision, failed int8; split, error
string. Compact table: rep, row int32; cate (lower, upper) float64; decision int8.
"""

from __future__ import annotations

import sys
import time
import traceback
from typing import Iterable, Iterator

import numpy as np
import pandas as pd

from clusterhte import methods, seeds
from clusterhte.data.trial import TrialData, TrialDataError

FIT_COLUMNS = ["rep", "split", "row", "cate", "lower", "upper", "decision", "seconds", "failed",
               "error", "ate", "ate_lower", "ate_upper"]


def _fit_each(replicates, *, study, cell, method, params, root_seed, log, total, threads, on_fitted):
    """Fit ``method`` on each (rep, train, preds); yields (rep, preds, seconds, error, results)."""
    params = with_threads(method, params, threads)
    for i, (rep, train, preds) in enumerate(replicates):
        seed = seeds.int_seed(root_seed, study, cell, int(rep), method)
        t0 = time.perf_counter()
        err, note = None, ""
        results = {}
        try:
            est = methods.make(method, params, random_state=seed)
            est.fit(train)
            note = getattr(est, "fit_note", "")   # duck-typed estimators may lack it
            for split, td in preds.items():
                results[split] = est.predict(td)
            if on_fitted is not None:
                on_fitted(rep, est, train, results)
        except methods.MethodError:
            raise  # a configuration problem, not a replicate failure
        except Exception as e:  # noqa: BLE001 - record and go on, as the study design requires
            err = f"{type(e).__name__}: {e}"
            if not isinstance(e, TrialDataError):  # the data cannot carry the model: the message says why
                traceback.print_exc(file=log)
        secs = time.perf_counter() - t0
        yield rep, preds, secs, err, results
        status = "FAILED " + err if err else "ok" + (f" ({note})" if note else "")
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


REPLICATES_KEY = "clusterhte.replicates"
"""Parquet key-value metadata key of a compact fit table's per-replicate constants."""

# Parquet settings of a compact fit table: the scores are random float64 (nothing for a codec to
# gain: plain, no codec), ``rep`` repeats one value per replicate and ``decision`` takes three
# (dictionary + run lengths / bit packing: 0.15 MB instead of 4.5 MB per 1.1 million rows, as
# Parquet stores int8 in 32 bits), ``row`` counts up (delta encoding); one row group. A (150, 150)
# chunk (1.1 million rows) is 9.2 MB and costs ~50 ms to write, against 12 MB and ~200 ms for the
# 13-column table with pyarrow's defaults (snappy, dictionary tried on every column).
COMPACT_PARQUET = {"compression": "none", "use_dictionary": ["rep", "decision"],
                   "column_encoding": {"row": "DELTA_BINARY_PACKED", "cate": "PLAIN",
                                       "lower": "PLAIN", "upper": "PLAIN"},
                   "row_group_size": 1 << 26}


def fit_replicates_arrow(replicates: Iterable[tuple[int, TrialData, dict[str, TrialData]]], *,
                         study: str, cell: str, method: str, params: dict, root_seed: int,
                         larger_is_better: bool = True, log=sys.stderr, total: int | None = None,
                         threads: int = 1):
    """:func:`fit_replicates` as a *compact* pyarrow Table (what the OTR fit jobs write).

    Per row only what varies by row: ``rep`` (int32), ``row`` (int32), ``cate`` (float64),
    ``decision`` (int8), and ``lower``/``upper`` (float64) only when some replicate has an
    interval (none of the OTR estimators does). The per-(replicate, split) constants -- ``rep,
    split, n, seconds, failed, error, ate, ate_lower, ate_upper`` -- are stored once per
    replicate in the schema metadata under :data:`REPLICATES_KEY` (JSON, one list per field,
    NaN as null -- a non-finite value is read back as NaN; finite floats round-trip exactly).
    :func:`expand_fit_table` rebuilds the full 13-column table of :func:`fit_replicates` from
    it, value for value.

    A chunk of 50 replicates at (J, n) = (150, 150) has 1.1 million test rows per method: the
    13-column table cost ~200 ms to write per chunk and the compact one ~50 ms (Parquet options
    :data:`COMPACT_PARQUET`, for ``io.write_table(..., parquet=COMPACT_PARQUET)``).
    """
    import json

    import pyarrow as pa

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
            secs_l.append(float(secs))
            errs.append("" if err is None else err)
            if err is None:
                r = results[split]
                r.larger_is_better = larger_is_better
                ates.append(tuple(float(v) for v in r.ate()))
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
    starts = np.cumsum(ns_a) - ns_a

    def cat(parts, dtype):
        return np.concatenate(parts).astype(dtype, copy=False) if parts else np.empty(0, dtype)

    cols = {"rep": np.repeat(np.asarray(reps, dtype=np.int32), ns_a),
            "row": (np.arange(int(ns_a.sum()), dtype=np.int64) - np.repeat(starts, ns_a)).astype(np.int32),
            "cate": cat(cate, np.float64),
            "decision": cat(dec, np.int8)}
    lo, hi = cat(lower, np.float64), cat(upper, np.float64)
    if not (np.isnan(lo).all() and np.isnan(hi).all()):
        cols["lower"], cols["upper"] = lo, hi
    ate_a = np.asarray(ates, dtype=float).reshape(-1, 3)

    def num(v):
        return [None if not np.isfinite(x) else x for x in map(float, v)]

    per_rep = {"rep": reps, "split": splits, "n": [int(x) for x in ns], "seconds": num(secs_l),
               "failed": [int(e != "") for e in errs], "error": errs, "ate": num(ate_a[:, 0]),
               "ate_lower": num(ate_a[:, 1]), "ate_upper": num(ate_a[:, 2])}
    meta = {REPLICATES_KEY.encode(): json.dumps(per_rep, separators=(",", ":"), allow_nan=False).encode()}
    return pa.table(cols).replace_schema_metadata(meta)


def replicate_constants(metadata: dict) -> pd.DataFrame | None:
    """The per-(replicate, split) constants of a compact fit table (one row per replicate and
    split, in table order; NaN for null), from its key-value metadata (str or bytes keys);
    None when the table is not compact."""
    import json

    raw = metadata.get(REPLICATES_KEY, metadata.get(REPLICATES_KEY.encode())) if metadata else None
    if raw is None:
        return None
    d = json.loads(raw)
    out = pd.DataFrame({
        "rep": np.asarray(d["rep"], dtype=np.int64), "split": d["split"],
        "n": np.asarray(d["n"], dtype=np.int64),
        **{c: np.array([np.nan if v is None else v for v in d[c]], dtype=float)
           for c in ("seconds", "ate", "ate_lower", "ate_upper")},
        "failed": np.asarray(d["failed"], dtype=np.int8), "error": d["error"]})
    return out


def expand_fit_table(table) -> pd.DataFrame:
    """The full fit table (:data:`FIT_COLUMNS`, the types of :func:`fit_replicates`) of a compact
    fit table (:func:`fit_replicates_arrow`, or a file read with pyarrow); a table that already has
    every column is returned as a DataFrame unchanged."""
    meta = table.schema.metadata or {}
    per_rep = replicate_constants(meta)
    if per_rep is None:
        return table.to_pandas()
    ns = per_rep["n"].to_numpy()
    N = int(ns.sum())
    if table.num_rows != N:
        raise ValueError(f"compact fit table has {table.num_rows} rows, its replicate metadata {N}")
    col = {c: table.column(c).to_numpy() for c in table.column_names}
    nan = np.full(N, np.nan)
    out = {"rep": col["rep"].astype(np.int64), "split": np.repeat(per_rep["split"].to_numpy(dtype=object), ns),
           "row": col["row"].astype(np.int64), "cate": col["cate"],
           "lower": col.get("lower", nan), "upper": col.get("upper", nan), "decision": col["decision"],
           "seconds": np.repeat(per_rep["seconds"].to_numpy(), ns),
           "failed": np.repeat(per_rep["failed"].to_numpy(), ns),
           "error": np.repeat(per_rep["error"].to_numpy(dtype=object), ns)}
    for c in ("ate", "ate_lower", "ate_upper"):
        out[c] = np.repeat(per_rep[c].to_numpy(), ns)
    df = pd.DataFrame(out)
    for c in ("split", "error"):
        df[c] = df[c].astype(str)
    return df[FIT_COLUMNS]


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


def chunk_provenance(*, rule: str, config: dict, seed=None, extra: dict | None = None,
                     record_sha256: bool = False):
    """Provenance records for the chunk files of a job that writes several chunks.

    Returns ``record(inputs, **config_items)``: the job-wide part (package, libraries, config) is
    built once; each chunk's record lists only the input files that chunk was made from, with
    their sha256, and adds ``config_items`` (e.g. the chunk number) to the config. The sha256 of
    an input is the one recorded next to it while the file is unchanged
    (:func:`clusterhte.io.sha256_recorded`); with ``record_sha256`` a hash this job computes is
    recorded for the next job that reads the file (the OTR study's simulated chunks are read by
    15 jobs each).
    """
    from clusterhte import io

    base = io.provenance(rule=rule, inputs=(), config=config, seed=seed, extra=extra)

    def record(inputs=(), **config_items) -> dict:
        rec = dict(base)
        if config_items:
            cfg = dict(config, **config_items)
            rec["config"] = cfg
            rec["config_hash"] = io.config_hash(cfg)
        rec["inputs"] = [{"path": str(p), "sha256": io.sha256_recorded(p, record=record_sha256)}
                         for p in inputs]
        return rec

    return record


def keep_freed_memory() -> bool:
    """Let this process reuse the memory it frees instead of handing it back to the kernel.

    A simulation job allocates and frees the same large arrays (several MB each) once per
    replicate. glibc serves allocations above its mmap threshold with fresh ``mmap`` pages and
    returns them on ``free``, so each replicate pays the kernel to zero new pages (about 15 % of
    the OTR study's CPU was system time). This raises glibc's mmap threshold to its maximum (32 MB) and its trim threshold to 1 GB
    (``mallopt``; the process keeps at most its peak memory, as before), so freed blocks are
    reused: a (150, 150) fit job's page faults drop from ~2,000 to ~10 per replicate. Values and
    results are unchanged. Returns whether glibc was tuned (False elsewhere: nothing changed).
    Arrow keeps its own allocator (mimalloc), which faulted less than the system one here.
    """
    import ctypes
    import ctypes.util

    tuned = False
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3  # glibc malloc.h
            tuned = bool(libc.mallopt(M_MMAP_THRESHOLD, 32 << 20)
                         and libc.mallopt(M_TRIM_THRESHOLD, 1 << 30)
                         and libc.mallopt(M_TOP_PAD, 16 << 20))
        except (OSError, AttributeError):
            tuned = False
    return tuned


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
