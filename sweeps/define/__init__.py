"""A sweep file as values (docs/architecture.md §2.2).

Its typed top level and the validated :class:`~sweeps.define.definition.Sweep`, which builds the
Tune param space, searcher and scheduler (:mod:`~sweeps.define.definition`), and reading and
checking a file (:mod:`~sweeps.define.spec`).

May import every other subpackage of :mod:`sweeps`, :mod:`ssr` and :mod:`analysis`.
"""
