"""The paginators (one per API style) and the clients that use them, at the HTTP boundary (respx)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import respx

from workers.clients.errors import ValidationFailed
from workers.clients.meetergo import PAGE_SIZE, MeetergoClient
from workers.clients.paging import numbered_pages, offset_pages, token_pages

MEETERGO = "https://meetergo.test"


def mocked() -> httpx.BaseTransport:
    """httpx's own transport, which respx intercepts (the service's default one, workers/clients/transport.py,
    it does not)."""
    return httpx.HTTPTransport()


def pages_of(items: list[int], size: int) -> list[list[int]]:
    return [items[n:n + size] for n in range(0, len(items), size)] or [[]]


@pytest.mark.parametrize("count, total_pages, expected_requests", [
    (0, None, [1]),  # an empty first page ends it
    (3, None, [1, 2]),  # a short page ends it
    (4, None, [1, 2, 3]),  # a full last page costs one more request, answered empty
    (4, 2, [1, 2]),  # ... unless the API counts its pages
])
def test_numbered_pages_stop_at_an_empty_or_short_page_or_the_counted_last(
        count: int, total_pages: int | None, expected_requests: list[int]) -> None:
    pages, requested = pages_of(list(range(count)), 2), []

    def fetch(page: int) -> tuple[list[int], int | None]:
        requested.append(page)
        return (pages[page - 1] if page <= len(pages) else []), total_pages

    assert [item for page in numbered_pages(fetch, page_size=2) for item in page] == list(range(count))
    assert requested == expected_requests


def test_numbered_pages_count_from_the_first_page_given_and_fetch_lazily() -> None:
    requested: list[int] = []

    def fetch(page: int) -> tuple[list[int], None]:
        requested.append(page)
        return [page, page], None

    pages = numbered_pages(fetch, page_size=2, first=0)
    assert [next(pages), next(pages)] == [[0, 0], [1, 1]]
    assert requested == [0, 1]  # nothing fetched ahead of what was read


def test_offset_pages_advance_by_what_came_back_until_the_total() -> None:
    users, offsets = list(range(5)), []

    def fetch(offset: int) -> tuple[list[int], int]:
        offsets.append(offset)
        return users[offset:offset + 2], len(users)

    assert [user for page in offset_pages(fetch) for user in page] == users
    assert offsets == [0, 2, 4]


def test_offset_pages_stop_at_an_empty_page_whatever_the_total_says() -> None:
    offsets: list[int] = []

    def fetch(offset: int) -> tuple[list[int], int]:
        offsets.append(offset)
        return ([1] if offset == 0 else []), 10

    assert list(offset_pages(fetch)) == [[1], []]
    assert offsets == [0, 1]


def test_token_pages_follow_the_token_until_there_is_none() -> None:
    chain: dict[str | None, tuple[list[str], str | None]] = {None: (["a"], "t1"), "t1": (["b"], "t2"), "t2": ([], "")}
    tokens: list[str | None] = []

    def fetch(token: str | None) -> tuple[list[str], str | None]:
        tokens.append(token)
        return chain[token]

    assert list(token_pages(fetch)) == [["a"], ["b"], []]
    assert tokens == [None, "t1", "t2"]


# --- meetergo: pages numbered from 0 or 1, users by offset ------------------------------------------------------
@pytest.fixture
def meetergo() -> MeetergoClient:
    return MeetergoClient(MEETERGO, api_key="key", timeout=5, transport=mocked())


def appointments(*ids: int) -> httpx.Response:
    return httpx.Response(200, json={"appointments": [{"id": f"a{n}"} for n in ids]})


def page_param(request: httpx.Request) -> int:
    return int(request.url.params["page"])


@respx.mock
def test_meetergo_pages_from_1_when_page_0_is_refused(meetergo: MeetergoClient) -> None:
    full = list(range(PAGE_SIZE))

    def answer(request: httpx.Request) -> httpx.Response:
        page = page_param(request)
        if page == 0:
            return httpx.Response(400, json={"message": "page must not be less than 1"})
        return appointments(*full) if page == 1 else appointments(PAGE_SIZE)

    route = respx.get(f"{MEETERGO}/v4/appointment/paginated").mock(side_effect=answer)
    assert [item["id"] for item in meetergo.appointments()] == [f"a{n}" for n in [*full, PAGE_SIZE]]
    assert [page_param(call.request) for call in route.calls] == [0, 1, 2]


@respx.mock
def test_meetergo_drops_repeats_and_stops_when_pages_bring_nothing_new(meetergo: MeetergoClient) -> None:
    full = list(range(PAGE_SIZE))
    # Page 0 and page 1 are the same page (numbering from 1), then the API ignores the page number.
    route = respx.get(f"{MEETERGO}/v4/appointment/paginated").mock(return_value=appointments(*full))
    assert [item["id"] for item in meetergo.appointments()] == [f"a{n}" for n in full]
    assert [page_param(call.request) for call in route.calls] == [0, 1, 2]


@respx.mock
def test_meetergo_refusing_a_later_page_is_an_error(meetergo: MeetergoClient) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        if page_param(request) == 0:
            return appointments(*range(PAGE_SIZE))
        return httpx.Response(400, json={"message": "bad page"})

    respx.get(f"{MEETERGO}/v4/appointment/paginated").mock(side_effect=answer)
    with pytest.raises(ValidationFailed):
        list(meetergo.appointments())


@respx.mock
def test_meetergo_users_by_offset(meetergo: MeetergoClient) -> None:
    everyone: list[dict[str, Any]] = [{"email": f"u{n}@example.com"} for n in range(150)]

    def answer(request: httpx.Request) -> httpx.Response:
        offset, limit = int(request.url.params["offset"]), int(request.url.params["limit"])
        return httpx.Response(200, json={"users": everyone[offset:offset + limit], "total": len(everyone)})

    route = respx.get(f"{MEETERGO}/v4/user").mock(side_effect=answer)
    assert list(meetergo.users()) == everyone
    assert [call.request.url.params["offset"] for call in route.calls] == ["0", "100"]
