"""The end-to-end runs a command or a sweep trial starts (docs/architecture.md §3).

Retraining a derived network (:mod:`~ssr.run.retrain`), one trial's search -> derive ->
retrain -> measure (:mod:`~ssr.run.pipeline`) and what that trial costs on a device
(:mod:`~ssr.run.trialcost`).

May import every other subpackage except :mod:`ssr.commands`.
"""
