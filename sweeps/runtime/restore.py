"""Resuming a Tune experiment with this invocation's callbacks: the one shim on Ray internals.

``Tuner.restore`` (Ray 2.60: ``path, trainable, resume_unfinished, resume_errored,
restart_errored, param_space, storage_filesystem``) takes no ``RunConfig``: it reuses the
callbacks pickled with the experiment. Those carry the settings of the invocation that started
the sweep (``--quiet``, a tracking URI given again with ``--tracking-uri``) and are copies the
driver does not hold. No public API replaces them, so :func:`replace_callbacks` sets them on the
restored tuner's run config through Ray's private ``Tuner._local_tuner``. It says when that
attribute is gone (the pickled callbacks then run, which still logs everything), and
``tests/sweeps/test_restore.py`` fails on a Ray release that changes it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)


def replace_callbacks(tuner: Any, callbacks: list[Any]) -> bool:
    """Make a restored ``tuner`` run ``callbacks``; False (and a warning) if Ray moved them."""
    inner = getattr(tuner, "_local_tuner", None)  # NOTE: private; None under Ray Client too
    get_run_config = getattr(inner, "get_run_config", None)
    run_config = get_run_config() if callable(get_run_config) else None
    if run_config is None or not hasattr(run_config, "callbacks"):
        log.warning(
            "this Ray version does not expose a restored Tuner's run config: the resumed sweep "
            "uses the callbacks saved with the experiment (settings of its first invocation)"
        )
        return False
    run_config.callbacks = callbacks
    return True


def restore_tuner(
    path: str,
    trainable: Callable[..., Any] | Any,
    callbacks: list[Any],
    resume_errored: bool = False,
) -> Any:
    """``Tuner.restore`` of the experiment at ``path`` (unfinished trials resume, errored ones
    stay as they are unless ``resume_errored``), running ``callbacks``."""
    from ray import tune

    tuner = tune.Tuner.restore(
        path, trainable=trainable, resume_unfinished=True, resume_errored=resume_errored
    )
    replace_callbacks(tuner, callbacks)
    return tuner
