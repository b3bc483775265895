"""One paginator per style of list endpoint: numbered pages, offsets, and continuation tokens.

Each takes a `fetch` that makes one request and returns that page's items with what the API says about the
rest, and yields page after page (lists, so a caller can decide per page, as meetergo's must). A paginator
fetches lazily: a caller that stops early makes no further request.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TypeVar

T = TypeVar("T")


def numbered_pages(fetch: Callable[[int], tuple[list[T], int | None]], *, page_size: int,
                   first: int = 1) -> Iterator[list[T]]:
    """Pages `first`, `first + 1`, ...; `fetch(page)` returns (items, total pages or None when not told).

    Stops after an empty or short page, or the last page the API counts (pages counted from 1)."""
    page = first
    while True:
        items, total_pages = fetch(page)
        yield items
        if not items or len(items) < page_size or (total_pages is not None and page >= total_pages):
            return
        page += 1


def offset_pages(fetch: Callable[[int], tuple[list[T], int]]) -> Iterator[list[T]]:
    """Pages from offset 0 on; `fetch(offset)` returns (items, total). Stops at an empty page or the total."""
    offset = 0
    while True:
        items, total = fetch(offset)
        yield items
        offset += len(items)
        if not items or offset >= total:
            return


def token_pages(fetch: Callable[[str | None], tuple[list[T], str | None]]) -> Iterator[list[T]]:
    """Pages chained by a continuation token; `fetch(token)` (None first) returns (items, next token or None)."""
    token: str | None = None
    while True:
        items, token = fetch(token)
        yield items
        if not token:
            return
