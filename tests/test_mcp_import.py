"""MCP Registry import against real PostgreSQL: the seed export file and a loopback /v0/servers API."""

from __future__ import annotations

import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from typer.testing import CliRunner

from aim.cli import app
from aim.errors import NotFound
from aim.services import mcp_registry, mcp_servers, organizations
from aim.services.actor import Actor
from aim.services.mcp_registry import RegistryError, fetch_registry_pages, import_registry, load_registry_file
from conftest import MCP_REGISTRY_FILE

pytestmark = pytest.mark.integration

ADMIN = Actor("user", "admin-1", role="admin")
EMPTY_ENTRY_INDEXES = [15, 25, 108, 132, 188, 207, 406]


@pytest.fixture(scope="module")
def seed_entries() -> list[dict]:
    return load_registry_file(MCP_REGISTRY_FILE)


def _server_rows(db, org_id) -> list[dict]:
    return db.fetch_all(
        "test.servers",
        "SELECT id, name, url, registry_id, source, version, description, metadata FROM mcp_servers "
        "WHERE organization_id = %s ORDER BY name",
        (org_id,),
    )


def _entry(entry_id: str, name: str, url: str, **extra) -> dict:
    return {
        "id": entry_id, "name": name, "description": f"{name} server",
        "repository": {"url": url, "source": "github", "id": "1"},
        "version_detail": {"version": "1.0.0", "release_date": "2025-05-16T00:00:00Z", "is_latest": True},
        "packages": [], **extra,
    }


# --- the seed export file ---------------------------------------------------------------------


def test_seed_file_has_471_entries(seed_entries):
    assert len(seed_entries) == 471


def test_import_seed_file(db, org_id, seed_entries):
    calls: list[tuple[int, int]] = []

    report = import_registry(db, org_id, ADMIN, seed_entries, progress=lambda done, total: calls.append((done, total)))

    assert report.created == 464
    assert report.updated == 0
    assert report.unchanged == 0
    assert [index for index, _ in report.skipped] == EMPTY_ENTRY_INDEXES
    assert report.skipped[0][1] == "entry 15: missing id, name, url"
    assert report.total == 471
    assert calls[-1] == (471, 471)
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)

    rows = _server_rows(db, org_id)
    assert len(rows) == 464
    assert {row["source"] for row in rows} == {"registry"}
    assert len({row["registry_id"] for row in rows}) == 464
    first = next(row for row in rows if row["name"] == "io.github.21st-dev/magic-mcp")
    assert first["registry_id"] == "4e9cf4cf-71f6-4aca-bae8-2d10a29ca2e0"
    assert first["url"] == "https://github.com/21st-dev/magic-mcp"
    assert first["version"] == "0.0.1-seed"
    assert first["metadata"]["registry"]["packages"][0]["name"] == "@21st-dev/magic"
    assert first["metadata"]["registry"]["repository"]["source"] == "github"


def test_import_seed_shared_urls_get_fragments(db, org_id, seed_entries):
    import_registry(db, org_id, ADMIN, seed_entries)
    rows = _server_rows(db, org_id)

    for shared in ("https://github.com/mendableai/firecrawl-mcp-server", "http://localhost:3001/sse",
                   "http://localhost:8000/sse"):
        users = [row for row in rows if row["url"].split("#")[0] == shared]
        assert len(users) == 2, shared
        plain = [row for row in users if row["url"] == shared]
        assert len(plain) == 1, shared
        other = next(row for row in users if row["url"] != shared)
        assert other["url"] == f"{shared}#{other['name']}"


def test_second_import_changes_nothing(db, org_id, seed_entries):
    import_registry(db, org_id, ADMIN, seed_entries)
    before = _server_rows(db, org_id)

    report = import_registry(db, org_id, ADMIN, seed_entries)

    assert report.created == 0
    assert report.updated == 0
    assert report.unchanged == 464
    assert len(report.skipped) == 7
    assert _server_rows(db, org_id) == before


def test_import_audit_rows(db, org_id, seed_entries):
    import_registry(db, org_id, ADMIN, seed_entries)

    counts = {
        row["action"]: row["n"]
        for row in db.fetch_all(
            "test.audit",
            "SELECT action, count(*) AS n FROM audit_logs WHERE organization_id = %s GROUP BY action",
            (org_id,),
        )
    }
    summary = db.fetch_value(
        "test.audit_summary",
        "SELECT details FROM audit_logs WHERE organization_id = %s AND action = 'mcp_server.import'",
        (org_id,),
    )
    assert counts == {"mcp_server.register": 464, "mcp_server.import": 1}
    assert summary["created"] == 464
    assert summary["skipped"] == 7


# --- upserts ----------------------------------------------------------------------------------


def test_import_updates_changed_entry(db, org_id):
    entries = [_entry("id-1", "io.example/one", "https://github.com/example/one"),
               _entry("id-2", "io.example/two", "https://github.com/example/two")]
    import_registry(db, org_id, ADMIN, entries)
    entries[1]["description"] = "rewritten"
    entries[1]["version_detail"]["version"] = "2.0.0"

    report = import_registry(db, org_id, ADMIN, entries)

    assert report.updated == 1
    assert report.unchanged == 1
    two = next(row for row in _server_rows(db, org_id) if row["registry_id"] == "id-2")
    assert two["description"] == "rewritten"
    assert two["version"] == "2.0.0"


def test_import_keeps_local_fields(db, org_id):
    entries = [_entry("id-1", "io.example/one", "https://github.com/example/one")]
    import_registry(db, org_id, ADMIN, entries)
    server = _server_rows(db, org_id)[0]
    mcp_servers.update_server(db, org_id, server["id"], ADMIN, {"status": "deprecated", "metadata": {
        "owner": "team-a", "registry": server["metadata"]["registry"]}})

    report = import_registry(db, org_id, ADMIN, entries)

    assert report.unchanged == 1
    stored = mcp_servers.get_server(db, org_id, server["id"])
    assert stored["status"] == "deprecated"
    assert stored["metadata"]["owner"] == "team-a"


def test_import_beside_manual_server(db, org_id):
    manual = mcp_servers.register_server(db, org_id, ADMIN, name="hand-made", url="https://github.com/example/one")

    report = import_registry(db, org_id, ADMIN, [_entry("id-1", "io.example/one", "https://github.com/example/one")])

    assert report.created == 1
    imported = next(row for row in _server_rows(db, org_id) if row["registry_id"] == "id-1")
    assert imported["url"] == "https://github.com/example/one#io.example/one"
    assert mcp_servers.get_server(db, org_id, manual["id"])["url"] == "https://github.com/example/one"


def test_import_skips_bad_entries(db, org_id):
    entries = [
        _entry("id-1", "io.example/one", "https://github.com/example/one"),
        "not an object",
        _entry("id-1", "io.example/again", "https://github.com/example/again"),
        _entry("id-3", "io.example/ftp", "ftp://example.com/x"),
        {"id": "id-4", "name": "io.example/no-url", "repository": {}},
    ]

    report = import_registry(db, org_id, ADMIN, entries)

    assert report.created == 1
    assert [index for index, _ in report.skipped] == [1, 2, 3, 4]
    assert report.skipped[0][1] == "entry 1: expected a JSON object, got str"
    assert "repeats entry 0" in report.skipped[1][1]
    assert "invalid url" in report.skipped[2][1]
    assert report.skipped[3][1] == "entry 4: missing url"


def test_import_newer_registry_format(db, org_id):
    wrapped = {
        "server": {
            "name": "io.example/remote", "description": "remote server", "version": "3.1.0",
            "remotes": [{"type": "streamable-http", "url": "https://remote.example.com/mcp"}],
        },
        "_meta": {mcp_registry.OFFICIAL_META: {"serverId": "srv-123", "isLatest": True}},
    }
    by_name = {"name": "io.example/named", "version": "0.1.0",
               "repository": {"url": "https://github.com/example/named", "source": "github"}}

    report = import_registry(db, org_id, ADMIN, [mcp_registry.unwrap_server(wrapped), by_name])

    assert report.created == 2
    rows = {row["registry_id"]: row for row in _server_rows(db, org_id)}
    assert rows["srv-123"]["url"] == "https://remote.example.com/mcp"
    assert rows["srv-123"]["version"] == "3.1.0"
    assert rows["io.example/named"]["url"] == "https://github.com/example/named"


# --- files ------------------------------------------------------------------------------------


def test_load_registry_file_forms(tmp_path):
    entry = _entry("id-1", "io.example/one", "https://github.com/example/one")
    bare = tmp_path / "bare.json"
    bare.write_text(json.dumps([entry]))
    wrapped = tmp_path / "wrapped.json"
    wrapped.write_text(json.dumps({"servers": [{"server": entry, "_meta": {}}]}))
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"items": []}))
    broken = tmp_path / "broken.json"
    broken.write_text("[{")

    assert load_registry_file(bare) == [entry]
    assert load_registry_file(wrapped)[0]["id"] == "id-1"
    with pytest.raises(RegistryError, match="'servers' list"):
        load_registry_file(wrong)
    with pytest.raises(RegistryError, match="not valid JSON"):
        load_registry_file(broken)
    with pytest.raises(RegistryError, match="cannot read"):
        load_registry_file(tmp_path / "missing.json")


# --- the /v0/servers API on a loopback server -------------------------------------------------


class _RegistryHandler(BaseHTTPRequestHandler):
    """Serves `server.entries` as /v0/servers pages; cursors are entry offsets."""

    def do_GET(self) -> None:  # noqa: N802 (http.server's method name)
        state = self.server
        parts = urlsplit(self.path)
        state.requests.append(self.path)
        if state.failures_left > 0:
            state.failures_left -= 1
            self._send(503, {"error": "try again"})
            return
        if state.raw_body is not None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(state.raw_body)))
            self.end_headers()
            self.wfile.write(state.raw_body)
            return
        if parts.path != "/v0/servers":
            self._send(404, {"error": "not found"})
            return
        query = parse_qs(parts.query)
        start = int(query.get("cursor", ["0"])[0])
        limit = int(query.get("limit", ["30"])[0])
        page = state.entries[start : start + limit]
        end = start + len(page)
        next_cursor = state.loop_cursor or (str(end) if end < len(state.entries) else None)
        # Odd pages use the newer layout, which wraps each item and spells the cursor in camelCase.
        if (start // limit) % 2:
            servers = [{"server": item, "_meta": {}} for item in page]
            metadata = {"nextCursor": next_cursor, "count": len(page)}
        else:
            servers = page
            metadata = {"next_cursor": next_cursor, "count": len(page)}
        self._send(200, {"servers": servers, "metadata": metadata})

    def _send(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def registry_server(seed_entries):
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _RegistryHandler)
    httpd.entries = seed_entries
    httpd.requests = []
    httpd.failures_left = 0
    httpd.loop_cursor = None
    httpd.raw_body = None
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


def _base_url(httpd) -> str:
    host, port = httpd.server_address[:2]
    return f"http://{host}:{port}"


@pytest.fixture
def client():
    # trust_env=False keeps a proxy from the environment out of the way, so requests stay on loopback.
    with httpx.Client(trust_env=False, timeout=10.0) as http:
        yield http


def test_fetch_pages_and_import(db, org_id, registry_server, client):
    entries = list(fetch_registry_pages(_base_url(registry_server), client, page_limit=200))

    report = import_registry(db, org_id, ADMIN, entries)

    assert len(registry_server.requests) == 3
    assert "cursor=200" in registry_server.requests[1]
    assert len(entries) == 471
    assert entries[200]["id"] == registry_server.entries[200]["id"]
    assert report.created == 464
    assert len(report.skipped) == 7


def test_fetch_retries_server_error(registry_server, client):
    registry_server.failures_left = 1

    entries = list(fetch_registry_pages(_base_url(registry_server), client, page_limit=500))

    assert len(entries) == 471
    assert len(registry_server.requests) == 2


def test_fetch_not_found_raises(registry_server, client):
    with pytest.raises(RegistryError, match="HTTP 404"):
        list(fetch_registry_pages(_base_url(registry_server) + "/elsewhere", client))


def test_fetch_looping_cursor_raises(registry_server, client):
    registry_server.loop_cursor = "100"

    with pytest.raises(RegistryError, match="repeats cursor"):
        list(fetch_registry_pages(_base_url(registry_server), client, page_limit=100))


def test_fetch_page_bound_raises(registry_server, client):
    with pytest.raises(RegistryError, match="more than 2 pages"):
        list(fetch_registry_pages(_base_url(registry_server), client, page_limit=100, max_pages=2))


def test_fetch_not_json_raises(registry_server, client):
    registry_server.raw_body = b"<html>maintenance</html>"

    with pytest.raises(RegistryError, match="not JSON"):
        list(fetch_registry_pages(_base_url(registry_server), client))


def test_import_reports_progress_per_batch(db, org_id):
    entries = [_entry(f"id-{i}", f"io.example/s{i}", f"https://github.com/example/s{i}") for i in range(5)]
    calls: list[tuple[int, int]] = []

    import_registry(db, org_id, ADMIN, entries, progress=lambda done, total: calls.append((done, total)), batch_size=2)

    assert calls == [(2, 5), (4, 5), (5, 5)]


def test_registry_names_reexported():
    assert mcp_servers.import_registry is import_registry
    assert mcp_servers.load_registry_file is load_registry_file
    assert mcp_servers.fetch_registry_pages is fetch_registry_pages


def test_import_isolated_per_organization(db, org_id):
    other_org = db.fetch_value("test.org", "INSERT INTO organizations (name) VALUES (%s) RETURNING id",
                               (f"org-{uuid.uuid4().hex[:10]}",))
    entries = [_entry("id-1", "io.example/one", "https://github.com/example/one")]

    first = import_registry(db, org_id, ADMIN, entries)
    second = import_registry(db, other_org, ADMIN, entries)

    assert first.created == 1
    assert second.created == 1


def test_import_of_missing_file_creates_no_org(runtime, db, tmp_path):
    name = f"import-{uuid.uuid4().hex[:8]}"
    missing = tmp_path / "missing.json"

    result = CliRunner().invoke(app, ["mcp", "import", "--file", str(missing), "--org", name])

    assert result.exit_code == 2
    assert f"cannot read registry file {missing}" in result.output
    with pytest.raises(NotFound):
        organizations.get_by_name(db, name)
