"""SSR: Solution Space Regularization NAS for real-time semantic segmentation (Ye et al., IJCV 2022).

The library half of the project: genotypes, derived networks, the supernet and its search,
retraining, evaluation and measurement. It depends on torch only; orchestration (Ray Tune,
MLflow, Optuna) lives in ``sweeps/`` and never leaks in here.
"""

__version__ = "0.1.0"
