"""Suite-wide settings: one compute thread per process.

The machines this suite runs on have two cores, and several tests start other processes (Ray
workers, CLI subprocesses, an MLflow server). Two OpenMP threads per process on two shared
cores make every process wait on spinning barriers (measured: a search epoch went from 1.1 s
to 50 s), so every test process computes with one thread. Set before torch is imported; the
environment variable reaches the subprocesses the tests start.
"""

import os
import sys

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("RAY_AUTH_MODE", "token")  # as users run Ray (sweeps/runtime/cluster.py)
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


@pytest.fixture(autouse=True)
def _drain_study_writers():
    """After each test, drain the Optuna study writers its searchers started
    (sweeps/schedule/study_mirror.py): the driver does it when Tune's run returns; a test that
    builds a searcher by hand would leave an idle writer process per searcher until the end."""
    yield
    mirror = sys.modules.get("sweeps.schedule.study_mirror")
    if mirror is not None:
        mirror.close_all()
