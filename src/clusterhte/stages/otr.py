"""Stages of the multisite-OTR simulation study: simulate, fit, evaluate, aggregate.

Job granularity (workflow/rules/*.smk): one simulate job and one evaluate job per design, and one
fit job per method x design; each job streams the chunk files of the design's cells one at a time,
so memory stays at one chunk and the per-job cost of starting Python (~2 s of CPU with the
imports) is paid 4 + 14 x 4 + 4 times instead of once per chunk (2,240 fit jobs at first, then
16 + 224 + 16). Chunk files (``results/{sim,fits,metrics}/otr/{cell}/chunk{k}.parquet``) keep their
contract; a method's hyperparameters still reach only its own fit jobs.

The fit jobs build *compact* fit tables in Arrow (:func:`fit_table`): one row per test unit with
``rep, row, cate, decision`` and the per-replicate constants (split, seconds, failed, error, ATE)
once per replicate in the Parquet metadata, written without a codec (:data:`FIT_PARQUET`);
:func:`read_fit_table` expands one to the full fit table. The evaluation reads only the columns it
uses (:func:`read_fit`). Simulated chunks are stored with :data:`SIM_PARQUET`.

The fit path reads only the columns a fit needs, with pyarrow, and builds the per-replicate
:class:`TrialData` from numpy slices without the per-table pandas validation: the simulator's
output is checked once per chunk, vectorised (:func:`check_chunk`), for the same conditions
``TrialData.validate`` checks (finite values, 0/1 treatment, both arms in every training
cluster).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd

from clusterhte.data.trial import TrialData, TrialDataError
from clusterhte.simulate import otr_designs
from clusterhte.stages.fitting import (COMPACT_PARQUET, chunk_reps, expand_fit_table,
                                       fit_replicates_arrow, replicate_constants)

# clusterhte.evaluate.otr_metrics (scipy.stats: ~0.6 s of imports) is imported where it is used,
# so the simulate and fit jobs do not pay for it.

FIT_INPUT_COLUMNS = ["rep", "split", "row", "cluster", "treatment", "outcome", *otr_designs.COVARIATES]

# How the simulated chunks are stored (values and types unchanged): dictionary encoding only for
# the columns that repeat a few values (per replicate, cluster or arm), plain values for the
# random floats, no codec (random floats do not compress). Writing a (150, 150) chunk costs a third
# of pyarrow's default (snappy, dictionary tried on every column), reading its fit columns 40 % less.
# One row group per chunk, so that each column is read as one buffer and handed over without a copy.
SIM_PARQUET = {"compression": "none",
               "use_dictionary": ["rep", "split", "cluster", "treatment", "trt_prob", "R", "U1", "redraws"],
               "column_encoding": {"row": "DELTA_BINARY_PACKED"}, "row_group_size": 1 << 26}
# the fit tables: compact (stages.fitting.fit_replicates_arrow), stored as COMPACT_PARQUET says
FIT_PARQUET = COMPACT_PARQUET


def simulate(cell: str, k: int, replicates: int, reps_per_chunk: int, seed: int) -> pd.DataFrame:
    design, J, n = otr_designs.parse_cell(cell)
    return otr_designs.simulate_chunk(design, J, n, chunk_reps(replicates, reps_per_chunk, k), seed)


def simulate_table(cell: str, k: int, replicates: int, reps_per_chunk: int, seed: int):
    """:func:`simulate` as a pyarrow Table (what the simulate jobs write, with :data:`SIM_PARQUET`)."""
    design, J, n = otr_designs.parse_cell(cell)
    return otr_designs.simulate_chunk_table(design, J, n, chunk_reps(replicates, reps_per_chunk, k), seed)


def read_sim_columns(path, columns: list[str] | None = None) -> dict[str, np.ndarray]:
    """Columns of a simulated chunk as numpy arrays (``split`` as a boolean ``is_test``)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from clusterhte import io

    io._check_parquet(Path(path))
    cols = list(columns or FIT_INPUT_COLUMNS)
    # split as a dictionary column: its codes are compared, no string per row is materialised
    # ParquetFile.read: one Arrow chunk per row group (read_table cuts batches of 128 Ki rows),
    # so a chunk written with SIM_PARQUET comes back as one buffer per column
    # memory_map: the column pages are decoded straight from the mapped file (no read() copy;
    # ~45 % less CPU for a (150, 150) chunk's 11 columns)
    tb = pq.ParquetFile(path, memory_map=True, read_dictionary=["split"] if "split" in cols else None).read(
        columns=cols, use_threads=False)
    out = {}
    for c in cols:
        if c == "split":
            out["is_test"] = _is_test(tb.column("split"))
        else:
            out[c] = _numpy(tb.column(c))
    return out


def _numpy(col) -> np.ndarray:
    """A pyarrow column as numpy; a one-chunk column (one row group) is handed over without a
    copy (read-only)."""
    return col.chunk(0).to_numpy(zero_copy_only=False) if col.num_chunks == 1 else col.to_numpy()


read_sim = read_sim_columns


def _is_test(split) -> np.ndarray:
    """Boolean ``split == "test"`` of a (dictionary-encoded) Arrow column."""
    import pyarrow as pa
    import pyarrow.compute as pc

    parts = []
    for chunk in split.chunks:
        if pa.types.is_dictionary(chunk.type) and chunk.null_count == 0:
            hit = np.asarray(chunk.dictionary.to_pylist(), dtype=object) == "test"
            parts.append(hit[chunk.indices.to_numpy(zero_copy_only=False)] if hit.size
                         else np.zeros(len(chunk), dtype=bool))
        else:
            parts.append(pc.equal(chunk, "test").to_numpy(zero_copy_only=False))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=bool)


def read_truth(path) -> pd.DataFrame:
    """The test rows of a simulated chunk with their true benefit: rep, split, row, delta."""
    import pyarrow.parquet as pq

    from clusterhte import io

    io._check_parquet(Path(path))
    tb = pq.read_table(path, columns=["rep", "row", "delta"], filters=[("split", "==", "test")],
                       use_threads=False)
    out = pd.DataFrame({c: tb.column(c).to_numpy() for c in ("rep", "row", "delta")})
    out.insert(1, "split", pd.Categorical.from_codes(np.zeros(len(out), dtype=np.int8), categories=["test"]))
    return out


FIT_EVAL_COLUMNS = ["rep", "row", "cate", "decision", "failed", "seconds"]


def read_fit(path) -> pd.DataFrame:
    """The columns of a fit chunk the evaluation uses (:data:`FIT_EVAL_COLUMNS`; read with pyarrow
    into numpy). Compact fit tables (:func:`fit_table`) have ``failed`` and ``seconds`` once per
    replicate in their metadata; they are repeated over the replicate's rows here."""
    import pyarrow.parquet as pq

    from clusterhte import io

    io._check_parquet(Path(path))
    per_rep = replicate_constants(pq.read_schema(path).metadata)
    if per_rep is None:  # a full fit table
        tb = pq.read_table(path, columns=FIT_EVAL_COLUMNS, use_threads=False)
        return pd.DataFrame({c: tb.column(c).to_numpy() for c in FIT_EVAL_COLUMNS}, copy=False)
    tb = pq.ParquetFile(path, memory_map=True).read(columns=["rep", "row", "cate", "decision"],
                                                    use_threads=False)
    ns = per_rep["n"].to_numpy()
    if tb.num_rows != int(ns.sum()):
        raise io.InputFileError(f"{path}: {tb.num_rows} rows, but its replicate metadata lists {int(ns.sum())}")
    cols = {c: _numpy(tb.column(c)) for c in ("rep", "row", "cate", "decision")}
    cols["failed"] = np.repeat(per_rep["failed"].to_numpy(), ns)
    cols["seconds"] = np.repeat(per_rep["seconds"].to_numpy(), ns)
    return pd.DataFrame({c: cols[c] for c in FIT_EVAL_COLUMNS}, copy=False)


def read_fit_table(path) -> pd.DataFrame:
    """A fit chunk as the full fit table (``stages.fitting.FIT_COLUMNS``, one row per test unit
    with the per-replicate constants repeated), for people and audits."""
    import pyarrow.parquet as pq

    from clusterhte import io

    io._check_parquet(Path(path))
    return expand_fit_table(pq.read_table(path, use_threads=False))


def _as_arrays(sim) -> dict[str, np.ndarray]:
    if isinstance(sim, dict):
        return sim
    missing = [c for c in FIT_INPUT_COLUMNS if c not in sim.columns]
    if missing:
        raise ValueError(f"simulated OTR chunk lacks column(s) {missing}")
    out = {c: sim[c].to_numpy() for c in FIT_INPUT_COLUMNS if c != "split"}
    out["is_test"] = (sim["split"] == "test").to_numpy()
    return out


def check_chunk(a: dict[str, np.ndarray], name: str = "simulated chunk") -> None:
    """Vectorised form of ``TrialData.validate`` for a whole simulated chunk."""
    for c in ["outcome", "treatment", *otr_designs.COVARIATES]:
        bad = ~np.isfinite(a[c].astype(float, copy=False))
        if bad.any():
            raise TrialDataError(f"{name}: column '{c}' has missing or infinite values at rows "
                                 f"{np.flatnonzero(bad)[:8].tolist()}")
    t = a["treatment"].astype(float, copy=False)
    bad = (t != 0) & (t != 1)
    if bad.any():
        raise TrialDataError(f"{name}: column 'treatment' must be 0/1 at rows {np.flatnonzero(bad)[:8].tolist()}")
    tr = ~a["is_test"]
    rep, cl = a["rep"][tr], a["cluster"][tr]
    span = None
    if rep.size and rep.dtype.kind in "iu" and cl.dtype.kind in "iu":
        r0, c0 = int(rep.min()), int(cl.min())
        span = (int(rep.max()) - r0 + 1, int(cl.max()) - c0 + 1)
    if span is not None and span[0] * span[1] <= 4 * rep.size + 1024:
        # compact integer labels (the simulator's): (rep, cluster) keys by arithmetic, no hashing
        key = (rep - r0).astype(np.int64) * span[1] + (cl - c0)
    else:
        rep_codes, _ = pd.factorize(rep)
        cl_codes, cl_labels = pd.factorize(cl)
        key = rep_codes.astype(np.int64) * len(cl_labels) + cl_codes
    n1 = np.bincount(key, weights=t[tr])
    nj = np.bincount(key)
    used = nj > 0
    bad = used & ((n1 == 0) | (n1 == nj))
    if bad.any():
        raise TrialDataError(f"{name}: {int(bad.sum())} training cluster(s) have only one arm "
                             "(every training cluster needs both)")


TRIAL_COLUMNS = ["cluster", "treatment", "outcome", *otr_designs.COVARIATES]


def _chunk_frame(a: dict[str, np.ndarray]) -> pd.DataFrame:
    """The trial columns of a whole chunk as one frame (float columns in one block), built once;
    each replicate's TrialData is a row slice of it."""
    floats = [c for c in TRIAL_COLUMNS if c != "cluster"]
    # (columns, rows) in C order: pandas' own block layout, so a replicate's row slice hands the
    # estimators the same memory layout (and the same floating-point results) as a frame built
    # from that replicate's columns
    block = np.empty((len(floats), a["cluster"].size))
    for j, c in enumerate(floats):
        block[j] = a[c]
    frame = pd.DataFrame(block.T, columns=floats, copy=False)
    frame.insert(0, "cluster", a["cluster"])
    return frame


def _chunk_columns(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """The columns of a :func:`_chunk_frame` frame as arrays (views, the same values): each
    replicate's TrialData carries its row slice of them (``TrialData.with_column_arrays``), so
    the estimators' column reads build no pandas Series."""
    return {c: frame[c].to_numpy() for c in TRIAL_COLUMNS}


def _trial(frame: pd.DataFrame, sl: slice, split: str, columns: dict | None = None) -> TrialData:
    part = frame.iloc[sl].reset_index(drop=True)
    td = TrialData(part, "multisite", otr_designs.COVARIATES, (), otr_designs.MODERATORS,
                   name=f"otr {split}")
    return td if columns is None else td.with_column_arrays({c: v[sl] for c, v in columns.items()})


def iter_replicates(sim, check: bool = True) -> Iterator[tuple[int, TrialData, dict[str, TrialData]]]:
    """(rep, train, {"test": test}) per replicate of a chunk, rows of each split in ``row`` order.

    ``sim``: a simulated chunk (DataFrame) or :func:`read_sim_columns` arrays.
    """
    a = _as_arrays(sim)
    if check:
        check_chunk(a)
    # order rows by (rep, split, row); a chunk as written is already in this order
    key_rep, key_test, key_row = a["rep"], a["is_test"], a["row"]
    n = key_rep.size
    ordered = n < 2 or bool(np.all((np.diff(key_rep) > 0) | ((np.diff(key_rep) == 0) & (
        (np.diff(key_test.astype(np.int8)) > 0) | ((np.diff(key_test.astype(np.int8)) == 0) & (np.diff(key_row) > 0))))))
    if not ordered:
        order = np.lexsort((key_row, key_test, key_rep))
        a = {c: v[order] for c, v in a.items()}
    bounds = np.flatnonzero(np.r_[True, (np.diff(a["rep"]) != 0) | (np.diff(a["is_test"].astype(np.int8)) != 0), True])
    blocks = {}
    for s, e in zip(bounds[:-1], bounds[1:]):
        blocks.setdefault(int(a["rep"][s]), {})["test" if a["is_test"][s] else "train"] = slice(s, e)
    frame = _chunk_frame(a)
    columns = _chunk_columns(frame)
    for rep in sorted(blocks):
        b = blocks[rep]
        if "train" not in b or "test" not in b:
            raise ValueError(f"replicate {rep} of the simulated chunk lacks its "
                             f"{'train' if 'train' not in b else 'test'} rows")
        yield (rep, _trial(frame, b["train"], "train", columns),
               {"test": _trial(frame, b["test"], "test", columns)})


def fit_table(sim, cell: str, method: str, params: dict, seed: int, log=sys.stderr,
              threads: int = 1):
    """Scores of ``method`` on the test split of every replicate of a chunk, as a compact pyarrow
    Table (:func:`clusterhte.stages.fitting.fit_replicates_arrow`; what the fit jobs write, with
    :data:`FIT_PARQUET`)."""
    a = _as_arrays(sim)
    reps = iter_replicates(a)
    r = a["rep"]
    # number of replicates (for the log): count the changes when sorted, as the chunks are written
    n = int(np.count_nonzero(np.diff(r))) + 1 if r.size and np.all(r[1:] >= r[:-1]) else len(np.unique(r))
    return fit_replicates_arrow(reps, study="otr", cell=cell, method=method, params=params,
                                root_seed=seed, log=log, total=n, threads=threads)


def fit(sim, cell: str, method: str, params: dict, seed: int, log=sys.stderr,
        threads: int = 1) -> pd.DataFrame:
    """:func:`fit_table` as the full fit table (a DataFrame with ``stages.fitting.FIT_COLUMNS``)."""
    return expand_fit_table(fit_table(sim, cell, method, params, seed, log=log, threads=threads))


def evaluate(sim: pd.DataFrame, fits: dict[str, pd.DataFrame], rank: str = "spearman") -> pd.DataFrame:
    """Metrics of every method's fits of one chunk; ``fits`` maps method name -> fit table."""
    from clusterhte.evaluate import otr_metrics

    return otr_metrics.evaluate_methods(fits, sim, rank=rank)


def collect(metric_tables: dict[str, list[pd.DataFrame]]) -> pd.DataFrame:
    """Stack per-cell metric chunks (cell name -> chunk tables) adding design, J, n columns."""
    parts = []
    for cell, chunks in metric_tables.items():
        d, J, n = otr_designs.parse_cell(cell)
        parts.extend(t.assign(cell=cell, design=d, J=J, n=n) for t in chunks)
    return pd.concat(parts, ignore_index=True)


def summary(per_rep: pd.DataFrame) -> pd.DataFrame:
    """Mean, SD and MCSE over replicates per design x size x method (congruence left out)."""
    from clusterhte.evaluate import otr_metrics

    m = per_rep[per_rep["metric"] != "congruence"]
    out = otr_metrics.aggregate(m, ["design", "J", "n"]).drop(columns="other")
    return out.sort_values(["design", "J", "n", "metric", "method"]).reset_index(drop=True)


def congruence(per_rep: pd.DataFrame) -> pd.DataFrame:
    """Mean pairwise congruence per design x size (long: method, other, mean)."""
    from clusterhte.evaluate import otr_metrics

    m = per_rep[per_rep["metric"] == "congruence"]
    return otr_metrics.aggregate(m, ["design", "J", "n"])


def congruence_matrix(cong: pd.DataFrame, design: str, J: int, n: int, methods: list[str]) -> pd.DataFrame:
    """Mean congruence matrix (methods x methods, in ``methods`` order) of one design and size."""
    c = cong[(cong["design"] == design) & (cong["J"] == J) & (cong["n"] == n)]
    if c.empty:
        raise ValueError(f"no congruence results for design {design} at (J, n) = ({J}, {n})")
    m = c.pivot(index="method", columns="other", values="mean")
    present = [x for x in methods if x in m.index]
    return m.loc[present, present]


def tables(per_rep: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The aggregate stage's tables (output name -> table)."""
    return {"summary": summary(per_rep), "congruence": congruence(per_rep)}
