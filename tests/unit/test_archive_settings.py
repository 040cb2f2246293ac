"""ARCHIVE_URL and ARCHIVE, from the environment alone (no server)."""

from __future__ import annotations

import pytest

from server.app import _archive_for_readers
from server.archive.objects import open_store
from server.config import Settings


def test_archiving_goes_to_a_directory_beside_the_embedded_database_by_default():
    settings = Settings.from_env({})
    assert settings.archive and settings.archive_url == ".data/archive"
    assert Settings.from_env({}).embedded_pg_dir.rpartition("/")[0] == settings.archive_url.rpartition("/")[0]


@pytest.mark.parametrize("env", [{"ARCHIVE_URL": ""}, {"ARCHIVE_URL": "  "}])
def test_an_empty_archive_url_opens_no_store(env):
    assert _archive_for_readers(Settings.from_env(env)) is None


def test_archive_false_still_opens_the_store_for_readers():
    """ARCHIVE=false stops archiving more; what was archived stays readable."""
    store = _archive_for_readers(Settings.from_env({"ARCHIVE": "false", "ARCHIVE_URL": "s3://bucket/logs"}))
    assert store is not None and store.where == "s3://bucket/logs"


@pytest.mark.parametrize("url", ["s3://bucket", "s3://bucket/logs/prod", "gs://bucket/logs", "az://container/logs",
                                 "file:///var/lib/buildplatform/archive", "relative/dir", "/abs/dir"])
def test_the_accepted_forms(url):
    assert Settings.from_env({"ARCHIVE_URL": url}).archive_url == url


@pytest.mark.parametrize(
    ("env", "said"),
    [
        ({"ARCHIVE_URL": "ftp://host/logs"}, "ARCHIVE_URL='ftp://host/logs' must be a directory, file:///path, "
                                            "s3://bucket/prefix, gs://bucket/prefix or az://container/prefix"),
        ({"ARCHIVE_URL": "s3://"}, "ARCHIVE_URL='s3://' must be s3://bucket/prefix with no credentials"),
        ({"ARCHIVE_URL": "s3://AKIA:secret@bucket/x"}, "must be s3://bucket/prefix with no credentials or options"),
        ({"ARCHIVE_URL": "gs://bucket/x?token=1"}, "must be gs://bucket/prefix with no credentials or options"),
        ({"ARCHIVE_URL": "file://relative/dir"}, "must name an absolute directory after file://"),
        ({"ARCHIVE": "sometimes"}, "ARCHIVE='sometimes' must be true or false"),
    ],
)
def test_a_wrong_archive_setting_is_refused_in_one_line(env, said):
    with pytest.raises(SystemExit) as refused:
        Settings.from_env(env)
    message = str(refused.value)
    assert said in message and "\n" not in message


def test_a_local_archive_directory_is_created_when_missing(tmp_path):
    where = tmp_path / "data" / "archive"
    store = _archive_for_readers(Settings.from_env({"ARCHIVE_URL": str(where)}))
    assert store is not None and where.is_dir() and store.where == str(where)
    assert open_store(f"file://{where}").where == str(where)


def test_opening_a_cloud_store_reads_nothing_over_the_network():
    """Credentials are looked for on first use, not at start (a replica starts while the cloud is unreachable)."""
    assert open_store("s3://bucket/logs", config={"region": "eu-west-1"}).where == "s3://bucket/logs"
    assert open_store("gs://bucket/logs").where == "gs://bucket/logs"
