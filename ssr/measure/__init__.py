"""Measurement (docs/architecture.md §5): what a network costs on this machine.

The one latency procedure (:mod:`~ssr.measure.bench`), interleaved measurement of several
networks (:mod:`~ssr.measure.interleave`), what a figure ran on (:mod:`~ssr.measure.host`), the
rate the machine reaches (:mod:`~ssr.measure.roofline`) and the memory a network needs
(:mod:`~ssr.measure.footprint`).

May import :mod:`ssr.deploy` and the layers below it (``method``, ``train``, ``data``,
``config``, ``files``).
"""
