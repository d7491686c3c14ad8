"""Walk the provenance chain of a workflow output back to the raw inputs, re-hashing each input.

Every Parquet file written by the workflow records the sha256 of each of its inputs at the time it
was made (:mod:`clusterhte.io`). The audit re-hashes those inputs now: an input that changed or
disappeared after the output was made means the output no longer reflects its inputs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from clusterhte import io


@dataclass
class AuditReport:
    lines: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    files: int = 0

    @property
    def ok(self) -> bool:
        return not (self.changed or self.missing)


def audit(path: str | Path, base: str | Path | None = None, max_depth: int = 50) -> AuditReport:
    """Audit ``path`` and, recursively, every Parquet input with provenance of its own.

    Relative input paths are resolved against ``base`` (default: the current directory, which is
    where Snakemake ran).
    """
    base = Path(base) if base is not None else Path.cwd()
    rep = AuditReport()
    seen: set[str] = set()

    def resolve(p: str) -> Path:
        q = Path(p)
        return q if q.is_absolute() else base / q

    def walk(p: Path, label: str, depth: int, prefix: str) -> None:
        rep.files += 1
        prov = io.read_provenance(p) if p.suffix == ".parquet" and p.exists() else None
        if prov is None:
            rep.lines.append(f"{prefix}{label}  (raw input)")
            return
        pk = prov.get("package", {})
        dirty = " dirty" if pk.get("git_dirty") else ""
        commit = (pk.get("git_commit") or "no-git")[:10]
        rep.lines.append(f"{prefix}{label}  [rule {prov.get('rule')}; clusterhte {pk.get('version')} "
                         f"{commit}{dirty}; config {str(prov.get('config_hash'))[:12]}; "
                         f"seed {prov.get('seed')}; {prov.get('created_utc')}]")
        if depth >= max_depth:
            return
        for inp in prov.get("inputs", []):
            ip = resolve(inp["path"])
            mark = ""
            if not ip.exists():
                rep.missing.append(inp["path"])
                mark = "  !! MISSING"
            elif inp.get("sha256") and io.sha256_file(ip) != inp["sha256"]:
                rep.changed.append(inp["path"])
                mark = "  !! CHANGED since the output was made"
            key = str(ip.resolve()) if ip.exists() else str(ip)
            child_prefix = prefix + "    "
            if mark:
                rep.lines.append(f"{child_prefix}{inp['path']}{mark}")
            elif key in seen:
                rep.lines.append(f"{child_prefix}{inp['path']}  (verified; chain shown above)")
            else:
                seen.add(key)
                walk(ip, inp["path"], depth + 1, child_prefix)

    p = Path(path)
    if not p.exists():
        raise io.InputFileError(f"{p}: file not found")
    walk(p, str(path), 0, "")
    return rep
