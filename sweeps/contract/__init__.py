"""What a trial and the driver agree on (docs/architecture.md §3, §4).

The protocol's names: report keys, record fields, statuses, trial folders
(:mod:`~sweeps.contract.protocol`), and the sweep's parameters: a point of its space as a
PipelineConfig, a trial's Tune config resolved once (:mod:`~sweeps.contract.params`).

May import :mod:`ssr` and :mod:`analysis`; nothing else of :mod:`sweeps`.
"""
