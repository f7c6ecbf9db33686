"""ssr is the algorithm library: importing it (or building its CLI) loads no orchestration."""

import subprocess
import sys


def test_ssr_imports_neither_ray_nor_mlflow_nor_optuna() -> None:
    code = (
        "import sys, ssr, ssr.method.search, ssr.run.pipeline, ssr.measure.bench, ssr.cli as m; m.build_parser();"
        "bad = sorted(n for n in ('ray', 'mlflow', 'optuna') if n in sys.modules);"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
