"""The live feed: one home for everything a reader of a build's logs or
events needs, whoever reads it and from wherever the lines come.

- records: a row as the feed keeps it (`Entry`: its sequence, filter value,
  bytes on the wire and create time), made by one converter per kind, so
  every source gives the same bytes;
- feed: one build's ring in memory, read once per wake-up for all followers;
- hub: the process's LISTEN connection, its feeds and build watchers, the
  heartbeat ticker and the bound on all rings together;
- tiers: `Source`, a build's entries from the tier that holds them (hot
  rows, or the archive's chunks: index query, ranged GET, decode), cut
  exactly where a hot read cuts, so no reader can tell the tiers apart;
- reader: `Follower`, a cursor moved by one verb, `next_batch(max_bytes)`,
  served from the ring, the hot rows or the archive within a byte budget;
  `page()` for List pages.

Dependencies run one way: server.core -> server.live -> server.store (and
server.archive's object store and codec, which know of live only its
records). The store returns rows and knows nothing of entries; callers of a
Follower never touch a feed's fields.
"""
