"""Size limits of the API, in bytes as well as counts, in one place.

A response must be accepted by a client that keeps gRPC's default receive
limit (4 MiB). Every List page and stream message is cut at RESPONSE_BYTES
of serialized items (it always carries at least one item, and no single item
can exceed MAX_ITEM_BYTES), so RESPONSE_BYTES + MAX_ITEM_BYTES stays below
CLIENT_RECEIVE_BYTES with room for the response's own fields.
"""

from __future__ import annotations

CLIENT_RECEIVE_BYTES = 4 << 20   # gRPC's default max_receive_message_length

# Target size of one List page or stream message (its repeated items).
RESPONSE_BYTES = 1 << 20

# Field limits (checked before anything reaches PostgreSQL).
MAX_NAME = 200
MAX_EMAIL = 320                     # RFC 5321's longest path
MAX_TITLE = 500                     # a chat session's title
MAX_SHORT_TEXT = 2000
MAX_URL = 4096
MAX_DOCUMENT_BYTES = 1 << 20        # app specs, chat messages, a build's app_spec
MAX_PROGRESS_BYTES = 256 * 1024
MAX_CHAT_METADATA_BYTES = 64 * 1024
MAX_LOG_MESSAGE_BYTES = 65536
MAX_LOG_METADATA_BYTES = 16384
# A log step's name (LogStep.name), in UTF-8 bytes.
MAX_LOG_STEP_NAME_BYTES = 256
MAX_EVENT_DATA_BYTES = 65536
MAX_BATCH = 5000                    # entries of one append
MAX_FILTER_VALUES = 16              # levels / types of one List or Stream request
MAX_REVIEW_COMMENT_CHARS = 20_000   # a review's comment (up to 80 KB of UTF-8)
MAX_KEPT_REVIEWS = 8                # a build keeps its newest reviews only

# page_size of the Lists: 0 means the default.
PAGE_SIZE = 50                      # users, projects, builds, chat sessions, app specs
MAX_PAGE_SIZE = 1000
CHAT_MESSAGES_PAGE_SIZE = 100
FEED_PAGE_SIZE = 500                # logs and events; at most MAX_BATCH

# The largest single item any response carries: a build with a full app_spec,
# progress and its kept reviews (each under 81 KiB with its other fields).
MAX_ITEM_BYTES = MAX_DOCUMENT_BYTES + MAX_PROGRESS_BYTES + MAX_KEPT_REVIEWS * 81 * 1024 + 16 * 1024

assert RESPONSE_BYTES + MAX_ITEM_BYTES + 64 * 1024 < CLIENT_RECEIVE_BYTES

# Log retention (Project.log_retention_days and LOG_RETENTION_DAYS), in days
# after a build's finish_time: from a day to ten years.
MIN_RETENTION_DAYS = 1
MAX_RETENTION_DAYS = 3650

# Build agent tokens (BuildService.CreateAgentToken): how long they live.
AGENT_TOKEN_TTL_SECONDS = 24 * 3600      # when the request gives none
MIN_AGENT_TOKEN_TTL_SECONDS = 60
MAX_AGENT_TOKEN_TTL_SECONDS = 7 * 24 * 3600
