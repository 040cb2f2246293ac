"""DATABASE_URL with several hosts (a primary and its standbys) reaches
libpq intact from every entry point: SQLAlchemy's URL parser cannot read
libpq's `h1:p1,h2:p2` list, so the SQLAlchemy form lists the hosts in the
query, which its psycopg dialect turns back into libpq's lists."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine

from server.config import libpq_url, sqlalchemy_url


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgresql://u:p@h1:5432,h2:5433/db?target_session_attrs=read-write",
         "postgresql+psycopg://u:p@/db?host=h1:5432&host=h2:5433&target_session_attrs=read-write"),
        ("postgres://h1,h2/db", "postgresql+psycopg:///db?host=h1&host=h2"),
        ("postgresql://u@h:5432/db", "postgresql+psycopg://u@h:5432/db"),
        ("postgresql://postgres:@/db?host=/run/pg", "postgresql+psycopg://postgres:@/db?host=/run/pg"),
    ],
)
def test_several_hosts_are_given_to_sqlalchemy_in_its_own_form(given, expected):
    assert sqlalchemy_url(given) == expected


def test_sqlalchemy_hands_libpq_the_same_hosts_in_the_same_order():
    url = "postgresql://u:p@h1:5432,h2:5433/db?target_session_attrs=read-write"
    engine = create_engine(sqlalchemy_url(url))
    _, options = engine.dialect.create_connect_args(engine.url)
    assert (options["host"], options["port"], options["dbname"]) == ("h1,h2", "5432,5433", "db")
    assert options["target_session_attrs"] == "read-write"
    assert libpq_url(url) == url   # psycopg takes libpq's list as it is
