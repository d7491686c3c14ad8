"""Parquet input/output with provenance metadata and atomic writes.

Every table the workflow writes carries, in the Parquet key-value metadata under the key
``clusterhte.provenance``, a JSON record of how it was made:

- ``package``: clusterhte version, git commit and a dirty flag;
- ``rule``: the Snakemake rule (or command) that wrote it;
- ``config`` and ``config_hash``: the stage-relevant subset of the configuration and its sha256;
- ``seed``: the seed material used (if any);
- ``inputs``: path and sha256 of every input file, so that ``clusterhte audit`` can walk the chain
  (a hash recorded next to the file by an earlier job is used while the file is unchanged, see
  :func:`sha256_recorded`; ``clusterhte audit`` always rehashes);
- ``libraries``: versions of the numerical libraries;
- ``created_utc``: the time of writing, or the time given by the ``SOURCE_DATE_EPOCH``
  environment variable when it is set (the reproducible-builds convention; ``make run`` sets it to
  the time of the checked-out commit), so that rerunning a stage writes byte-identical files.

Writes go to a temporary file in the same folder and are renamed into place, so an interrupted
job never leaves a file that looks finished. Files get the usual permissions of a new file
(0666 minus the umask), so colleagues sharing a cluster directory can read the results.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import tempfile
from datetime import datetime, timezone
from functools import lru_cache
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any, Iterable

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

PROVENANCE_KEY = "clusterhte.provenance"
LIBRARIES = ("numpy", "pandas", "pyarrow", "scipy", "scikit-learn", "statsmodels", "stochtree",
             "gpboost", "econml", "pygam", "lightgbm", "snakemake")


class InputFileError(ValueError):
    """An input file is missing, unreadable or not what the stage expects."""


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """sha256 of a file's bytes, read through a memory map (no copy into Python buffers)."""
    import mmap

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        if size == 0:
            return h.hexdigest()
        try:
            with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
                h.update(mm)
        except (OSError, ValueError):  # not mappable (a pipe, some network file systems)
            fh.seek(0)
            for block in iter(lambda: fh.read(chunk), b""):
                h.update(block)
    return h.hexdigest()


# ------------------------------------------------------------------ recorded sha256 (hash cache)
# The sha256 of a file can be recorded once (write_sha256_record; write_table(...,
# record_sha256=True); sha256_recorded(..., record=True) on a miss) in a hidden sidecar next to
# it, ``.{name}.sha256``, with the file's identity: size, modification and status-change times
# (ns), inode and device. Readers that put the file's sha256 in a provenance record
# (sha256_recorded) trust the recorded hash only while all five still match; anything that
# rewrites, replaces, copies, touches or renames the file changes at least the status-change time
# (which no user call can set back), so a changed file is hashed again, never reported with a
# stale hash. Snakemake touches every output after its job, so in the workflow the first job that
# reads a file records its hash (chunk_provenance(..., record_sha256=True)). The OTR study reads
# each simulated chunk in 14 fit jobs and one evaluation: hashing it once or twice instead of 15
# times saves ~2.5 CPU-s per fit job.
SHA256_SIDECAR_SUFFIX = ".sha256"


def sha256_sidecar(path: str | os.PathLike) -> Path:
    """Where the recorded sha256 of ``path`` lives: ``.{name}.sha256`` in the same folder."""
    path = Path(path)
    return path.with_name(f".{path.name}{SHA256_SIDECAR_SUFFIX}")


def _file_identity(st: os.stat_result) -> list[int]:
    return [int(st.st_size), int(st.st_mtime_ns), int(st.st_ctime_ns), int(st.st_ino), int(st.st_dev)]


def write_sha256_record(path: str | os.PathLike, digest: str | None = None) -> str:
    """Write the sidecar of ``path`` with its sha256 (computed unless ``digest`` is given, which
    must be the hash of the file's current bytes) and its current identity; returns the hash."""
    path = Path(path)
    st = os.stat(path)
    digest = sha256_file(path) if digest is None else digest
    if _file_identity(os.stat(path)) != _file_identity(st):  # changed while being hashed
        return digest
    rec = {"sha256": digest, "identity": _file_identity(st)}
    side = sha256_sidecar(path)
    fd, tmp = tempfile.mkstemp(prefix=side.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(canonical_json(rec))
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, side)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return digest


def sha256_recorded(path: str | os.PathLike, record: bool = False) -> str:
    """sha256 of ``path``: the recorded one (:func:`write_sha256_record`) when the file's size,
    times, inode and device are still those recorded with it, else computed from the bytes (and,
    with ``record``, recorded for the next reader)."""
    path = Path(path)
    side = sha256_sidecar(path)
    try:
        st = os.stat(path)
        rec = json.loads(side.read_text())
        if (isinstance(rec, dict) and rec.get("identity") == _file_identity(st)
                and isinstance(rec.get("sha256"), str) and len(rec["sha256"]) == 64):
            return rec["sha256"]
    except (OSError, ValueError):
        pass
    if record:
        try:
            return write_sha256_record(path)
        except OSError:  # a read-only folder: hash without recording
            pass
    return sha256_file(path)


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def config_hash(cfg: Any) -> str:
    return hashlib.sha256(canonical_json(cfg).encode()).hexdigest()


@lru_cache(maxsize=1)
def library_versions() -> dict[str, str]:
    out = {}
    for lib in LIBRARIES:
        try:
            out[lib] = importlib_metadata.version(lib)
        except importlib_metadata.PackageNotFoundError:
            pass
    return out


@lru_cache(maxsize=1)
def package_info() -> dict[str, Any]:
    from clusterhte import __version__
    root = Path(__file__).resolve().parents[2]
    commit, dirty = None, None
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                                text=True, timeout=10).stdout.strip() or None
        if commit:
            st = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=10).stdout
            dirty = bool(st.strip())
    except (OSError, subprocess.SubprocessError):
        pass
    return {"name": "clusterhte", "version": __version__, "git_commit": commit, "git_dirty": dirty}


def provenance(*, rule: str, inputs: Iterable[str | os.PathLike] = (), config: Any = None,
               seed: Any = None, extra: dict | None = None) -> dict[str, Any]:
    """Build the provenance record for a file about to be written."""
    ins = []
    for p in inputs:
        p = Path(p)
        ins.append({"path": str(p), "sha256": sha256_recorded(p) if p.is_file() else None})
    rec = {
        "package": package_info(),
        "rule": rule,
        "config": config,
        "config_hash": config_hash(config),
        "seed": seed,
        "inputs": ins,
        "libraries": library_versions(),
        "created_utc": creation_time(),
    }
    if extra:
        rec.update(extra)
    return rec


def creation_time() -> str:
    """UTC time stamp of a file being written: ``SOURCE_DATE_EPOCH`` (seconds since 1970) when set,
    else now. A malformed ``SOURCE_DATE_EPOCH`` is an error, never silently replaced by now."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    if epoch:
        try:
            t = datetime.fromtimestamp(int(epoch), timezone.utc)
        except (ValueError, OverflowError, OSError):
            raise ValueError(f"SOURCE_DATE_EPOCH must be an integer number of seconds since "
                             f"1970-01-01, got {epoch!r}") from None
    else:
        t = datetime.now(timezone.utc)
    return t.isoformat(timespec="seconds")


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path next to ``path``; rename it into place only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; a finished file is readable as any new file
    finally:
        os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_parquet(df: pd.DataFrame, path: str | os.PathLike, *, prov: dict | None = None,
                  metadata: dict[str, str] | None = None, csv: bool = False,
                  parquet: dict | None = None) -> Path:
    """Write ``df`` atomically with provenance (and optional extra key-value metadata).

    With ``csv=True`` a CSV copy for people is written next to it (same stem), also atomically.
    ``parquet``: options for ``pyarrow.parquet.write_table`` (see :func:`write_table`).
    """
    path = write_table(pa.Table.from_pandas(df, preserve_index=False), path, prov=prov,
                       metadata=metadata, parquet=parquet)
    if csv:
        with atomic_path(path.with_suffix(".csv")) as tmp:
            df.to_csv(tmp, index=False)
    return path


def write_table(table: pa.Table, path: str | os.PathLike, *, prov: dict | None = None,
                metadata: dict[str, str] | None = None, parquet: dict | None = None,
                record_sha256: bool = False) -> Path:
    """:func:`write_parquet` for a pyarrow Table (no pandas round trip): atomic, with provenance.

    ``parquet``: options for ``pyarrow.parquet.write_table`` that change only how the values are
    stored (``compression``, ``use_dictionary``, ``column_encoding``, ...), never the values or
    their types; default: pyarrow's (snappy, dictionary tried on every column).
    ``record_sha256``: hash the file once as it is written and record the hash next to it
    (:func:`write_sha256_record`), for the jobs that read it (:func:`sha256_recorded`).
    """
    meta = dict(table.schema.metadata or {})
    if prov is not None:
        meta[PROVENANCE_KEY.encode()] = canonical_json(prov).encode()
    for k, v in (metadata or {}).items():
        meta[k.encode()] = v.encode()
    table = table.replace_schema_metadata(meta)
    path = Path(path)
    digest = None
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, **(parquet or {}))
        if record_sha256:
            digest = sha256_file(tmp)  # the same bytes the rename puts in place
    if record_sha256:
        # the identity is taken after the rename (which updates the status-change time)
        write_sha256_record(path, digest)
    return path


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """All key-value metadata of a Parquet file, decoded (pandas' own key left out)."""
    path = Path(path)
    _check_parquet(path)
    md = pq.read_schema(path).metadata or {}
    return {k.decode(): v.decode() for k, v in md.items() if k != b"pandas"}


def read_provenance(path: str | os.PathLike) -> dict | None:
    md = read_metadata(path)
    return json.loads(md[PROVENANCE_KEY]) if PROVENANCE_KEY in md else None


def _check_parquet(path: Path) -> None:
    if not path.exists():
        raise InputFileError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise InputFileError(f"{path}: file is empty (0 bytes)")
    with open(path, "rb") as fh:
        head = fh.read(4)
        fh.seek(-4, os.SEEK_END)
        tail = fh.read(4)
    if head != b"PAR1" or tail != b"PAR1":
        raise InputFileError(f"{path}: not a Parquet file (expected the 'PAR1' magic bytes at start and end)")


def read_parquet(path: str | os.PathLike, columns: list[str] | None = None) -> pd.DataFrame:
    path = Path(path)
    _check_parquet(path)
    return pd.read_parquet(path, columns=columns)


def write_trial(td, path: str | os.PathLike, *, prov: dict | None = None) -> Path:
    """Write a :class:`~clusterhte.data.trial.TrialData` with its roles in the metadata."""
    return write_parquet(td.frame, path, prov=prov, metadata=td.metadata())


def read_trial(path: str | os.PathLike, **validate_kw):
    """Read a table written by :func:`write_trial` back into a validated TrialData."""
    from clusterhte.data.trial import TrialData
    return TrialData.from_frame(read_parquet(path), read_metadata(path), name=str(path), **validate_kw)
