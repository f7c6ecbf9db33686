"""Measurement (docs/architecture.md §5): what a network costs on this machine.

The one latency procedure (:mod:`~ssr.measure.bench`), interleaved measurement of several
networks (:mod:`~ssr.measure.interleave`), what a figure ran on (:mod:`~ssr.measure.host`), the
rate the machine reaches (:mod:`~ssr.measure.roofline`), the memory a network needs
(:mod:`~ssr.measure.footprint`), latency tables (:mod:`~ssr.measure.latency`) and measurements
against them with the machine's drift (:mod:`~ssr.measure.drift`).

May import :mod:`ssr.deploy` and the layers below it (``method``, ``train``, ``data``,
``config``, ``files``).
"""
