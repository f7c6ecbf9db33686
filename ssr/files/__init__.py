"""Writing files so that no reader ever sees half of one (docs/architecture.md §3).

Atomic writes and the one NaN policy of every JSON file the project writes
(:mod:`~ssr.files.atomic`). Standard library only, so that any part of the project can import
it without loading YAML, numpy or torch: it is the bottom layer and imports nothing of ``ssr``.
"""
