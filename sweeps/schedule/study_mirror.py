"""The sweep's Optuna study in the driver's memory, mirrored to its RDB storage by a writer.

Optuna's RDB storage serves every read of the sampler with SQL: per suggestion, multivariate TPE
reads the new and unfinished trials three times (five relationship loads each), and every
parameter and label is its own commit. At 5,000 trials that was about two thirds of Optuna's
53 ms per trial in the driver (BENCHMARKS.md, ``benchmarks/driver_scale.py``), on a SQLite file;
a team's PostgreSQL adds a network round trip to each.

:class:`MirroredStorage` is an Optuna storage that answers every read from an
:class:`optuna.storages.InMemoryStorage` (the one Optuna uses without a URL) and forwards every
write, after the in-memory storage accepted it, to one writer process
(:mod:`sweeps.runtime.writer`) that applies it to the RDB storage in order (:func:`rdb_applier`).
So the study in the database is what ``optuna-dashboard`` and the report read, a moment behind
the driver, and the driver never waits for SQL.

- **Opening**: the study named like the run is loaded from the RDB storage if it exists (a
  resumed sweep), every trial whole (:func:`load_study`), and the writer is told which database
  ids its in-memory ids stand for; otherwise it is created in both.
- **Ids**: the in-memory storage holds this one study, so its trial ids are the trial numbers;
  the writer keeps the map to the database's ids.
- **Pickling** (Ray pickles the searcher, and with it the study's storage, at every experiment
  snapshot): the storage first waits for its writer to catch up (:data:`FLUSH_S`), then pickles
  as its URL and study name; unpickling loads the study from the database again. So a snapshot
  never refers to a trial the database lacks, and a resumed driver starts from the database.
- **Closing**: :func:`close_all` drains every mirror of the process (the driver calls it when
  Tune's run returns, before the report reads the study); a writer dies with its driver.

One sweep writes one study (:func:`sweeps.schedule.searchers.probe_study` refuses a second), so
nothing else writes the mirrored study while a driver holds it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.storages import BaseStorage, InMemoryStorage
from optuna.study import StudyDirection
from optuna.study._frozen import FrozenStudy
from optuna.trial import FrozenTrial, TrialState

from ssr.config import ConfigError
from sweeps.runtime.sqlite import WalConnection
from sweeps.runtime.writer import Writer

log = logging.getLogger(__name__)

#: Tries to open a new RDB storage: drivers (and their study writers) starting on an empty PostgreSQL database race to create
#: Optuna's tables; the loser fails with a unique violation or "already exists" (docs/stack.md §2).
CREATE_ATTEMPTS = 3
#: RDB URL schemes Optuna's storage takes (SQLAlchemy dialects, with or without a driver).
RDB_SCHEMES = ("sqlite", "postgresql", "mysql", "oracle", "mssql")


#: Seconds a pickling waits for the writer to apply what was sent.
FLUSH_S = 120.0

#: The mirrors of this process with a writer to drain (held here: a mirror whose searcher is
#: gone still has its writes to finish).
_LIVE: set[MirroredStorage] = set()


def check_storage_url(url: str) -> None:
    """Raise ConfigError unless ``url`` looks like an RDB URL Optuna can open."""
    scheme = url.split("://", 1)[0].split("+", 1)[0] if "://" in url else ""
    if scheme not in RDB_SCHEMES:
        raise ConfigError(
            f"searcher.storage {url!r}: give an RDB URL Optuna can open, e.g. "
            "sqlite:////abs/path/optuna.db or postgresql://user@host/db"
        )
    if scheme == "sqlite" and not Path(url.removeprefix("sqlite:///")).is_absolute():
        raise ConfigError(f"searcher.storage {url!r}: give an absolute path (sqlite:////abs/x.db)")


def open_storage(url: str) -> optuna.storages.RDBStorage:
    """The RDB storage at ``url`` (tables created on first use); ConfigError if unusable."""
    check_storage_url(url)
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite:"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        # NOTE: wait for another writer, do not fail; commit in WAL mode (sweeps.runtime.sqlite)
        kwargs = {"connect_args": {"timeout": 30, "factory": WalConnection}}
    from sqlalchemy.exc import IntegrityError, ProgrammingError

    for attempt in range(CREATE_ATTEMPTS):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)
        except (IntegrityError, ProgrammingError) as exc:
            problem = exc  # NOTE: another process created the tables meanwhile: open again
            if isinstance(exc, ProgrammingError) and "already exists" not in str(exc):
                break
            time.sleep(1.0 + attempt)
        except Exception as exc:
            problem = exc
            break
    raise ConfigError(f"Optuna storage {url}: cannot be opened: {problem}") from None


def rdb_applier(settings: dict[str, Any]) -> Callable[[tuple], None]:
    """In the writer process: the RDB storage at ``settings["url"]`` and the function that
    applies one event to it, in-memory ids mapped to the database's."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # NOTE: as in the driver
    rdb = open_storage(settings["url"])
    studies: dict[int, int] = {}
    trials: dict[int, int] = {}

    def apply(event: tuple) -> None:
        kind, args = event[0], event[1:]
        if kind == "map":
            studies[args[0]] = args[1]
            trials.update(args[2])
        elif kind == "create_new_study":
            mem_id, directions, name = args
            studies[mem_id] = rdb.create_new_study(directions, name)
        elif kind == "delete_study":
            rdb.delete_study(studies.pop(args[0]))
        elif kind in ("set_study_user_attr", "set_study_system_attr"):
            getattr(rdb, kind)(studies[args[0]], *args[1:])
        elif kind == "create_new_trial":
            mem_study, mem_trial, template = args
            trials[mem_trial] = rdb.create_new_trial(studies[mem_study], template)
        else:  # the trial's writes: set_trial_param, _state_values, _intermediate_value, _*_attr
            getattr(rdb, kind)(trials[args[0]], *args[1:])

    return apply


def load_study(rdb: BaseStorage, name: str, mem: InMemoryStorage) -> tuple[int, dict[int, int]]:
    """Copy the study ``name`` of ``rdb`` into ``mem`` (trials whole, in number order); returns
    the database's study id and the map from in-memory trial ids to the database's."""
    rdb_id = rdb.get_study_id_from_name(name)
    mem_id = mem.create_new_study(rdb.get_study_directions(rdb_id), name)
    for key, value in rdb.get_study_user_attrs(rdb_id).items():
        mem.set_study_user_attr(mem_id, key, value)
    for key, value in rdb.get_study_system_attrs(rdb_id).items():
        mem.set_study_system_attr(mem_id, key, value)
    ids = {}
    for frozen in sorted(rdb.get_all_trials(rdb_id, deepcopy=False), key=lambda t: t.number):
        ids[mem.create_new_trial(mem_id, template_trial=frozen)] = frozen._trial_id
    return rdb_id, ids


class MirroredStorage(BaseStorage):
    """Optuna storage: reads from memory, writes to memory and (through a writer process) to
    the RDB storage at ``url``, for the one study ``study_name``."""

    def __init__(self, url: str, study_name: str) -> None:
        self.url, self.study_name = url, study_name
        self._open()

    def _open(self) -> None:
        self._mem = InMemoryStorage()
        self._writer = Writer(rdb_applier, {"url": self.url}, "ssr-optuna-writer", "Optuna")
        self._writer.dead_note = ": the study in the database stops here; the sweep goes on"
        rdb = open_storage(self.url)
        try:
            rdb_id, ids = load_study(rdb, self.study_name, self._mem)
        except KeyError:  # a new study: created by create_new_study
            pass
        else:
            self._writer.send(("map", 0, rdb_id, ids))
        finally:
            rdb.remove_session()
            rdb.engine.dispose()
        _LIVE.add(self)

    def _send(self, *event: Any) -> None:
        self._writer.send(event)

    # ---- writes: memory first (its checks and errors), then the database --------------------
    def create_new_study(
        self, directions: Sequence[StudyDirection], study_name: str | None = None
    ) -> int:
        if study_name != self.study_name:
            raise ValueError(f"this storage mirrors the study {self.study_name!r} only")
        study_id = self._mem.create_new_study(directions, study_name)
        self._send("create_new_study", study_id, list(directions), study_name)
        return study_id

    def delete_study(self, study_id: int) -> None:
        self._mem.delete_study(study_id)
        self._send("delete_study", study_id)

    def set_study_user_attr(self, study_id: int, key: str, value: Any) -> None:
        self._mem.set_study_user_attr(study_id, key, value)
        self._send("set_study_user_attr", study_id, key, value)

    def set_study_system_attr(self, study_id: int, key: str, value: Any) -> None:
        self._mem.set_study_system_attr(study_id, key, value)
        self._send("set_study_system_attr", study_id, key, value)

    def create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> int:
        trial_id = self._mem.create_new_trial(study_id, template_trial)
        self._send("create_new_trial", study_id, trial_id, template_trial)
        return trial_id

    def set_trial_param(
        self, trial_id: int, param_name: str, param_value_internal: float, dist: BaseDistribution
    ) -> None:
        self._mem.set_trial_param(trial_id, param_name, param_value_internal, dist)
        self._send("set_trial_param", trial_id, param_name, param_value_internal, dist)

    def set_trial_state_values(
        self, trial_id: int, state: TrialState, values: Sequence[float] | None = None
    ) -> bool:
        changed = self._mem.set_trial_state_values(trial_id, state, values)
        if changed:
            self._send("set_trial_state_values", trial_id, state, values)
        return changed

    def set_trial_intermediate_value(self, trial_id: int, step: int, value: float) -> None:
        self._mem.set_trial_intermediate_value(trial_id, step, value)
        self._send("set_trial_intermediate_value", trial_id, step, value)

    def set_trial_user_attr(self, trial_id: int, key: str, value: Any) -> None:
        self._mem.set_trial_user_attr(trial_id, key, value)
        self._send("set_trial_user_attr", trial_id, key, value)

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        self._mem.set_trial_system_attr(trial_id, key, value)
        self._send("set_trial_system_attr", trial_id, key, value)

    # ---- reads: memory ----------------------------------------------------------------------
    def get_study_id_from_name(self, study_name: str) -> int:
        return self._mem.get_study_id_from_name(study_name)

    def get_study_name_from_id(self, study_id: int) -> str:
        return self._mem.get_study_name_from_id(study_id)

    def get_study_directions(self, study_id: int) -> list[StudyDirection]:
        return self._mem.get_study_directions(study_id)

    def get_study_user_attrs(self, study_id: int) -> dict[str, Any]:
        return self._mem.get_study_user_attrs(study_id)

    def get_study_system_attrs(self, study_id: int) -> dict[str, Any]:
        return self._mem.get_study_system_attrs(study_id)

    def get_all_studies(self) -> list[FrozenStudy]:
        return self._mem.get_all_studies()

    def get_trial(self, trial_id: int) -> FrozenTrial:
        return self._mem.get_trial(trial_id)

    def get_all_trials(
        self,
        study_id: int,
        deepcopy: bool = True,
        states: tuple[TrialState, ...] | None = None,
    ) -> list[FrozenTrial]:
        return self._mem.get_all_trials(study_id, deepcopy=deepcopy, states=states)

    # ---- the writer -------------------------------------------------------------------------
    def flush(self, timeout: float = FLUSH_S) -> bool:
        """Wait until the database holds every write made so far (False: not in time)."""
        done = self._writer.flush(timeout)
        if not done:
            log.warning("the Optuna study %s lags its driver in %s", self.study_name, self.url)
        return done

    def close(self) -> dict[str, Any]:
        """Drain and stop the writer (the study is complete in the database); its figures."""
        _LIVE.discard(self)
        return self._writer.close()

    def abandon(self) -> None:
        """Stop the writer at once (an interrupted driver)."""
        _LIVE.discard(self)
        self._writer.abandon()

    def __getstate__(self) -> dict[str, Any]:
        self.flush()
        return {"url": self.url, "study_name": self.study_name}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._open()


def close_all() -> dict[str, Any]:
    """Drain and stop every study mirror of this process; the writers' summed figures."""
    total: dict[str, Any] = {"sent": 0, "cpu_s": 0.0, "wait_s": 0.0, "failed": 0}
    for storage in list(_LIVE):
        for key, value in storage.close().items():
            if key in total:
                total[key] += value
    return total


def abandon_all() -> None:
    """Stop every study mirror of this process without waiting (an interrupted driver)."""
    for storage in list(_LIVE):
        storage.abandon()
