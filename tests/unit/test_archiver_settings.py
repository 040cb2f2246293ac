"""The archiver's settings and its app wiring, from the environment alone (no server)."""

from __future__ import annotations

import pytest

from server.app import _archive_for_readers, _archiver
from server.archive.job import Archiver
from server.archive.objects import ObjectStore
from server.config import Settings
from server.store.db import Database


def test_the_defaults():
    settings = Settings.from_env({})
    assert (settings.archive_after_seconds, settings.archive_interval_seconds, settings.archive_lease_seconds) == (
        600, 10, 60)
    assert Settings.from_env({"ARCHIVE_AFTER_SECONDS": "0"}).archive_after_seconds == 0
    assert settings.archive_cpu_share == 0.25


@pytest.mark.parametrize(
    ("env", "said"),
    [
        ({"ARCHIVE_AFTER_SECONDS": "-1"}, "ARCHIVE_AFTER_SECONDS='-1' must be a finite number of seconds of 0 or more"),
        ({"ARCHIVE_INTERVAL_SECONDS": "0"}, "ARCHIVE_INTERVAL_SECONDS='0' must be a finite number of seconds above 0"),
        ({"ARCHIVE_LEASE_SECONDS": "soon"}, "ARCHIVE_LEASE_SECONDS='soon' is not a number of seconds"),
        ({"ARCHIVE_LEASE_SECONDS": "0.5"}, "ARCHIVE_LEASE_SECONDS=0.5 is too short to be renewed in time"),
        ({"ARCHIVE_CPU_SHARE": "0"}, "ARCHIVE_CPU_SHARE='0' must be from 0.01 to 1"),
        ({"ARCHIVE_CPU_SHARE": "half"}, "ARCHIVE_CPU_SHARE='half' is not a number: give one from 0.01 to 1"),
    ],
)
def test_invalid_values_are_refused_by_name(env, said):
    with pytest.raises(SystemExit) as refused:
        Settings.from_env(env)
    assert said in str(refused.value)


def _opened(settings: Settings) -> tuple[Settings, Database, ObjectStore | None]:
    """What server.app hands _archiver: the settings, the database, the process's store."""
    return settings, Database("postgresql://nobody@127.0.0.1:1/none", pool_size=1, max_overflow=0), \
        _archive_for_readers(settings)


@pytest.mark.parametrize("env", [{"ARCHIVE": "false"}, {"ARCHIVE_URL": ""}])
def test_archiving_off_runs_no_job(env):
    assert _archiver(*_opened(Settings.from_env(env)), None, serving=lambda: True) is None


def test_archiving_on_makes_the_job_with_the_settings(tmp_path):
    settings = Settings.from_env({"ARCHIVE_URL": str(tmp_path / "a"), "ARCHIVE_AFTER_SECONDS": "5",
                                  "ARCHIVE_LEASE_SECONDS": "30"})
    job = _archiver(*_opened(settings), None, serving=lambda: True)
    assert isinstance(job, Archiver) and (job.after, job.lease, job.pause_at) == (5, 30, "")
    assert (tmp_path / "a").is_dir()


def test_an_unknown_test_pause_step_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("ARCHIVE_TEST_PAUSE_AT", "halfway")
    with pytest.raises(SystemExit) as refused:
        _archiver(*_opened(Settings.from_env({"ARCHIVE_URL": str(tmp_path)})), None, serving=lambda: True)
    assert "ARCHIVE_TEST_PAUSE_AT='halfway' is not one of before-upload, after-upload, after-index" in str(refused.value)
