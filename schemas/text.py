"""Text from outside that the service must be able to pass on.

At the floor, like schemas/times.py: it imports nothing from the service.
"""

from __future__ import annotations

import re
from typing import Any

# JSON may escape half of a character ("\ud83d" without its other half: an emoji cut in two by a client that
# counts UTF-16 units). Python reads it as a lone surrogate, which no UTF-8 request to Zoom or NeetoCal can carry.
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
# Control characters (C0, DEL, C1): RFC 5545 allows none in a calendar's text, and a strict client drops the feed.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
# How such a half looks in a JSON body, lower or upper case; a body without it needs no walk.
ESCAPED_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]")


def whole_characters(value: Any) -> Any:
    """`value` (parsed JSON) with every half character replaced by U+FFFD, the rest as it was."""
    if isinstance(value, str):
        return _LONE_SURROGATE.sub("\ufffd", value)
    if isinstance(value, dict):
        return {whole_characters(key): whole_characters(item) for key, item in value.items()}
    if isinstance(value, list):
        return [whole_characters(item) for item in value]
    return value


def printable_line(text: str) -> str:
    """`text` as one line of printable characters: line and paragraph breaks become spaces, controls go."""
    return " ".join(_CONTROL.sub(" ", text).split())
