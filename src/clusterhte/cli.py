"""The ``clusterhte`` command: list methods, audit a workflow output.

Examples::

    clusterhte methods
    clusterhte audit results/tables/otr_summary.parquet
"""

from __future__ import annotations

import argparse
import sys

EXIT_USAGE = 2


def _cmd_methods(args) -> int:
    from clusterhte import methods

    rows = []
    for name, info in methods.REGISTRY.items():
        try:
            cls = methods.get(name)
            rows.append((name, cls.label or name, info.design, "yes" if cls.has_intervals else "no", cls.library))
        except ImportError as e:  # a method whose library is not installed
            rows.append((name, name, info.design, "?", f"unavailable: {e}"))
    head = ("method", "label", "design", "intervals", "library")
    widths = [max(len(str(r[i])) for r in rows + [head]) for i in range(5)]
    for r in [head] + rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip())
    return 0


def _cmd_audit(args) -> int:
    from clusterhte import io
    from clusterhte.audit import audit

    try:
        rep = audit(args.file, base=args.base)
    except io.InputFileError as e:
        print(f"clusterhte audit: {e}", file=sys.stderr)
        return EXIT_USAGE
    print("\n".join(rep.lines))
    print(f"\n{rep.files} file(s) in the chain.")
    if rep.ok:
        print("All inputs match the hashes recorded when each output was made.")
        return 0
    for f in rep.changed:
        print(f"CHANGED: {f} differs from the version its output was made from", file=sys.stderr)
    for f in rep.missing:
        print(f"MISSING: {f} no longer exists", file=sys.stderr)
    return 1


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="clusterhte",
        description="Treatment-effect heterogeneity in clustered randomized trials.",
        epilog="Example: clusterhte audit results/tables/otr_summary.parquet",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("methods", help="table of estimators: design, intervals, library")
    s.set_defaults(func=_cmd_methods)
    s = sub.add_parser("audit", help="print the provenance chain of a workflow output and re-check input hashes",
                       epilog="Exit code 0: every input unchanged; 1: an input changed or is missing; 2: bad usage.")
    s.add_argument("file", help="a Parquet file written by the workflow")
    s.add_argument("--base", default=None, help="directory the workflow ran in (default: current directory)")
    s.set_defaults(func=_cmd_audit)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
