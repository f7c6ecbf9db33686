"""SSR: Solution Space Regularization NAS for real-time semantic segmentation (Ye et al., IJCV 2022).

The library half of the project: genotypes, derived networks, the supernet and its search,
retraining, evaluation and measurement. It depends on torch only; orchestration (Ray Tune,
MLflow, Optuna) lives in ``sweeps/`` and never leaks in here.

Layers, from the bottom up (a subpackage imports only those below it, ``tests/test_layers.py``):
files < config < data < train < method < deploy < measure < run < commands < cli. ``files`` holds
atomic writes; ``config`` the configuration, its YAML and the errors; ``train`` the training
machinery; ``method`` the SSR method and its search; ``deploy`` the exact inference forms;
``measure`` latency, machine and memory; ``run`` the end-to-end runs (retraining, the pipeline);
``commands`` and ``cli`` the command line.
"""

__version__ = "0.1.0"
