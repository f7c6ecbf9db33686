"""Sweeps: SSR searches run as a Ray Tune sweep (Optuna, ASHA), tracked in MLflow.

The orchestration half of the project (design.md §1): the only package that imports Ray (and
Optuna through Ray's searcher). ``python sweeps/run.py`` is the entry point; :mod:`sweeps.spec`
reads and validates a sweep definition, :mod:`sweeps.trial` is the Ray trainable,
:mod:`sweeps.tracking` writes MLflow runs from the driver, :mod:`sweeps.results` keeps
``results.parquet`` and :mod:`sweeps.archplot` draws a derived architecture.

Nothing heavy is imported here: ``import sweeps`` loads neither ray, mlflow nor torch.
"""

__all__: list[str] = []
