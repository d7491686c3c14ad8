"""Figure functions: each takes tidy DataFrames and returns a matplotlib Figure."""

from __future__ import annotations

from pathlib import Path


def save_figure(fig, paths) -> None:
    """Save ``fig`` to every path (format from the suffix), atomically, then close it."""
    import matplotlib.pyplot as plt

    from clusterhte.io import atomic_path

    for path in ([paths] if isinstance(paths, (str, Path)) else paths):
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=Path(path).suffix.lstrip("."), bbox_inches="tight", dpi=150)
    plt.close(fig)
