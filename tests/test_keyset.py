"""Keyset paging against real PostgreSQL: complete walks, previous pages, cursors, limits, totals.

Most tests use a table created here, so every sort key type (timestamptz, text, numeric, bigint) and
both id types (bigint, uuid) are covered. Each example uses a fresh organization id, so examples
sharing the table never see each other's rows. The expected order always comes from a plain
ORDER BY query, and filters are applied to it in Python.
"""

from __future__ import annotations

import dataclasses
import itertools
import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aim.db import keyset
from aim.db.audit_ingest import ingest_audit_rows
from aim.db.keyset import CursorPosition, ListSpec, encode_cursor, fetch_page, iter_rows
from aim.errors import InvalidCursor, ValidationError

pytestmark = pytest.mark.integration

TABLE = "keyset_test_items"
COLUMNS = ("id", "uid", "organization_id", "created_at", "name", "kind", "score", "rank")
BASE_TIME = datetime(2025, 3, 1, 12, 0, tzinfo=timezone.utc)
KINDS = ("alpha", "beta", "gamma")

BY_CREATED = ListSpec(
    name="test.items_by_created",
    table=TABLE,
    columns=COLUMNS,
    sort="created_at",
    sort_type="timestamptz",
    id_type="bigint",
    equality={"kind": "kind"},
    time_column="created_at",
    prefix_column="name",
)
BY_NAME = ListSpec(
    name="test.items_by_name",
    table=TABLE,
    columns=COLUMNS,
    sort="lower(name)",
    sort_type="text",
    id_type="bigint",
    descending=False,
    equality={"kind": "kind"},
    prefix_column="name",
)
BY_SCORE = ListSpec(
    name="test.items_by_score", table=TABLE, columns=COLUMNS, sort="score", sort_type="numeric", id_type="bigint"
)
BY_RANK = ListSpec(
    name="test.items_by_rank",
    table=TABLE,
    columns=COLUMNS,
    sort="rank",
    sort_type="bigint",
    id_column="uid",
    id_type="uuid",
)
SPECS = (BY_CREATED, BY_NAME, BY_SCORE, BY_RANK)

# The plain query each spec must agree with.
ORACLE_ORDER = {
    BY_CREATED.name: "created_at DESC, id DESC",
    BY_NAME.name: "lower(name) ASC, id ASC",
    BY_SCORE.name: "score DESC, id DESC",
    BY_RANK.name: "rank DESC, uid DESC",
}
HYPOTHESIS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# Few distinct values, so many rows share a sort key and only the id orders them. Names include
# LIKE metacharacters and mixed case to exercise escaping and case-insensitive prefixes.
ITEM = st.fixed_dictionaries(
    {
        "minute": st.integers(0, 3),
        "name": st.text(alphabet="aAb_%\\", min_size=1, max_size=4),
        "kind": st.sampled_from(KINDS),
        "score": st.sampled_from([Decimal("0.1000"), Decimal("0.5000"), Decimal("0.9999")]),
        "rank": st.integers(-2, 2),
    }
)
ITEMS = st.lists(ITEM, min_size=0, max_size=40)


@pytest.fixture(scope="module")
def items_table(runtime):
    db = runtime.db
    db.execute(
        "test.keyset_table",
        f"""
        CREATE TABLE IF NOT EXISTS {TABLE} (
            id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            uid             uuid NOT NULL DEFAULT gen_random_uuid(),
            organization_id uuid NOT NULL,
            created_at      timestamptz NOT NULL,
            name            text NOT NULL,
            kind            text NOT NULL,
            score           numeric(5, 4) NOT NULL,
            rank            bigint NOT NULL
        )
        """,
    )
    db.execute("test.keyset_index", f"CREATE INDEX IF NOT EXISTS {TABLE}_by_created "
                                     f"ON {TABLE} (organization_id, created_at DESC, id DESC)")
    return TABLE


@pytest.fixture
def secret(runtime):
    return runtime.secret_key


def _insert(db, org, items, minute_offset=0):
    if not items:
        return
    with db.transaction() as conn, conn.cursor() as cursor:
        cursor.executemany(
            f"INSERT INTO {TABLE} (organization_id, created_at, name, kind, score, rank) VALUES (%s, %s, %s, %s, %s, %s)",
            [
                (org, BASE_TIME + timedelta(minutes=item["minute"] + minute_offset), item["name"], item["kind"],
                 item["score"], item["rank"])
                for item in items
            ],
        )


def _oracle(db, spec, org):
    """Every row of `org` in the spec's order, from a plain ORDER BY query."""
    return db.fetch_all(
        "test.keyset_oracle",
        f"SELECT {', '.join(COLUMNS)} FROM {TABLE} WHERE organization_id = %s ORDER BY {ORACLE_ORDER[spec.name]}",
        (org,),
    )


def _key(spec, row):
    return row[spec.id_column]


def _matches(row, filters):
    if "kind" in filters and row["kind"] != filters["kind"]:
        return False
    if "start" in filters and row["created_at"] < filters["start"]:
        return False
    if "end" in filters and row["created_at"] >= filters["end"]:
        return False
    if "prefix" in filters and not row["name"].lower().startswith(filters["prefix"].lower()):
        return False
    return True


def _walk(db, spec, org, secret, limit, filters=None, between_pages=None):
    """Follow next cursors from the first page to the last and return the pages."""
    pages = []
    cursor = None
    for _ in range(10_000):
        page = fetch_page(
            db, spec, scope={"organization_id": org}, filters=filters, cursor=cursor, limit=limit, secret=secret,
            count=False,
        )
        pages.append(page)
        if page.next_cursor is None:
            return pages
        cursor = page.next_cursor
        if between_pages is not None:
            between_pages()
    raise AssertionError("walk did not end")


def _ids(spec, pages):
    return [_key(spec, row) for page in pages for row in page.items]


@HYPOTHESIS
@given(items=ITEMS, limit=st.integers(1, 7), spec=st.sampled_from(SPECS))
def test_walk_visits_each_row_once(db, items_table, secret, items, limit, spec):
    org = uuid.uuid4()
    _insert(db, org, items)
    expected = [_key(spec, row) for row in _oracle(db, spec, org)]

    pages = _walk(db, spec, org, secret, limit)
    walked = _ids(spec, pages)

    assert walked == expected
    assert len(set(walked)) == len(walked)
    assert all(len(page.items) == limit for page in pages[:-1])
    assert pages[0].prev_cursor is None


@HYPOTHESIS
@given(items=st.lists(ITEM, min_size=1, max_size=40), limit=st.integers(1, 7), burst=st.integers(1, 5))
def test_walk_ignores_rows_added_on_top(db, items_table, secret, items, limit, burst):
    org = uuid.uuid4()
    _insert(db, org, items)
    expected = [row["id"] for row in _oracle(db, BY_CREATED, org)]
    added = itertools.count(1)

    def add_newer_rows():
        # Newer than every existing row, so they sort above the page being read.
        _insert(db, org, items[:burst], minute_offset=60 * next(added))

    walked = _ids(BY_CREATED, _walk(db, BY_CREATED, org, secret, limit, between_pages=add_newer_rows))

    assert walked == expected


FILTER_NAMES = ("kind", "time", "prefix")


@HYPOTHESIS
@given(
    items=ITEMS,
    limit=st.integers(1, 6),
    kind=st.sampled_from(KINDS),
    window=st.tuples(st.integers(0, 3), st.integers(1, 4)).filter(lambda w: w[0] < w[1]),
    prefix=st.text(alphabet="aAb_%\\", min_size=1, max_size=2),
)
def test_walk_every_filter_combination(db, items_table, secret, items, limit, kind, window, prefix):
    org = uuid.uuid4()
    _insert(db, org, items)
    for spec in (BY_CREATED, BY_NAME):
        everything = _oracle(db, spec, org)
        available = [name for name in FILTER_NAMES if name != "time" or spec.time_column]
        for size in range(len(available) + 1):
            for combination in itertools.combinations(available, size):
                filters = {}
                if "kind" in combination:
                    filters["kind"] = kind
                if "time" in combination:
                    filters["start"] = BASE_TIME + timedelta(minutes=window[0])
                    filters["end"] = BASE_TIME + timedelta(minutes=window[1])
                if "prefix" in combination:
                    filters["prefix"] = prefix
                expected = [row["id"] for row in everything if _matches(row, filters)]

                walked = _ids(spec, _walk(db, spec, org, secret, limit, filters=filters))

                assert walked == expected, (spec.name, filters)


@HYPOTHESIS
@given(items=ITEMS, limit=st.integers(1, 6), spec=st.sampled_from(SPECS))
def test_previous_pages_mirror_next_pages(db, items_table, secret, items, limit, spec):
    org = uuid.uuid4()
    _insert(db, org, items)
    scope = {"organization_id": org}
    pages = _walk(db, spec, org, secret, limit)

    for number in range(1, len(pages)):
        previous = fetch_page(
            db, spec, scope=scope, cursor=pages[number].prev_cursor, limit=limit, secret=secret, count=False
        )
        assert previous.items == pages[number - 1].items
        assert (previous.prev_cursor is None) == (number == 1)
        again = fetch_page(db, spec, scope=scope, cursor=previous.next_cursor, limit=limit, secret=secret, count=False)
        assert again.items == pages[number].items

    # Walk back from the last page to the first through prev cursors alone.
    backward = [pages[-1]]
    while backward[-1].prev_cursor is not None:
        backward.append(
            fetch_page(db, spec, scope=scope, cursor=backward[-1].prev_cursor, limit=limit, secret=secret, count=False)
        )
    assert [page.items for page in reversed(backward)] == [page.items for page in pages]


def test_previous_page_after_rows_added_on_top(db, items_table, secret):
    org = uuid.uuid4()
    _insert(db, org, [{"minute": 0, "name": "n", "kind": "alpha", "score": Decimal("0.5"), "rank": 0}] * 6)
    scope = {"organization_id": org}
    first = fetch_page(db, BY_CREATED, scope=scope, limit=3, secret=secret)
    second = fetch_page(db, BY_CREATED, scope=scope, cursor=first.next_cursor, limit=3, secret=secret)
    _insert(db, org, [{"minute": 30, "name": "new", "kind": "alpha", "score": Decimal("0.5"), "rank": 0}] * 2)

    previous = fetch_page(db, BY_CREATED, scope=scope, cursor=second.prev_cursor, limit=3, secret=secret)

    assert previous.items == first.items
    assert previous.prev_cursor is not None
    newest = fetch_page(db, BY_CREATED, scope=scope, cursor=previous.prev_cursor, limit=3, secret=secret)
    assert [row["name"] for row in newest.items] == ["new", "new"]
    assert newest.prev_cursor is None


def test_iter_rows_streams_every_row(db, items_table):
    org = uuid.uuid4()
    items = [{"minute": i % 3, "name": f"n{i}", "kind": KINDS[i % 3], "score": Decimal("0.5"), "rank": i}
             for i in range(25)]
    _insert(db, org, items)
    expected = [row["id"] for row in _oracle(db, BY_CREATED, org)]

    streamed = iter_rows(db, BY_CREATED, scope={"organization_id": org}, batch=4)
    first = next(streamed)
    # Rows added while an export runs sort above it and must not appear or shift the rest.
    _insert(db, org, items[:5], minute_offset=120)
    rest = list(streamed)

    assert [row["id"] for row in [first, *rest]] == expected
    assert "keyset_sort" not in first
    assert "keyset_id" not in first


def test_iter_rows_applies_filters(db, items_table):
    org = uuid.uuid4()
    items = [{"minute": 0, "name": f"n{i}", "kind": KINDS[i % 3], "score": Decimal("0.5"), "rank": i}
             for i in range(12)]
    _insert(db, org, items)
    expected = [row["id"] for row in _oracle(db, BY_CREATED, org) if row["kind"] == "beta"]

    streamed = list(iter_rows(db, BY_CREATED, scope={"organization_id": org}, filters={"kind": "beta"}, batch=2))

    assert [row["id"] for row in streamed] == expected


# --- cursors ------------------------------------------------------------------------------------


def _two_pages(db, org, secret, filters=None):
    _insert(db, org, [{"minute": i, "name": f"n{i}", "kind": "alpha", "score": Decimal("0.5"), "rank": i}
                      for i in range(4)])
    first = fetch_page(db, BY_CREATED, scope={"organization_id": org}, filters=filters, limit=2, secret=secret)
    assert first.next_cursor is not None
    return first


BASE64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(spot=st.integers(0, 10_000), shift=st.integers(1, len(BASE64URL) - 1))
def test_tampered_cursor_is_rejected(db, items_table, secret, spot, shift):
    org = uuid.uuid4()
    cursor = _two_pages(db, org, secret).next_cursor
    # Cursor length varies with the id, so the position is drawn independently of it.
    position = spot % len(cursor)
    replacement = BASE64URL[(BASE64URL.index(cursor[position]) + shift) % len(BASE64URL)]
    tampered = cursor[:position] + replacement + cursor[position + 1:]

    with pytest.raises(InvalidCursor) as caught:
        fetch_page(db, BY_CREATED, scope={"organization_id": org}, cursor=tampered, limit=2, secret=secret)

    assert caught.value.field == "cursor"
    assert "request the first page again without a cursor" in str(caught.value)


def test_truncated_cursor_is_rejected(db, items_table, secret):
    org = uuid.uuid4()
    cursor = _two_pages(db, org, secret).next_cursor
    for length in range(len(cursor)):
        with pytest.raises(InvalidCursor, match="request the first page again"):
            fetch_page(db, BY_CREATED, scope={"organization_id": org}, cursor=cursor[:length], limit=2, secret=secret)


@pytest.mark.parametrize(
    "cursor",
    ["not a cursor", "!!!!", "eyJ2IjoxfQ", "A" * 5000, "====", "WzFd"],
)
def test_malformed_cursor_is_rejected(db, items_table, secret, cursor):
    with pytest.raises(InvalidCursor, match="request the first page again"):
        fetch_page(db, BY_CREATED, scope={"organization_id": uuid.uuid4()}, cursor=cursor, limit=2, secret=secret)


def test_cursor_with_other_filters_is_rejected(db, items_table, secret):
    org = uuid.uuid4()
    cursor = _two_pages(db, org, secret, filters={"kind": "alpha"}).next_cursor

    with pytest.raises(InvalidCursor, match="other filters"):
        fetch_page(db, BY_CREATED, scope={"organization_id": org}, filters={"kind": "beta"}, cursor=cursor,
                   limit=2, secret=secret)
    with pytest.raises(InvalidCursor, match="other filters"):
        fetch_page(db, BY_CREATED, scope={"organization_id": org}, cursor=cursor, limit=2, secret=secret)


def test_cursor_keeps_working_with_same_filters(db, items_table, secret):
    org = uuid.uuid4()
    first = _two_pages(db, org, secret, filters={"kind": "alpha", "prefix": None})

    second = fetch_page(db, BY_CREATED, scope={"organization_id": org}, filters={"kind": "alpha"},
                        cursor=first.next_cursor, limit=2, secret=secret)

    assert [row["name"] for row in second.items] == ["n1", "n0"]


def test_cursor_from_other_organization_is_rejected(db, items_table, secret):
    cursor = _two_pages(db, uuid.uuid4(), secret).next_cursor

    with pytest.raises(InvalidCursor, match="another organization"):
        fetch_page(db, BY_CREATED, scope={"organization_id": uuid.uuid4()}, cursor=cursor, limit=2, secret=secret)


def test_cursor_from_other_list_is_rejected(db, items_table, secret):
    org = uuid.uuid4()
    cursor = _two_pages(db, org, secret).next_cursor

    with pytest.raises(InvalidCursor, match="issued for list 'test.items_by_created'"):
        fetch_page(db, BY_NAME, scope={"organization_id": org}, cursor=cursor, limit=2, secret=secret)


def test_cursor_signed_with_other_secret_is_rejected(db, items_table, secret):
    org = uuid.uuid4()
    cursor = _two_pages(db, org, secret).next_cursor

    with pytest.raises(InvalidCursor, match="signature does not match"):
        fetch_page(db, BY_CREATED, scope={"organization_id": org}, cursor=cursor, limit=2, secret=b"another secret")


def test_encoded_cursor_resumes_after_position(db, items_table, secret):
    org = uuid.uuid4()
    _two_pages(db, org, secret)
    rows = _oracle(db, BY_CREATED, org)
    position = CursorPosition(rows[1]["created_at"], rows[1]["id"], keyset.NEXT)
    cursor = encode_cursor(BY_CREATED, position, scope={"organization_id": org}, filters=None, secret=secret)

    page = fetch_page(db, BY_CREATED, scope={"organization_id": org}, cursor=cursor, limit=10, secret=secret)

    assert page.items == rows[2:]


def test_cursor_with_long_text_key(db, items_table, secret):
    org = uuid.uuid4()
    # 300 four-byte characters, the longest names AIM stores, as the sort key inside the cursor.
    names = ["\U0001F600" * 300 + suffix for suffix in ("a", "b", "c")]
    _insert(db, org, [{"minute": 0, "name": n, "kind": "alpha", "score": Decimal("0.5"), "rank": 0} for n in names])
    scope = {"organization_id": org}

    first = fetch_page(db, BY_NAME, scope=scope, limit=2, secret=secret)
    second = fetch_page(db, BY_NAME, scope=scope, cursor=first.next_cursor, limit=2, secret=secret)

    assert len(first.next_cursor) <= keyset.MAX_CURSOR_LENGTH
    assert [row["name"] for row in first.items] == names[:2]
    assert [row["name"] for row in second.items] == names[2:]


# --- limits, filters, specs --------------------------------------------------------------------


@pytest.mark.parametrize("limit", [0, 1001, -1, True, 1.5, "10", None])
def test_limit_out_of_range_is_rejected(db, items_table, secret, limit):
    with pytest.raises(ValidationError) as caught:
        fetch_page(db, BY_CREATED, scope={"organization_id": uuid.uuid4()}, limit=limit, secret=secret)

    assert caught.value.field == "limit"
    assert "expected a whole number from 1 to 1000" in caught.value.message


@pytest.mark.parametrize("limit", [1, 1000])
def test_limit_bounds_are_accepted(db, items_table, secret, limit):
    page = fetch_page(db, BY_CREATED, scope={"organization_id": uuid.uuid4()}, limit=limit, secret=secret)

    assert page.items == []
    assert page.total == 0


@pytest.mark.parametrize(
    ("filters", "field"),
    [
        ({"colour": "red"}, "filters"),
        ({"start": datetime(2025, 1, 1)}, "start"),
        ({"end": "2025-01-01"}, "end"),
        ({"start": BASE_TIME, "end": BASE_TIME}, "end"),
        ({"prefix": "x" * 201}, "prefix"),
        ({"kind": ["alpha", "beta"]}, "kind"),
    ],
)
def test_bad_filter_is_rejected(db, items_table, secret, filters, field):
    with pytest.raises(ValidationError) as caught:
        fetch_page(db, BY_CREATED, scope={"organization_id": uuid.uuid4()}, filters=filters, secret=secret)

    assert caught.value.field == field


def test_prefix_matches_metacharacters_literally(db, items_table, secret):
    org = uuid.uuid4()
    names = ["a_b", "axb", "a%b", "aXXb", "A\\b", "a\\c"]
    _insert(db, org, [{"minute": 0, "name": n, "kind": "alpha", "score": Decimal("0.5"), "rank": 0} for n in names])

    def names_for(prefix):
        page = fetch_page(db, BY_NAME, scope={"organization_id": org}, filters={"prefix": prefix}, secret=secret)
        return sorted(row["name"] for row in page.items)

    assert names_for("a_") == ["a_b"]
    assert names_for("a%") == ["a%b"]
    assert names_for("a\\") == ["A\\b", "a\\c"]
    assert names_for("AX") == ["aXXb", "axb"]


def test_filter_value_of_wrong_type_is_rejected(db, org_id, secret):
    spec = ListSpec(name="test.audit_by_org", table="audit_logs", columns=("id",), sort="occurred_at",
                    sort_type="timestamptz", id_type="bigint", equality={"ip": "ip_address"})

    with pytest.raises(ValidationError) as caught:
        fetch_page(db, spec, scope={"organization_id": org_id}, filters={"ip": "not an address"}, secret=secret)

    assert caught.value.field == "filters"


def test_missing_scope_is_a_programming_error(db, items_table, secret):
    with pytest.raises(ValueError, match="needs scope"):
        fetch_page(db, BY_CREATED, scope={}, secret=secret)
    with pytest.raises(ValueError, match="None"):
        fetch_page(db, BY_CREATED, scope={"organization_id": None}, secret=secret)


@pytest.mark.parametrize(
    "change",
    [
        {"name": "Bad Name"},
        {"sort_type": "float"},
        {"id_type": "text"},
        {"scope": ()},
        {"equality": {"start": "created_at"}},
        {"equality": {"kind": "kind; DROP TABLE agents"}},
        {"sort": "created_at DESC"},
        {"sort": "lower(name"},
        {"prefix_column": "lower(name)"},
        {"table": "items WHERE name LIKE 'a%'"},
    ],
)
def test_spec_rejects_unsafe_declarations(change):
    with pytest.raises(ValueError):
        dataclasses.replace(BY_CREATED, **change)


# --- totals ------------------------------------------------------------------------------------


def test_total_is_exact_below_threshold(db, items_table, secret):
    org = uuid.uuid4()
    _insert(db, org, [{"minute": 0, "name": f"n{i}", "kind": KINDS[i % 3], "score": Decimal("0.5"), "rank": 0}
                      for i in range(30)])

    page = fetch_page(db, BY_CREATED, scope={"organization_id": org}, limit=5, secret=secret)
    filtered = fetch_page(db, BY_CREATED, scope={"organization_id": org}, filters={"kind": "beta"}, limit=5,
                          secret=secret)

    assert page.total == 30
    assert page.total_is_estimate is False
    assert filtered.total == 10
    assert filtered.total_is_estimate is False


def test_total_at_threshold_is_exact(db, items_table, secret):
    org = uuid.uuid4()
    _insert(db, org, [{"minute": 0, "name": f"n{i}", "kind": "alpha", "score": Decimal("0.5"), "rank": 0}
                      for i in range(10)])

    page = fetch_page(db, BY_CREATED, scope={"organization_id": org}, limit=5, secret=secret, count_threshold=10)

    assert page.total == 10
    assert page.total_is_estimate is False


def test_total_above_threshold_is_estimate(db, items_table, secret):
    org = uuid.uuid4()
    _insert(db, org, [{"minute": 0, "name": f"n{i}", "kind": "alpha", "score": Decimal("0.5"), "rank": 0}
                      for i in range(200)])
    db.execute("test.keyset_analyze", f"ANALYZE {TABLE}")

    page = fetch_page(db, BY_CREATED, scope={"organization_id": org}, limit=5, secret=secret, count_threshold=10)

    assert page.total_is_estimate is True
    assert page.total >= 11
    assert len(page.items) == 5


def test_total_can_be_skipped(db, items_table, secret):
    page = fetch_page(db, BY_CREATED, scope={"organization_id": uuid.uuid4()}, secret=secret, count=False)

    assert page.total is None
    assert page.total_is_estimate is False


# --- the real audit_logs table -----------------------------------------------------------------

AUDIT_LIST = ListSpec(
    name="test.audit_list",
    table="audit_logs",
    columns=("id", "occurred_at", "actor_id", "action", "result"),
    sort="occurred_at",
    sort_type="timestamptz",
    id_type="bigint",
    equality={"action": "action", "actor_id": "actor_id", "result": "result"},
    time_column="occurred_at",
)


def test_audit_walk_crosses_partitions(db, org_id, secret):
    # Rows span three months, so pages cross partition boundaries, and pairs share a timestamp.
    start = datetime(2024, 1, 31, 23, 0, tzinfo=timezone.utc)
    rows = [
        (org_id, start + timedelta(days=(i // 2) * 7), "user", f"u{i % 3}", ("a.read", "a.write")[i % 2], "agent",
         str(i), "success", None, None, None, None)
        for i in range(24)
    ]
    ingest_audit_rows(db, rows)
    expected = db.fetch_all(
        "test.audit_oracle",
        "SELECT id FROM audit_logs WHERE organization_id = %s AND action = 'a.write' ORDER BY occurred_at DESC, id DESC",
        (org_id,),
    )

    pages = _walk(db, AUDIT_LIST, org_id, secret, 5, filters={"action": "a.write"})

    assert _ids(AUDIT_LIST, pages) == [row["id"] for row in expected]
    assert len(expected) == 12
