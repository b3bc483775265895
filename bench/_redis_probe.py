"""Counts a process's Redis round trips and commands by purpose, from inside it (used by bench/profile_worker).

`run(argv)` patches redis-py's connections (every round trip a client makes goes through `send_command` once,
`pack_commands` once for a pipeline or a MULTI/EXEC transaction, or `pack_command` for what sends pre-packed),
then runs Celery's command line with `argv`, so the worker is the Procfile's worker with a counter in it. Every
0.5 s the counts are written to the JSON file named by `MEETBRIDGE_REDIS_PROBE`; the bench reads it before and
after the measured window.

The purpose of a command is read off the key it names (see `purpose`); a round trip is filed under the purpose
of its first command that names a key (MULTI aside), an EVALSHA under its first key.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import threading
import time
from collections import Counter
from typing import Any

# Key prefix -> purpose, longest first wins. Kept in step with workers/state/'s Keys.
PREFIXES: tuple[tuple[str, str], ...] = (
    ("mb:metrics", "metrics"),
    ("mb:rate:", "rate limiter"),
    ("mb:lock:", "lock"),
    ("mb:history:", "history (notes)"),
    ("mb:zoom:daily:", "zoom daily quota"),
    ("mb:zoom:token", "zoom token"),
    ("mb:redis:", "redis epoch check"),
    ("mb:hostidx:", "host page index"),
    ("mb:hostpage:", "host page index"),
    ("mb:neetocal:link:", "neetocal link cache"),
    ("mb:schedule:", "schedules (refresh, deferred, ended, forget)"),
    ("mb:appt:", "state (record, events, pending)"),
    ("mb:events:", "state (record, events, pending)"),
    ("mb:pending", "state (record, events, pending)"),
    ("mb:appointments", "state (record, events, pending)"),
    ("mb:dead", "state (record, events, pending)"),
    ("mb:neetocal:", "state (record, events, pending)"),
    ("mb:", "other mb: keys"),
    ("_kombu", "broker (celery/kombu)"),
    ("unacked", "broker (celery/kombu)"),
    ("celery", "broker (celery/kombu)"),
    ("meetbridge", "broker (celery/kombu)"),
)
KEYLESS = frozenset({"PING", "TIME", "INFO", "CLIENT", "SCRIPT", "HELLO", "SELECT", "EXEC", "MULTI", "WAIT",
                     "READONLY", "ECHO", "COMMAND", "CONFIG", "ROLE", "PUBLISH", "SUBSCRIBE", "PSUBSCRIBE"})


def _text(value: Any) -> str:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", "replace")
    return str(value)


def first_key(args: tuple[Any, ...]) -> str | None:
    if not args:
        return None
    name = _text(args[0]).upper().split(" ")[0]
    if name in KEYLESS:
        return None
    if name in ("EVALSHA", "EVAL", "EVALSHA_RO", "FCALL"):
        return _text(args[3]) if len(args) > 3 and int(_text(args[2])) > 0 else None
    if name in ("BRPOP", "BLPOP"):
        return _text(args[1]) if len(args) > 1 else None
    return _text(args[1]) if len(args) > 1 else None


# One regex for the whole table: the first prefix that matches wins, as in the table's order.
_PREFIX = re.compile("|".join(f"(?P<p{i}>{re.escape(prefix)})" for i, (prefix, _) in enumerate(PREFIXES)))


def purpose(args: tuple[Any, ...]) -> str:
    key = first_key(args)
    if key is None:
        return "no key (" + (_text(args[0]).upper().split(" ")[0] if args else "?") + ")"
    match = _PREFIX.match(key)
    return PREFIXES[int(match.lastgroup[1:])][1] if match else "other keys"


class Counts:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.round_trips: Counter[str] = Counter()
        self.commands: Counter[str] = Counter()  # purpose -> commands
        self.by_name: Counter[str] = Counter()  # "purpose|COMMAND" -> commands

    def add(self, commands: list[tuple[Any, ...]]) -> None:
        with self.lock:
            trip = None
            for args in commands:
                what = purpose(args)
                name = _text(args[0]).upper().split(" ")[0] if args else "?"
                self.commands[what] += 1
                self.by_name[f"{what}|{name}"] += 1
                if trip is None and name not in ("MULTI", "EXEC"):
                    trip = what
            self.round_trips[trip or "no key"] += 1

    def dump(self, path: str) -> None:
        with self.lock:
            data = {"round_trips": dict(self.round_trips), "commands": dict(self.commands),
                    "by_name": dict(self.by_name), "at": time.time()}
        tmp = f"{path}.tmp"
        with open(tmp, "w") as handle:
            json.dump(data, handle)
        os.replace(tmp, path)


COUNTS = Counts()


def install() -> None:
    from redis.connection import AbstractConnection

    send_command, pack_command = AbstractConnection.send_command, AbstractConnection.pack_command
    pack_commands = AbstractConnection.pack_commands

    def counted_send_command(self: Any, *args: Any, **kwargs: Any) -> Any:
        COUNTS.add([args])
        return send_command(self, *args, **kwargs)

    def counted_pack_command(self: Any, *args: Any) -> Any:
        COUNTS.add([args])
        return pack_command(self, *args)

    def counted_pack_commands(self: Any, commands: Any) -> Any:
        commands = list(commands)
        COUNTS.add([tuple(c) for c in commands])
        return pack_commands(self, commands)

    AbstractConnection.send_command = counted_send_command  # type: ignore[method-assign]
    AbstractConnection.pack_command = counted_pack_command  # type: ignore[method-assign]
    AbstractConnection.pack_commands = counted_pack_commands  # type: ignore[method-assign]

    path = os.environ.get("MEETBRIDGE_REDIS_PROBE")
    if path:
        def loop() -> None:
            while True:
                COUNTS.dump(path)
                time.sleep(0.5)

        threading.Thread(target=loop, name="redis-probe", daemon=True).start()
        atexit.register(COUNTS.dump, path)


def run(argv: list[str]) -> None:
    import sys

    install()
    from celery.__main__ import main

    sys.argv = ["celery", *argv]
    sys.exit(main())


if __name__ == "__main__":
    import sys

    run(sys.argv[1:])
