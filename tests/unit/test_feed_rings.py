"""The rings of followed builds, in memory: bounded in rows and bytes per
build, and in bytes for the whole process, evicting from the largest."""

from __future__ import annotations

from server.live.feed import Feed
from server.live.hub import Hub
from server.live.records import Entry
from server.store.feeds import LOGS


def hub(*, ring_bytes: int, total_bytes: int) -> Hub:
    return Hub(None, "", ring_bytes=ring_bytes, total_bytes=total_bytes)  # type: ignore[arg-type]  # no I/O here


def followed(owner: Hub, build_id: str) -> Feed:
    feed = Feed(owner, LOGS, build_id)
    feed.head = feed.base = 0
    owner.feeds[(LOGS.name, build_id)] = feed
    return feed


def lines(first: int, count: int, size: int) -> list[Entry]:
    return [Entry(seq, "info", b"x" * size) for seq in range(first, first + count)]


def test_a_ring_keeps_the_newest_entries_within_its_bytes():
    owner = hub(ring_bytes=1000, total_bytes=10**9)
    feed = followed(owner, "a")
    feed.keep(lines(1, 10, 300))
    assert [e.seq for e in feed.entries] == [8, 9, 10]
    assert (feed.bytes, owner.ring_total, feed.base, feed.head) == (900, 900, 7, 10)
    assert feed.covers(7) and not feed.covers(6)  # a follower at 6 reads the database


def test_the_rings_of_a_process_shrink_the_largest_first_and_spare_the_small():
    owner = hub(ring_bytes=10**9, total_bytes=1000)
    large, small = followed(owner, "large"), followed(owner, "small")
    large.keep(lines(1, 10, 100))
    small.keep(lines(1, 2, 100))
    assert owner.ring_total <= 1000
    assert small.bytes == 200 and [e.seq for e in small.entries] == [1, 2]
    assert large.bytes == 800 and [e.seq for e in large.entries] == list(range(3, 11))


def test_equal_rings_over_the_total_shrink_alike():
    owner = hub(ring_bytes=10**9, total_bytes=1000)
    rings = [followed(owner, name) for name in "abcd"]
    for feed in rings:
        feed.keep(lines(1, 5, 100))
    # The 4th ring brings 1400 bytes: capping each at 250 fits, in whole entries 200.
    assert [feed.bytes for feed in rings] == [200] * 4 and owner.ring_total == 800
    assert all([e.seq for e in feed.entries] == [4, 5] for feed in rings)


def test_a_follower_takes_what_fits_the_budget_and_at_least_one_entry():
    owner = hub(ring_bytes=10**9, total_bytes=10**9)
    feed = followed(owner, "a")
    feed.keep(lines(1, 5, 400))
    assert [e.seq for e in feed.after(0, 1000)] == [1, 2]
    assert [e.seq for e in feed.after(2, 100)] == [3]
    assert feed.after(5, 1000) == []
