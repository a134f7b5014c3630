"""``api.conditional.conditional_rows``: bodies kept by the tag their rows gave them."""

from __future__ import annotations

from pydantic import BaseModel
from starlette.requests import Request

from api import conditional
from api.conditional import conditional_rows


class Body(BaseModel):
    n: int


def _request(if_none_match: str | None = None) -> Request:
    headers = [(b"if-none-match", if_none_match.encode())] if if_none_match else []
    return Request({"type": "http", "method": "GET", "path": "/", "headers": headers, "query_string": b""})


def test_a_kept_body_is_served_without_loading(monkeypatch):
    monkeypatch.setattr(conditional, "_BODIES", {})
    loads = []

    def load(n: int):
        loads.append(n)
        return f'"t{n}"', Body(n=n)

    first = conditional_rows(_request(), '"t1"', lambda: load(1))
    again = conditional_rows(_request(), '"t1"', lambda: load(99))
    assert loads == [1]
    assert first.body == again.body == b'{"n":1}'
    assert again.headers["etag"] == '"t1"'
    assert conditional_rows(_request('"t1"'), '"t1"', lambda: load(99)).status_code == 304
    assert loads == [1]


def test_a_body_is_kept_under_the_tag_of_the_rows_it_was_built_of(monkeypatch):
    """The rows changed between the version read and the load: the answer and the kept
    body carry the newer tag, never the older one."""
    monkeypatch.setattr(conditional, "_BODIES", {})
    r = conditional_rows(_request(), '"old"', lambda: ('"new"', Body(n=2)))
    assert r.headers["etag"] == '"new"'
    assert r.body == b'{"n":2}'
    assert conditional._BODIES == {'"new"': b'{"n":2}'}


def test_a_full_store_starts_over(monkeypatch):
    monkeypatch.setattr(conditional, "_BODIES", {})
    monkeypatch.setattr(conditional, "MAX_BODIES", 2)
    for n in range(3):
        conditional_rows(_request(), f'"t{n}"', lambda n=n: (f'"t{n}"', Body(n=n)))
    assert list(conditional._BODIES) == ['"t2"']
