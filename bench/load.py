"""Fill a fresh database: 10,000 users x 3 projects x 100 builds = 1,000,000
builds by default, in a few INSERT ... SELECT generate_series statements.

Distribution: every user has 3 projects and `builds // users` builds spread
over their projects and over the past year; statuses are mixed the way a
busy platform's are (mostly finished, a few live); app specs vary from
about 350 to 1,000 bytes; one build in five carries a progress document.
Identifiers are CUID-shaped ('c' + 24 of [0-9a-z]) and derived from the
row number, so the bench can name any row without asking the database.
"""

from __future__ import annotations

import contextlib
import time

import psycopg

PROJECTS_PER_USER = 3


def uid(kind: str, n: int) -> str:
    """The id the loader gives row n of a kind ('u' user, 'p' project, 'b' build)."""
    import hashlib

    return "c" + hashlib.md5(f"{kind}{n}".encode()).hexdigest()[:24]


def _sql_id(kind: str, expr: str) -> str:
    return f"'c' || substr(md5('{kind}' || ({expr})::text), 1, 24)"


def load(url: str, *, users: int, builds: int) -> dict[str, float]:
    timings: dict[str, float] = {}
    per_user = max(1, builds // users)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET maintenance_work_mem = '256MB'")
        started = time.perf_counter()
        conn.execute(
            f"""
            INSERT INTO users (id, clerk_id, email, name, create_time, update_time)
            SELECT {_sql_id('u', 'i')}, 'user_' || i, 'user' || i || '@example.com', 'User ' || i,
                   now() - interval '400 days' + i * interval '1 minute',
                   now() - interval '400 days' + i * interval '1 minute'
            FROM generate_series(1, %(users)s) AS i
            """,
            {"users": users},
        )
        conn.execute(
            f"""
            INSERT INTO projects (id, user_id, name, description, create_time, update_time)
            SELECT {_sql_id('p', 'j')}, {_sql_id('u', '(j - 1) / %(per)s + 1')},
                   'Project ' || j, 'A project of user ' || ((j - 1) / %(per)s + 1),
                   now() - interval '390 days' + j * interval '1 minute',
                   now() - interval '390 days' + j * interval '1 minute'
            FROM generate_series(1, %(projects)s) AS j
            """,
            {"per": PROJECTS_PER_USER, "projects": users * PROJECTS_PER_USER},
        )
        timings["users_projects_s"] = time.perf_counter() - started
        started = time.perf_counter()
        # Loading into a table without its secondary indexes and foreign-key
        # triggers, then building the indexes, is several times faster than
        # maintaining them row by row; the indexes are recreated from their
        # own definitions, so the schema ends exactly as the migration left it.
        indexes = [
            (name, definition)
            for name, definition in conn.execute(
                "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'builds' "
                "AND indexname NOT IN (SELECT conname FROM pg_constraint)"
            ).fetchall()
        ]
        for name, _ in indexes:
            conn.execute(f'DROP INDEX "{name}"')
        # Skip foreign-key checks: the data is consistent by construction. Not
        # a superuser (BENCH_DATABASE_URL)? Then they are checked, only slower.
        with contextlib.suppress(psycopg.Error):
            conn.execute("SET session_replication_role = replica")
        # Build i belongs to user (i - 1) % users + 1 and to one of that
        # user's projects; builds are created over the last 365 days, so the
        # newest-first order interleaves every user's builds. Finished
        # builds are loaded archived, as the archiver leaves a build with no
        # logs 10 minutes after it finished: a server whose archiver runs on
        # this database (bench.lifecycle) archives the benches' own builds,
        # not 880,000 empty ones first.
        conn.execute(
            f"""
            INSERT INTO builds (id, user_id, project_id, status, app_spec, progress, output_url,
                                create_time, update_time, start_time, finish_time, status_reason,
                                revision, last_log_seq, last_event_seq, archive_state, archive_time)
            SELECT {_sql_id('b', 'i')},
                   {_sql_id('u', 'u')},
                   {_sql_id('p', '(u - 1) * %(per)s + 1 + (i / %(users)s) %% %(per)s')},
                   s::build_status,
                   '# Todo app ' || i || E'\\n' || repeat('Users can add, edit and tick off todos. ', 8 + i %% 16),
                   CASE WHEN i %% 5 = 0 THEN jsonb_build_object('step', 'generate', 'done', i %% 7, 'of', 7) END,
                   CASE WHEN s = 'COMPLETED' THEN 'https://apps.example.com/' || i END,
                   t, t + interval '3 minutes',
                   CASE WHEN s <> 'PENDING' THEN t + interval '10 seconds' END,
                   CASE WHEN s IN ('COMPLETED', 'FAILED', 'CANCELLED') THEN t + interval '3 minutes' END,
                   CASE WHEN s = 'FAILED' THEN 'tests failed' ELSE '' END,
                   3, 0, 0,
                   CASE WHEN s IN ('COMPLETED', 'FAILED', 'CANCELLED') THEN 'archived' ELSE 'hot' END,
                   CASE WHEN s IN ('COMPLETED', 'FAILED', 'CANCELLED') THEN t + interval '13 minutes' END
            FROM (
                SELECT i, (i - 1) %% %(users)s + 1 AS u,
                       now() - interval '365 days' * (1 - i::float8 / %(builds)s)
                             - (i %% 977) * interval '1 second' AS t,
                       CASE
                           WHEN i %% 100 < 70 THEN 'COMPLETED'
                           WHEN i %% 100 < 82 THEN 'FAILED'
                           WHEN i %% 100 < 88 THEN 'CANCELLED'
                           WHEN i %% 100 < 92 THEN 'RUNNING'
                           WHEN i %% 100 < 94 THEN 'AWAITING_DESIGN_REVIEW'
                           WHEN i %% 100 < 96 THEN 'AWAITING_FEATURE_REVIEW'
                           WHEN i %% 100 < 97 THEN 'PAUSED'
                           WHEN i %% 100 < 98 THEN 'INITIALIZING'
                           ELSE 'PENDING'
                       END AS s
                FROM generate_series(1, %(builds)s) AS i
            ) AS g
            """,
            {"users": users, "per": PROJECTS_PER_USER, "builds": per_user * users},
        )
        conn.execute("RESET session_replication_role")
        timings["builds_s"] = time.perf_counter() - started
        started = time.perf_counter()
        for _, definition in indexes:
            conn.execute(definition)
        timings["indexes_s"] = time.perf_counter() - started
        started = time.perf_counter()
        conn.execute("VACUUM ANALYZE users, projects, builds")
        timings["analyze_s"] = time.perf_counter() - started
    return timings
