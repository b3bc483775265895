"""Each host's index of meetings (workers/host_pages.py): a sorted set per host of appointment ids, scored by when
each may leave it, and the host's page-link version."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence

import redis

from workers.state import KEYS, Keys

# The record's page fields and the host index change together, so that a page never lists a meeting its record
# does not describe yet. The previous host's index (when the meeting moved) keeps the meeting, now scored as a
# cancelled one; each index touched is trimmed of what is past and expires after its last entry.
_RECORD_SYNC = """
redis.call('HSET', KEYS[1], unpack(ARGV, 6))
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[2])
if KEYS[3] ~= KEYS[2] then
  redis.call('ZADD', KEYS[3], 'XX', ARGV[4], ARGV[2])
end
for i = 2, #KEYS do
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', '(' .. ARGV[1])
  local last = redis.call('ZRANGE', KEYS[i], -1, -1, 'WITHSCORES')
  if last[2] then
    redis.call('EXPIREAT', KEYS[i], math.ceil(tonumber(last[2])) + tonumber(ARGV[5]))
  end
end
return 1
"""


# The records of a page, read in one call: each record's HMGET of _READ_FIELDS, all answered as one JSON string.
# redis-py parses a reply value by value in Python (about 20 ms for 500 records of 17 fields, the bulk of a page);
# json.loads reads the same in about 1 ms. Missing records come back as rows of nulls.
_READ_RECORDS = """
local rows = {}
for i, key in ipairs(KEYS) do
  local values = redis.call('HMGET', key, unpack(ARGV))
  for j = 1, #ARGV do
    if not values[j] then values[j] = cjson.null end
  end
  rows[i] = values
end
return cjson.encode(rows)
"""

class HostIndex:
    def __init__(self, client: redis.Redis, keys: Keys = KEYS) -> None:
        self.client = client
        self.keys = keys
        self._record = client.register_script(_RECORD_SYNC)
        self._read_records = client.register_script(_READ_RECORDS)

    def record(self, appointment_id: str, fields: Mapping[str, str], *, host: str, score: float,
               moved_from: str | None, moved_score: float, now: float, slack_seconds: int) -> None:
        """Write the record's page fields and the host's index entry together (and rescore it in the index of
        the host it moved from)."""
        index = self.keys.host_meetings(host)
        previous = self.keys.host_meetings(moved_from) if moved_from else index
        pairs = [item for name_value in fields.items() for item in name_value]
        self._record(keys=[self.keys.appointment(appointment_id), index, previous],
                     args=[now, appointment_id, score, moved_score, slack_seconds, *pairs])

    def meetings(self, email: str, now: float, fields: Sequence[str]) -> Iterator[tuple[str, list[str | None]]]:
        """(appointment id, its record's `fields`) for each meeting still in the host's index."""
        ids = self.client.zrangebyscore(self.keys.host_meetings(email), now, "+inf")
        if not ids:
            return
        rows = json.loads(self._read_records(keys=[self.keys.appointment(i) for i in ids], args=list(fields)))
        yield from zip(ids, rows, strict=True)

    def page_version(self, email: str) -> int:
        return int(self.client.get(self.keys.host_page_version(email)) or 0)

    def next_page_version(self, email: str) -> int:
        """Revoke the host's links handed out so far: their version is no longer the current one."""
        return int(self.client.incr(self.keys.host_page_version(email)))
