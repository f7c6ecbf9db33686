"""The SSR method (docs/method.md): what a network of the space is, and the search for one.

Genotypes (:mod:`~ssr.method.genotype`), the building blocks (:mod:`~ssr.method.ops`), the
derived network (:mod:`~ssr.method.network`), the supernet (:mod:`~ssr.method.supernet`), its
parameters and MACs (:mod:`~ssr.method.complexity`), shrinking (:mod:`~ssr.method.shrink`),
derivation (:mod:`~ssr.method.derive`), the discretization gap (:mod:`~ssr.method.gap`), one
search iteration (:mod:`~ssr.method.search_step`) and the search (:mod:`~ssr.method.search`).

May import :mod:`ssr.train` and the layers below it (``data``, ``config``, ``files``).
"""
