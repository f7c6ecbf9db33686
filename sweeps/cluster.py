"""Ray for a sweep: the process environment, joining or starting Ray, checking it fits, shutdown.

``--cluster``/``--address`` join a running cluster (an address is probed over TCP first, so a
wrong one fails in seconds); otherwise a local instance starts on this machine's CPUs. Either
way the largest node must hold one trial's resources, or the sweep stops before it starts.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from collections.abc import Mapping
from typing import Any

from ssr.config import ConfigError

#: Process environment the driver sets (unless already set) before Ray or Tune start.
RAY_ENV: Mapping[str, str] = {
    "RAY_AUTH_MODE": "disabled",
    "RAY_USAGE_STATS_ENABLED": "0",
    # NOTE: Tune's default TensorBoard logger warns on every text field of the record; the JSON
    # and CSV loggers are added explicitly (sweeps.driver).
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",
    # NOTE: CheckpointConfig(num_to_keep=1) forces an experiment snapshot per checkpoint (what a
    # resume needs); Tune warns about it every time.
    "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
}
#: Node IP of a local instance. NOTE: Ray rewrites 127.0.0.1 to the routable IP (docs/stack.md §3).
LOCAL_NODE_IP = "127.0.0.2"


class Unreachable(RuntimeError):
    """A service the sweep needs (Ray cluster, tracking store) cannot be reached."""


def set_environment(env: Mapping[str, str]) -> None:
    """Set each variable of ``env`` that the user has not set (``os.environ.setdefault``)."""
    for key, value in env.items():
        os.environ.setdefault(key, value)


def tcp_probe(address: str, timeout: float = 3.0) -> None:
    """Raise :class:`Unreachable` unless something listens at ``[ray://]host:port``."""
    host, _, port = address.rpartition(":")
    host = host.removeprefix("ray://")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            return
    except (OSError, ValueError) as exc:
        raise Unreachable(
            f"Ray cluster at {address} is unreachable ({exc}); start it with `ray start --head` "
            "or check --address"
        ) from None


def _loopback_ok(ip: str) -> bool:
    try:
        with socket.socket() as s:
            s.bind((ip, 0))
        return True
    except OSError:
        return False


def start_ray(address: str | None, cpus_per_trial: float, gpus_per_trial: float) -> str:
    """Join the cluster at ``address`` (``auto``: the one on this machine) or start a local one.

    Returns the address joined (``local`` for a new instance). Raises :class:`Unreachable` when
    Ray cannot be reached and ConfigError when no node can hold one trial.
    """
    import ray

    try:
        if address:
            if address != "auto":
                tcp_probe(address)
            ray.init(address=address, logging_level=logging.WARNING, log_to_driver=True)
        else:
            kw: dict[str, Any] = {}
            if _loopback_ok(LOCAL_NODE_IP):
                kw["_node_ip_address"] = LOCAL_NODE_IP
            ray.init(
                address="local",
                num_cpus=os.cpu_count() or 1,
                include_dashboard=False,
                object_store_memory=512 * 1024**2,
                logging_level=logging.WARNING,
                **kw,
            )
    except Unreachable:
        raise
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise Unreachable(f"cannot connect to Ray ({address or 'local'}): {exc}") from None
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    max_cpu = max((n["Resources"].get("CPU", 0) for n in nodes), default=0)
    max_gpu = max((n["Resources"].get("GPU", 0) for n in nodes), default=0)
    if cpus_per_trial > max_cpu or (gpus_per_trial > 0 and gpus_per_trial > max_gpu):
        ray.shutdown()
        raise ConfigError(
            f"resources: a trial needs {cpus_per_trial} CPU and {gpus_per_trial} GPU on one "
            f"node, but the largest node has {max_cpu} CPU and {max_gpu} GPU"
        )
    return address or "local"


def shutdown_ray() -> None:
    """Disconnect from (or stop the local) Ray if this process started it; else nothing."""
    if "ray" in sys.modules:
        import ray

        if ray.is_initialized():
            ray.shutdown()
