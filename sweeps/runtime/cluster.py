"""Ray for a sweep: the process environment, authentication, joining or starting Ray, shutdown.

``--cluster``/``--address`` join a running cluster (an address is probed over TCP first, so a
wrong one fails in seconds); otherwise a local instance starts on this machine's CPUs, its node
address on loopback (``127.0.0.2``), its dashboard off. Either way the largest node must hold
one trial's resources, or the sweep stops before it starts.

Authentication (docs/stack.md §3): Ray 2.60's token mode is the default. :func:`configure_auth`
sets ``RAY_AUTH_MODE=token`` for the driver and every Ray process it starts, and makes sure the
token exists where Ray keeps it (``~/.ray/auth_token``, created readable by its owner only;
``RAY_AUTH_TOKEN`` or ``RAY_AUTH_TOKEN_PATH`` name another). Ray's gRPC services (GCS, raylets,
workers) listen on every interface whatever the node address, so the token is what keeps others
out. ``--insecure``, or the user's own ``RAY_AUTH_MODE=disabled``, turns it off, with a warning.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import stat
import sys
from collections.abc import Mapping, MutableMapping
from pathlib import Path
from typing import Any

from ssr.config import ConfigError

log = logging.getLogger("sweeps")

#: Process environment the driver sets (unless already set) before Ray or Tune start.
RAY_ENV: Mapping[str, str] = {
    "RAY_USAGE_STATS_ENABLED": "0",
    # NOTE: Tune's default TensorBoard logger warns on every text field of the record; the JSON
    # and CSV loggers are added explicitly (sweeps.driver).
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",
    # NOTE: CheckpointConfig(num_to_keep=1) forces an experiment snapshot per checkpoint (what a
    # resume needs); Tune warns about it every time.
    "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
    # NOTE: the driver handles SIGINT itself (sweeps.runtime.interrupts), so that it knows an interrupt
    # from a failed trial; it still stops Tune the graceful way.
    "TUNE_DISABLE_SIGINT_HANDLER": "1",
    # NOTE: a failed trial is one line of the progress and its row; Tune would log the whole
    # traceback (it stays in the trial's error.txt and the child run's error.txt)
    "TUNE_PRINT_ALL_TRIAL_ERRORS": "0",
}
#: Node IP of a local instance. NOTE: Ray rewrites 127.0.0.1 to the routable IP (docs/stack.md §3).
LOCAL_NODE_IP = "127.0.0.2"
#: Where Ray 2.60 keeps the cluster token unless RAY_AUTH_TOKEN(_PATH) says otherwise.
TOKEN_PATH = Path("~/.ray/auth_token")
#: Seconds a driver tries to reach the GCS of a cluster it joins (Ray's default: 20 attempts).
JOIN_WAIT_S = "6"


class Unreachable(RuntimeError):
    """A service the sweep needs (Ray cluster, tracking store) cannot be reached."""


def set_environment(env: Mapping[str, str]) -> None:
    """Set each variable of ``env`` that the user has not set (``os.environ.setdefault``)."""
    for key, value in env.items():
        os.environ.setdefault(key, value)


def insecure_warning(why: str) -> str:
    """The warning printed when Ray runs without authentication."""
    return (
        f"Ray token authentication is OFF ({why}): anyone who can reach this machine's Ray "
        "ports (GCS, raylet, workers listen on every interface) can run code as you on every "
        "node and read the storage folder; use it only on a network you trust"
    )


def ensure_token(env: Mapping[str, str] = os.environ) -> Path | None:
    """Make sure Ray finds a token: ``RAY_AUTH_TOKEN``, an existing ``RAY_AUTH_TOKEN_PATH``, or
    ``~/.ray/auth_token`` (created with 256 random bits, mode 0600, when missing; tightened to
    0600 when others may read it). Returns the token file (None for RAY_AUTH_TOKEN)."""
    if env.get("RAY_AUTH_TOKEN"):
        return None
    if env.get("RAY_AUTH_TOKEN_PATH"):
        path = Path(env["RAY_AUTH_TOKEN_PATH"]).expanduser()
        if not path.is_file() or not path.read_text().strip():
            raise ConfigError(f"RAY_AUTH_TOKEN_PATH={path}: no token there")
        return path
    path = TOKEN_PATH.expanduser()
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not path.is_file():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_hex(32))  # NOTE: what `ray get-auth-token --generate` writes
            log.debug("generated the Ray authentication token %s", path)
        mode = path.stat()
        if mode.st_uid == os.getuid() and mode.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            path.chmod(0o600)  # NOTE: Ray writes it with the umask (often world-readable)
    except FileExistsError:  # another driver wrote it meanwhile
        pass
    except OSError as exc:
        raise ConfigError(f"Ray authentication token {path}: {exc}") from None
    return path


def configure_auth(insecure: bool, env: MutableMapping[str, str] = os.environ) -> str:
    """Set ``RAY_AUTH_MODE`` for the driver and the Ray processes it starts; returns the mode.

    Token mode unless ``insecure`` (``--insecure``) or the user's ``RAY_AUTH_MODE=disabled``
    (both warn). Any other value of RAY_AUTH_MODE is a ConfigError.
    """
    mode = env.get("RAY_AUTH_MODE", "").strip().lower()
    if insecure:
        env["RAY_AUTH_MODE"] = "disabled"
        log.warning(insecure_warning("--insecure"))
        return "disabled"
    if mode == "disabled":
        log.warning(insecure_warning("RAY_AUTH_MODE=disabled in the environment"))
        return "disabled"
    if mode not in ("", "token"):
        raise ConfigError(f"RAY_AUTH_MODE={mode!r}: use token (the default) or --insecure")
    env["RAY_AUTH_MODE"] = "token"
    ensure_token(env)
    if env is os.environ and "ray._raylet" in sys.modules:
        # NOTE: Ray's C++ config reads RAY_AUTH_MODE when ray is imported; refresh it as Ray's
        # own token setup does, or this driver would not send the token its GCS requires
        from ray._raylet import Config

        Config.initialize("")
    return "token"


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


def _why(exc: BaseException) -> str:
    """The reason Ray gives, with its cause (an AuthenticationError hides behind ConnectionError)."""
    cause = exc.__cause__ or exc.__context__
    if cause is not None and type(cause).__name__ == "AuthenticationError":
        mode = os.environ.get("RAY_AUTH_MODE", "")
        return (
            f"the cluster refused this driver's authentication (RAY_AUTH_MODE={mode}): start "
            "every node and the driver with RAY_AUTH_MODE=token and the same token "
            f"({TOKEN_PATH} or RAY_AUTH_TOKEN), or pass --insecure for a cluster without "
            "authentication"
        )
    text = " ".join(str(exc).split())
    for cut in (" Last connection error", "Traceback"):  # Ray appends tracebacks to messages
        text = text.split(cut, 1)[0]
    return text[:300]


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
            os.environ.setdefault("RAY_gcs_server_port_wait_time_s", JOIN_WAIT_S)
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
    except Exception as exc:  # ConnectionError, RuntimeError, ValueError, AuthenticationError
        raise Unreachable(f"cannot connect to Ray ({address or 'local'}): {_why(exc)}") from None
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
