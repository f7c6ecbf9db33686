"""Sweeps: SSR searches run as a Ray Tune sweep (Optuna, ASHA), tracked in MLflow.

The orchestration half of the project (docs/architecture.md §1): the only package that imports Ray
(and Optuna through Ray's searcher). ``python sweeps/run.py`` is the entry point. Its modules:

- :mod:`sweeps.run`: the command line and the order of work; :mod:`sweeps.runtime.cluster`: Ray start-up;
  :mod:`sweeps.runtime.rundir`: run folders, names and the files a resume reads back;
- :mod:`sweeps.define.definition`: the typed sweep file and the validated :class:`Sweep`;
  :mod:`sweeps.define.spec`: reading and validating a sweep file; :mod:`sweeps.contract.params`: the sweep's
  parameters and a point of the space -> PipelineConfig; :mod:`sweeps.schedule.searchers`: Optuna told
  final records only; :mod:`sweeps.schedule.moasha`: multi-objective ASHA;
- :mod:`sweeps.trial`: the Ray trainable; :mod:`sweeps.contract.protocol`: the names the trial, the
  results, the tracking and the searchers share (a leaf module);
- :mod:`sweeps.driver`: fit, missing rows, exclusive re-measurement, sync, report;
  :mod:`sweeps.runtime.restore`: resuming a Tune experiment; :mod:`sweeps.record.results`: ``results.parquet``;
  :mod:`sweeps.tracking`: the MLflow runs; :mod:`sweeps.record.archplot`: a derived architecture drawn.

Nothing heavy is imported here: ``import sweeps`` loads neither ray, mlflow nor torch.

Layers, from the bottom up (a subpackage imports only those below it, ``tests/test_layers.py``):
contract < runtime < record < tracking < schedule < define < progress, trial, driver, run.
``contract``: what trial and driver agree on; ``runtime``: run folder and cluster; ``record``: the
results table; ``tracking``: MLflow; ``schedule``: MO-ASHA, Optuna and the planner; ``define``: the
sweep file as values.
"""

__all__: list[str] = []
