"""Walk the provenance chain of a workflow output back to the raw inputs, re-hashing each input.

Every Parquet file written by the workflow records the sha256 of each of its inputs at the time it
was made (:mod:`clusterhte.io`). The audit re-hashes those inputs now: an input that changed or
disappeared after the output was made means the output no longer reflects its inputs.

A file without provenance (a raw input, or an output rewritten by another program) cannot be
audited and is reported as such, never as verified. Provenance is data from a file, not an
instruction: the audit re-hashes only regular files inside the workflow directory and the declared
raw-data locations (the shared data folder and the trial sheet's files of the run config, and any
``allow`` folder), never a device or a path elsewhere; control characters in provenance text are
replaced before printing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from clusterhte import io

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def clean(text) -> str:
    """``text`` as a string with every control character (ANSI escapes, newlines, NUL) shown as '?'."""
    return _CONTROL.sub("?", str(text))


@dataclass
class AuditReport:
    lines: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unchecked: list[str] = field(default_factory=list)
    no_provenance: bool = False
    files: int = 0

    @property
    def ok(self) -> bool:
        return not (self.changed or self.missing or self.unchecked or self.no_provenance)


def declared_locations(base: Path) -> list[Path]:
    """Raw-data locations declared by the run config in ``base``: ``shared_dir`` and the folders of
    the trial sheet's files (config/config.yaml; unreadable configs declare nothing)."""
    from clusterhte import config as chconfig

    out = []
    cfg_path = base / "config" / "config.yaml"
    if not cfg_path.is_file():
        return out
    try:
        cfg = chconfig.load_yaml(cfg_path)
        shared = cfg.get("shared_dir")
        if shared:
            out.append(base / shared)
        sheet = (cfg.get("trials") or {}).get("sheet")
        if sheet and (base / sheet).is_file():
            df = chconfig.read_sheet(base / sheet)
            out += [(base / p).parent for p in df.get("path", []) if str(p).strip()]
    except Exception:  # noqa: BLE001 - a broken config declares nothing extra
        pass
    return out


def audit(path: str | Path, base: str | Path | None = None, max_depth: int = 50,
          allow: list[str | Path] = ()) -> AuditReport:
    """Audit ``path`` and, recursively, every Parquet input with provenance of its own.

    Relative input paths are resolved against ``base`` (default: the current directory, which is
    where Snakemake ran). Inputs outside ``base``, the declared locations and ``allow``, or that
    are not regular files, are listed as not checked (and make the audit fail).
    """
    base = Path(base) if base is not None else Path.cwd()
    roots = [Path(r).resolve() for r in [base, *declared_locations(base), *allow]]
    rep = AuditReport()
    seen: set[str] = set()

    def resolve(p: str) -> Path:
        q = Path(p)
        return q if q.is_absolute() else base / q

    def permitted(q: Path) -> bool:
        try:
            real = q.resolve()
        except (OSError, RuntimeError):
            return False
        return any(real == r or real.is_relative_to(r) for r in roots)

    def walk(p: Path, label: str, depth: int, prefix: str) -> None:
        rep.files += 1
        prov = io.read_provenance(p) if p.suffix == ".parquet" and p.is_file() else None
        if prov is None:
            rep.lines.append(f"{prefix}{clean(label)}  (raw input)")
            return
        pk = prov.get("package", {}) if isinstance(prov.get("package"), dict) else {}
        dirty = " dirty" if pk.get("git_dirty") else ""
        commit = clean(pk.get("git_commit") or "no-git")[:10]
        rep.lines.append(clean(f"{prefix}{label}  [rule {prov.get('rule')}; clusterhte {pk.get('version')} "
                               f"{commit}{dirty}; config {str(prov.get('config_hash'))[:12]}; "
                               f"seed {prov.get('seed')}; {prov.get('created_utc')}]"))
        if depth >= max_depth:
            return
        for inp in prov.get("inputs", []) or []:
            if not isinstance(inp, dict) or not isinstance(inp.get("path"), str):
                continue
            name = clean(inp["path"])
            ip = resolve(inp["path"])
            child_prefix = prefix + "    "
            if not permitted(ip) or (ip.exists() and not ip.is_file()):
                rep.unchecked.append(name)
                rep.lines.append(f"{child_prefix}{name}  !! NOT CHECKED (not a regular file inside the "
                                 "workflow directory or a declared data location)")
                continue
            mark = ""
            if not ip.exists():
                rep.missing.append(name)
                mark = "  !! MISSING"
            elif inp.get("sha256") and io.sha256_file(ip) != inp["sha256"]:
                rep.changed.append(name)
                mark = "  !! CHANGED since the output was made"
            key = str(ip.resolve()) if ip.exists() else str(ip)
            if mark:
                rep.lines.append(f"{child_prefix}{name}{mark}")
            elif key in seen:
                rep.lines.append(f"{child_prefix}{name}  (verified; chain shown above)")
            else:
                seen.add(key)
                walk(ip, inp["path"], depth + 1, child_prefix)

    p = Path(path)
    if not p.exists():
        raise io.InputFileError(f"{p}: file not found")
    if not p.is_file():
        raise io.InputFileError(f"{p}: not a regular file")
    top = io.read_provenance(p) if p.suffix == ".parquet" else None
    if top is None:
        rep.no_provenance = True
        rep.files = 1
        return rep
    walk(p, str(path), 0, "")
    return rep
