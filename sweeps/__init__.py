"""Sweeps: SSR searches run as a Ray Tune sweep (Optuna, ASHA), tracked in MLflow.

The orchestration half of the project (docs/architecture.md §1): the only package that imports Ray
(and Optuna through Ray's searcher). ``python sweeps/run.py`` is the entry point. Its modules:

- :mod:`sweeps.run`: the command line and the order of work; :mod:`sweeps.cluster`: Ray start-up;
  :mod:`sweeps.rundir`: run folders, names and the files a resume reads back;
- :mod:`sweeps.definition`: the typed sweep file and the validated :class:`Sweep`;
  :mod:`sweeps.spec`: reading and validating a sweep file; :mod:`sweeps.params`: the sweep's
  parameters and a point of the space -> PipelineConfig; :mod:`sweeps.searchers`: Optuna told
  final records only; :mod:`sweeps.moasha`: multi-objective ASHA;
- :mod:`sweeps.trial`: the Ray trainable; :mod:`sweeps.protocol`: the names the trial, the
  results, the tracking and the searchers share (a leaf module);
- :mod:`sweeps.driver`: fit, missing rows, exclusive re-measurement, sync, report;
  :mod:`sweeps.restore`: resuming a Tune experiment; :mod:`sweeps.results`: ``results.parquet``;
  :mod:`sweeps.tracking`: the MLflow runs; :mod:`sweeps.archplot`: a derived architecture drawn.

Nothing heavy is imported here: ``import sweeps`` loads neither ray, mlflow nor torch.
"""

__all__: list[str] = []
