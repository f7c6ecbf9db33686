"""``python -m analysis.notebook``: run ``notebooks/pareto.ipynb`` headless with this Python.

The README's install brings nbclient, nbformat and ipykernel, not Jupyter's command line
(``jupyter nbconvert`` is not there), so this is the command the notebook's first cell gives.
The kernel is this interpreter, pinned through a temporary kernelspec (``JUPYTER_PATH`` is
searched first), so a user-level ``python3`` kernelspec pointing at another Python cannot
interfere. The executed copy is written next to the sweep's report
(``<run folder>/report/pareto.ipynb``) unless ``--out`` says otherwise; the source notebook is
left untouched. Bad input or a failing cell: one line on stderr, exit status 2 or 1.

Usage::

    python -m analysis.notebook --results runs/<name>/results.parquet [--objectives miou,fps]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from analysis.errors import AnalysisInputError
from analysis.load import find_results

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "pareto.ipynb"


@contextmanager
def _environment(values: Mapping[str, str | None]) -> Iterator[None]:
    """Set (or, for None, remove) environment variables for the kernel, then restore them."""
    old = {k: os.environ.get(k) for k in values}
    try:
        for key, value in values.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        yield
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _kernelspec(folder: Path) -> str:
    """A ``python3`` kernelspec for this interpreter under ``folder``; returns the JUPYTER_PATH."""
    spec = folder / "kernels" / "python3"
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    kernel = {"argv": argv, "display_name": "Python 3", "language": "python"}
    (spec / "kernel.json").write_text(json.dumps(kernel), encoding="utf-8")
    return os.pathsep.join(p for p in (str(folder), os.environ.get("JUPYTER_PATH")) if p)


def paths(
    results: str | Path | None, out: str | Path | None, notebook: str | Path = NOTEBOOK
) -> tuple[Path, Path]:
    """The results file to read and the executed notebook to write (defaults resolved)."""
    results = Path(results) if results is not None else find_results(ROOT)
    if not results.exists():
        raise AnalysisInputError(f"no results file at {str(results)!r}")
    run_dir = results if results.is_dir() else results.parent
    return results, Path(out) if out is not None else run_dir / "report" / Path(notebook).name


def run_notebook(
    results: str | Path | None = None,
    objectives: str | None = None,
    out: str | Path | None = None,
    notebook: str | Path = NOTEBOOK,
    timeout: int = 600,
) -> Path:
    """Execute ``notebook`` on ``results`` (default: the newest ``runs/**/results.parquet``) and
    write the executed copy to ``out``; returns its path. A failing cell raises nbclient's
    ``CellExecutionError`` after the partial notebook is written."""
    try:
        import nbclient
        import nbformat
    except ImportError:
        raise AnalysisInputError(
            "running the notebook needs nbclient, nbformat and ipykernel: "
            "pip install -r requirements.txt"
        ) from None
    source = Path(notebook)
    if not source.is_file():
        raise AnalysisInputError(f"no notebook at {str(source)!r}")
    results, target = paths(results, out, source)
    target.parent.mkdir(parents=True, exist_ok=True)
    nb = nbformat.read(source, as_version=4)
    with tempfile.TemporaryDirectory(prefix="ssr-kernel-") as tmp:
        env = {
            "SSR_RESULTS": str(results.resolve()),
            "SSR_OBJECTIVES": objectives,
            "JUPYTER_PATH": _kernelspec(Path(tmp)),
        }
        # NOTE: IPC (unix sockets in the temporary folder) instead of loopback TCP: the kernel
        # then has no plain-text network port to warn about.
        from traitlets.config import Config

        ipc = Config({"KernelManager": {"transport": "ipc", "ip": str(Path(tmp) / "kernel")}})
        client = nbclient.NotebookClient(
            nb,
            config=ipc,
            kernel_name="python3",
            timeout=timeout,
            resources={"metadata": {"path": str(source.parent.resolve())}},
        )
        try:
            with _environment(env):
                client.execute()
        finally:
            nbformat.write(nb, target)
    return target


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m analysis.notebook",
        description="Run notebooks/pareto.ipynb headless (nbclient + ipykernel, this Python).",
    )
    parser.add_argument(
        "--results",
        type=Path,
        help="a sweep's results.parquet or run folder (default: newest runs/**/results.parquet)",
    )
    parser.add_argument(
        "--objectives", help="as for analysis.report (default: the ones the sweep recorded)"
    )
    parser.add_argument(
        "--out", type=Path, help="executed notebook (default: <run folder>/report/pareto.ipynb)"
    )
    parser.add_argument("--notebook", type=Path, default=NOTEBOOK, help="notebook to run")
    args = parser.parse_args(argv)
    try:
        from nbclient.exceptions import CellExecutionError
    except ImportError:
        CellExecutionError = RuntimeError
    try:
        target = run_notebook(args.results, args.objectives, args.out, args.notebook)
    except AnalysisInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except CellExecutionError as exc:
        line = (f"{exc.ename}: {exc.evalue}".splitlines() or [""])[0]
        out = paths(args.results, args.out, args.notebook)[1]
        print(f"error: a notebook cell failed ({line}); see {out}", file=sys.stderr)
        return 1
    print(f"executed notebook written to {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
