"""Which trials run, and for how long (docs/architecture.md §2.2).

Multi-objective ASHA (:mod:`~sweeps.schedule.moasha`), Optuna told only final records
(:mod:`~sweeps.schedule.searchers`) and the planner's cost of a sweep before it runs
(:mod:`~sweeps.schedule.plan`).

May import :mod:`sweeps.tracking`, :mod:`sweeps.record`, :mod:`sweeps.runtime`,
:mod:`sweeps.contract`, :mod:`ssr` and :mod:`analysis`.
"""
