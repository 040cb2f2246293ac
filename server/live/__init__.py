"""The live feed: one home for everything a reader of a build's logs or
events needs, whoever reads it and from wherever the lines come.

- records: a row as the feed keeps it (`Entry`: its sequence, filter value,
  bytes on the wire and create time), made by one converter per kind, so
  every source gives the same bytes;
- feed: one build's ring in memory, read once per wake-up for all followers;
- hub: the process's LISTEN connection, its feeds and build watchers, the
  heartbeat ticker and the bound on all rings together;
- reader: `Follower`, a cursor moved by one verb, `next_batch(max_bytes)`,
  served from the ring or the database within a byte budget.

Dependencies run one way: server.core -> server.live -> server.store. The
store returns rows and knows nothing of entries; callers of a Follower never
touch a feed's fields.
"""
