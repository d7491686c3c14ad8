"""Executed report notebooks: run a parameterised notebook with papermill, convert it to HTML.

The executed notebook is kept next to the HTML (``.ipynb``) so a reader can rerun it. A cell that
raises stops the job (papermill raises), and an output of type ``error`` anywhere in the executed
notebook is refused as well, so a report that looks finished never hides a failed cell.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from clusterhte.io import atomic_path


class ReportError(RuntimeError):
    """A report notebook failed; the message names the notebook and the failing cell."""


def error_cells(nb) -> list[int]:
    """Indices of code cells with an error output."""
    return [i for i, c in enumerate(nb.cells) if c.get("cell_type") == "code"
            and any(o.get("output_type") == "error" for o in c.get("outputs", []))]


def render(template: str | os.PathLike, html: str | os.PathLike, parameters: dict,
           notebook: str | os.PathLike | None = None, cwd: str | os.PathLike = ".",
           kernel: str = "python3", timeout: int = 1800) -> Path:
    """Execute ``template`` with ``parameters`` in ``cwd``; write the HTML (and executed notebook)."""
    import nbformat
    import papermill as pm
    from nbconvert import HTMLExporter

    html = Path(html)
    nb_out = Path(notebook) if notebook else html.with_suffix(".ipynb")
    with atomic_path(nb_out) as tmp_nb:
        try:
            with warnings.catch_warnings():
                # the notebook is written to a temporary name first (renamed when complete)
                warnings.filterwarnings("ignore", message="The specified file", category=UserWarning)
                pm.execute_notebook(str(template), str(tmp_nb), parameters=parameters, cwd=str(cwd),
                                    kernel_name=kernel, progress_bar=False, execution_timeout=timeout,
                                    log_output=False)
        except pm.PapermillExecutionError as e:
            raise ReportError(f"{template}: cell {e.exec_count} raised {e.ename}: {e.evalue}") from None
        nb = nbformat.read(str(tmp_nb), as_version=4)
        bad = error_cells(nb)
        if bad:
            raise ReportError(f"{template}: error output in cell(s) {bad}")
    exporter = HTMLExporter()
    body, _ = exporter.from_notebook_node(nb)
    with atomic_path(html) as tmp:
        Path(tmp).write_text(body, encoding="utf-8")
    return html
