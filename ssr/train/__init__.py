"""Training machinery that any network uses (docs/architecture.md §2.1).

The epoch loop and evaluation (:mod:`~ssr.train.loop`), the epoch driver of search and
retraining (:mod:`~ssr.train.epochs`), the losses (:mod:`~ssr.train.loss`: the class-weighted CE
every step uses, and the SSR and FLOPs terms of docs/method.md §4), Adam and the poly schedule
(:mod:`~ssr.train.optim`), precision and the optimiser step (:mod:`~ssr.train.precision`),
devices (:mod:`~ssr.train.device`), checkpoints (:mod:`~ssr.train.checkpoint`), divergence
checks (:mod:`~ssr.train.finite`) and mIoU (:mod:`~ssr.train.metrics`).

May import :mod:`ssr.data`, :mod:`ssr.config` and :mod:`ssr.files` only.
"""
