"""Where and on what a sweep runs: its run folder and its Ray cluster (docs/architecture.md §2.2).

Run folders, names and what a resume reads back (:mod:`~sweeps.runtime.rundir`), the run's
files kept in object storage (:mod:`~sweeps.runtime.mirror`), starting or joining Ray
(:mod:`~sweeps.runtime.cluster`), the watchdog of a local Ray instance
(:mod:`~sweeps.runtime.reaper`), driver interrupts (:mod:`~sweeps.runtime.interrupts`),
trials that outlive a lost node (:mod:`~sweeps.runtime.preemption`) and restoring a Tune
experiment (:mod:`~sweeps.runtime.restore`).

May import :mod:`sweeps.contract`, :mod:`ssr` and :mod:`analysis`.
"""
