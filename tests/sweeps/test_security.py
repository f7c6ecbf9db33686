"""Nobody gets in: Ray token authentication by default, private and locked run folders.

The unit tests check the driver's choices (token mode unless ``--insecure`` or the user's own
``RAY_AUTH_MODE=disabled``, the token file kept private, run folders 0700 and locked before
anything is written). The slow test starts the driver's local Ray instance as ``sweeps/run.py``
does and tries its GCS from other processes: without the token, with a wrong one, and (the
control) with the right one.
"""

from __future__ import annotations

import logging
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sweep_helpers import REPO

from ssr.config import ConfigError
from sweeps.runtime import cluster
from sweeps.runtime.rundir import LOCK_FILE, SWEEP_FILE, RunLocation, abandon_run, claim_run


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A HOME of its own, so that ``~/.ray/auth_token`` is this test's."""
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path


def test_token_mode_is_the_default_and_the_token_is_private(home: Path) -> None:
    env: dict[str, str] = {}
    assert cluster.configure_auth(False, env) == "token"
    assert env["RAY_AUTH_MODE"] == "token"
    token = home / ".ray" / "auth_token"
    assert len(token.read_text().strip()) == 64
    assert stat.S_IMODE(token.stat().st_mode) == 0o600
    before = token.read_text()
    cluster.configure_auth(False, {"RAY_AUTH_MODE": "token"})  # kept, not regenerated
    assert token.read_text() == before


def test_a_token_others_can_read_is_made_private(home: Path) -> None:
    token = home / ".ray" / "auth_token"
    token.parent.mkdir()
    token.write_text("a" * 64)
    token.chmod(0o644)  # as Ray 2.60 writes it under the usual umask
    cluster.ensure_token({})
    assert stat.S_IMODE(token.stat().st_mode) == 0o600
    assert token.read_text() == "a" * 64


@pytest.mark.parametrize(
    ("insecure", "env"), [(True, {}), (True, {"RAY_AUTH_MODE": "token"}), (False, {"RAY_AUTH_MODE": "disabled"})]
)  # fmt: skip
def test_no_authentication_only_by_choice_and_with_a_warning(
    insecure: bool, env: dict[str, str], home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="sweeps"):
        assert cluster.configure_auth(insecure, env) == "disabled"
    assert env["RAY_AUTH_MODE"] == "disabled"
    assert "authentication is OFF" in caplog.text
    assert not (home / ".ray" / "auth_token").exists()


def test_bad_auth_settings_are_one_line_errors(home: Path) -> None:
    with pytest.raises(ConfigError, match="RAY_AUTH_MODE='k8s'"):
        cluster.configure_auth(False, {"RAY_AUTH_MODE": "k8s"})
    with pytest.raises(ConfigError, match="RAY_AUTH_TOKEN_PATH"):
        cluster.configure_auth(False, {"RAY_AUTH_TOKEN_PATH": str(home / "absent")})
    env = {"RAY_AUTH_TOKEN": "b" * 64}  # the user's own token: nothing is written
    assert cluster.configure_auth(False, env) == "token"
    assert not (home / ".ray").exists()


def location(root: Path, name: str = "r1") -> RunLocation:
    return RunLocation(str(root), name, root / name)


def test_run_folder_is_private_and_locked(tmp_path: Path) -> None:
    loc = location(tmp_path / "runs")
    fd = claim_run(loc, resume=False)
    try:
        assert stat.S_IMODE(loc.run_dir.stat().st_mode) == 0o700
        assert stat.S_IMODE(loc.run_dir.parent.stat().st_mode) == 0o700
        assert (loc.run_dir / LOCK_FILE).read_text().strip() == str(os.getpid())
        # another driver: refused while the lock is held, and the folder is left as it was
        code = (
            "import sys; from pathlib import Path; from ssr.config import ConfigError\n"
            "from sweeps.runtime.rundir import RunLocation, claim_run\n"
            f"loc = RunLocation({str(loc.storage)!r}, 'r1', Path({str(loc.run_dir)!r}))\n"
            "try:\n    claim_run(loc, False)\nexcept ConfigError as e:\n    print(e); sys.exit(2)\n"
        )
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60
        )
        assert out.returncode == 2, out.stderr
        assert f"in use by another driver (pid {os.getpid()})" in out.stdout
        assert (loc.run_dir / LOCK_FILE).read_text().strip() == str(os.getpid())
    finally:
        os.close(fd)
    fd = claim_run(loc, resume=False)  # released with the fd (the kernel does it on any death)
    os.close(fd)


def test_checks_are_repeated_under_the_lock(tmp_path: Path) -> None:
    loc = location(tmp_path)
    loc.run_dir.mkdir()
    (loc.run_dir / SWEEP_FILE).write_text("name: s\n")  # created by a driver that won the race
    with pytest.raises(ConfigError, match="already holds a sweep"):
        claim_run(loc, resume=False)
    with pytest.raises(ConfigError, match="holds no sweep"):
        claim_run(location(tmp_path, "other"), resume=True)


def test_an_unwritable_storage_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot be created or written"):
        claim_run(location(Path("/proc/ssr-test-runs")), resume=False)


def test_a_run_that_never_started_leaves_nothing(tmp_path: Path) -> None:
    loc = location(tmp_path)
    fd = claim_run(loc, resume=False)
    (loc.run_dir / SWEEP_FILE).write_text("name: s\n")
    abandon_run(loc, [loc.run_dir / SWEEP_FILE])
    os.close(fd)
    assert not loc.run_dir.exists()


SERVER = """
import sys
from sweeps.runtime import cluster
cluster.set_environment(cluster.RAY_ENV)
cluster.configure_auth(False)
cluster.start_ray(None, 1, 0)
import ray
print("GCS", ray.get_runtime_context().gcs_address, flush=True)
sys.stdin.read()  # until the test closes it
cluster.shutdown_ray()
"""
CLIENT = (
    "import ray, sys; ray.init(address=sys.argv[1], logging_level='ERROR'); "
    "print('JOINED', ray.cluster_resources().get('CPU'))"
)


@pytest.mark.slow
def test_the_local_gcs_refuses_a_client_without_the_token(home: Path) -> None:
    env = {**os.environ, "HOME": str(home), "RAY_gcs_server_port_wait_time_s": "2"}
    env.pop("RAY_AUTH_MODE", None)  # the driver's default, not the test suite's setting
    env.pop("RAY_ADDRESS", None)
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL, text=True, env=env, cwd=REPO, start_new_session=True,
    )  # fmt: skip
    try:
        line = ""
        deadline = time.monotonic() + 90
        while not line.startswith("GCS") and time.monotonic() < deadline:
            line = server.stdout.readline() if server.stdout else ""
            if not line and server.poll() is not None:
                break
        assert line.startswith("GCS"), "the local Ray instance did not start"
        gcs = line.split()[1]
        assert gcs.startswith(f"{cluster.LOCAL_NODE_IP}:"), gcs  # the node address, on loopback
        token = (home / ".ray" / "auth_token").read_text().strip()

        def join(**extra: str) -> subprocess.CompletedProcess:
            return subprocess.run(
                [sys.executable, "-c", CLIENT, gcs], capture_output=True, text=True,
                env={**env, **extra}, cwd=REPO, timeout=90,
            )  # fmt: skip

        right = join(RAY_AUTH_MODE="token")
        assert right.returncode == 0 and "JOINED" in right.stdout, right.stderr[-2000:]
        for name, extra in {
            "no token": {"RAY_AUTH_MODE": "disabled"},
            "wrong token": {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "0" * len(token)},
        }.items():
            out = join(**extra)
            assert out.returncode != 0 and "JOINED" not in out.stdout, name
            assert "InvalidAuthToken" in out.stderr or "Unauthenticated" in out.stderr, name
    finally:
        if server.stdin:
            server.stdin.close()
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, 9)
            server.wait()
