"""What a sweep records beside MLflow (docs/architecture.md §2.2).

The results table (:mod:`~sweeps.record.results`), its repair when a run resumes
(:mod:`~sweeps.record.recovery`) and the drawing of a derived architecture
(:mod:`~sweeps.record.archplot`).

May import :mod:`sweeps.runtime`, :mod:`sweeps.contract`, :mod:`ssr` and :mod:`analysis`.
"""
