"""Import MCP servers from the official MCP Registry: export files and the `/v0/servers` API.

An entry becomes one server of the organization, keyed by its registry id. Its URL is the first
remote's URL when the entry has remotes, else its repository URL. Several entries may share a URL
(two entries for one GitHub repository, or placeholder remotes such as http://localhost:3001/sse).
The first of them to be imported keeps the plain URL. Each later one gets the URL with `#` and its
percent-encoded entry name as the fragment, so every registry entry still has its own server and a
repeated import maps each entry to the same URL.

Two entry layouts are read. The registry's May 2025 export format has `id`,
`version_detail.version` and remotes with `transport_type`. Later API versions have a top-level
`version`, remotes with `type`, and the id under `_meta["io.modelcontextprotocol.registry/official"]` as `serverId` (earlier `id`). Entries
with neither layout's id fall back to their name, which the registry keeps unique per server.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping
from urllib.parse import quote, urlsplit, urlunsplit

import httpx
import psycopg
import tenacity

from aim.db.audit_ingest import ingest_audit_rows
from aim.db.pool import Database
from aim.errors import AIMError, ValidationError
from aim.services import audit, cache_hooks
from aim.services.actor import Actor
from aim.services.mcp_servers import (
    MAX_DESCRIPTION_LENGTH,
    MAX_VERSION_LENGTH,
    normalize_url,
    validate_server_name,
)

logger = logging.getLogger(__name__)

# The MCP Registry export shipped with AIM (MIT licence, see aim/data/README.md). `aim up --demo`
# imports it; any other file or a registry URL can be imported with `aim mcp import`.
BUNDLED_REGISTRY_FILE = Path(__file__).resolve().parent.parent / "data" / "mcp-registry-seed-2025-05-16.json"

OFFICIAL_META = "io.modelcontextprotocol.registry/official"
# Entry fields kept under metadata["registry"]. An import compares them to decide on an update.
REGISTRY_METADATA_FIELDS = ("repository", "packages", "remotes", "version_detail", "_meta")
DEFAULT_BATCH_SIZE = 100
MAX_BATCH_SIZE = 1000
DEFAULT_PAGE_LIMIT = 100
DEFAULT_MAX_PAGES = 1000
REQUEST_TIMEOUT_S = 30.0
FETCH_ATTEMPTS = 3
# Characters kept unescaped in the fragment that distinguishes entries sharing a URL.
_FRAGMENT_SAFE = "/:@.-_~"


class RegistryError(AIMError):
    """A registry export file or API response could not be read."""


@dataclass
class ImportReport:
    """Counts of one import run. `skipped` lists (entry index, reason) in input order."""

    created: int = 0
    updated: int = 0
    unchanged: int = 0
    skipped: list[tuple[int, str]] = field(default_factory=list)

    @property
    def total(self) -> int:
        return self.created + self.updated + self.unchanged + len(self.skipped)


@dataclass(frozen=True)
class RegistryEntry:
    """One registry entry, validated and reduced to the columns of an MCP server."""

    index: int
    registry_id: str
    name: str
    url: str
    description: str
    version: str | None
    registry_metadata: dict[str, Any]

    @property
    def disambiguated_url(self) -> str:
        """The URL with the entry name as fragment, for an entry whose plain URL another server has."""
        parts = urlsplit(self.url)
        fragment = quote(self.name, safe=_FRAGMENT_SAFE)
        if parts.fragment:
            fragment = f"{parts.fragment}/{fragment}"
        return urlunsplit(parts._replace(fragment=fragment))


class EntrySkipped(Exception):
    """An entry that cannot be imported. `reason` names the entry index and the problem."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# --- reading entries --------------------------------------------------------------------------


def _text(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""


def _official_meta(entry: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = entry.get("_meta")
    official = meta.get(OFFICIAL_META) if isinstance(meta, Mapping) else None
    return official if isinstance(official, Mapping) else {}


def _entry_url(entry: Mapping[str, Any]) -> str:
    remotes = entry.get("remotes")
    if isinstance(remotes, list) and remotes and isinstance(remotes[0], Mapping):
        return _text(remotes[0].get("url"))
    repository = entry.get("repository")
    return _text(repository.get("url")) if isinstance(repository, Mapping) else ""


def _entry_version(entry: Mapping[str, Any]) -> str | None:
    detail = entry.get("version_detail")
    version = _text(detail.get("version")) if isinstance(detail, Mapping) else ""
    return version or _text(entry.get("version")) or None


def parse_entry(index: int, entry: object) -> RegistryEntry:
    """Validate one registry entry and return it as a RegistryEntry, or raise EntrySkipped."""
    if not isinstance(entry, Mapping):
        raise EntrySkipped(f"entry {index}: expected a JSON object, got {type(entry).__name__}")
    name = _text(entry.get("name"))
    if "id" in entry:
        registry_id = _text(entry.get("id"))
    else:
        official = _official_meta(entry)
        registry_id = _text(official.get("serverId")) or _text(official.get("id")) or name
    url = _entry_url(entry)
    missing = [label for label, value in (("id", registry_id), ("name", name), ("url", url)) if not value]
    if missing:
        raise EntrySkipped(f"entry {index}: missing {', '.join(missing)}")

    label = f"entry {index} ({name})"
    try:
        name = validate_server_name(name)
        url = normalize_url(url)
    except ValidationError as exc:
        raise EntrySkipped(f"{label}: invalid {exc.field}: {exc.message}") from None
    description = entry.get("description")
    description = description if isinstance(description, str) else ""
    if len(description) > MAX_DESCRIPTION_LENGTH:
        raise EntrySkipped(f"{label}: description has {len(description)} characters; expected at most "
                           f"{MAX_DESCRIPTION_LENGTH}")
    version = _entry_version(entry)
    if version is not None and len(version) > MAX_VERSION_LENGTH:
        raise EntrySkipped(f"{label}: version has {len(version)} characters; expected at most {MAX_VERSION_LENGTH}")
    registry_metadata = {key: entry[key] for key in REGISTRY_METADATA_FIELDS if key in entry}
    return RegistryEntry(index, registry_id, name, url, description, version, registry_metadata)


def load_registry_file(path: str | Path) -> list[dict[str, Any]]:
    """Read a registry export: a JSON list of entries, or an object with a `servers` list.

    Items wrapped as {"server": {...}, "_meta": {...}} are unwrapped as in `fetch_registry_pages`.
    Raises RegistryError when the file is missing, is not JSON, or has neither form.
    """
    path = Path(path)
    try:
        with path.open("rb") as handle:
            document = json.load(handle)
    except OSError as exc:
        raise RegistryError(f"cannot read registry file {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise RegistryError(f"registry file {path} is not valid JSON: {exc}") from None
    if isinstance(document, Mapping):
        servers = document.get("servers")
        if not isinstance(servers, list):
            raise RegistryError(
                f"registry file {path} is an object without a 'servers' list; expected a JSON list of entries "
                "or {\"servers\": [...]}"
            )
        document = servers
    if not isinstance(document, list):
        raise RegistryError(f"registry file {path} contains a JSON {type(document).__name__}; expected a JSON list of entries")
    return [unwrap_server(item) for item in document]


def unwrap_server(item: Any) -> Any:
    """Return the server of an item {"server": {...}, "_meta": {...}}, carrying the outer `_meta` along.

    Any other item is returned unchanged, so parse_entry can report it.
    """
    if not isinstance(item, Mapping) or not isinstance(item.get("server"), Mapping):
        return item
    server = dict(item["server"])
    outer_meta = item.get("_meta")
    if isinstance(outer_meta, Mapping):
        inner_meta = server.get("_meta")
        server["_meta"] = {**(inner_meta if isinstance(inner_meta, Mapping) else {}), **outer_meta}
    return server


# --- the /v0/servers API ----------------------------------------------------------------------


def _servers_endpoint(base_url: str) -> str:
    base = base_url.rstrip("/")
    if base.endswith("/v0/servers"):
        return base
    if base.endswith("/v0"):
        return f"{base}/servers"
    return f"{base}/v0/servers"


def _is_transient(exc: BaseException) -> bool:
    if isinstance(exc, httpx.TransportError):
        return True
    return isinstance(exc, httpx.HTTPStatusError) and (
        exc.response.status_code >= 500 or exc.response.status_code == 429
    )


def _log_retry(state: tenacity.RetryCallState) -> None:
    logger.warning(
        "registry request failed (attempt %d of %d), retrying: %s",
        state.attempt_number, FETCH_ATTEMPTS, state.outcome.exception() if state.outcome else "unknown error",
    )


def _get_page(client: httpx.Client, endpoint: str, params: dict[str, Any]) -> httpx.Response:
    for attempt in tenacity.Retrying(
        stop=tenacity.stop_after_attempt(FETCH_ATTEMPTS),
        wait=tenacity.wait_exponential(multiplier=0.5, max=5),
        retry=tenacity.retry_if_exception(_is_transient),
        before_sleep=_log_retry,
        reraise=True,
    ):
        with attempt:
            response = client.get(endpoint, params=params)
            response.raise_for_status()
    return response


def fetch_registry_pages(
    base_url: str,
    client: httpx.Client | None = None,
    *,
    page_limit: int = DEFAULT_PAGE_LIMIT,
    max_pages: int = DEFAULT_MAX_PAGES,
) -> Iterator[dict[str, Any]]:
    """Yield every server entry of a registry's `/v0/servers` API, page by page.

    `base_url` is the registry root, such as https://registry.modelcontextprotocol.io. Each page is
    {"servers": [...], "metadata": {"next_cursor" or "nextCursor": ..., "count": ...}}, and the walk
    ends at a page without a next cursor. Items wrapped as {"server": {...}, "_meta": {...}} are
    unwrapped. Transport errors, HTTP 429 and 5xx are retried 3 times with backoff. Raises
    RegistryError for any other HTTP error, a body that is not such a page, a cursor that repeats,
    or more than `max_pages` pages. Without `client`, one is created with a 30 s timeout and closed.
    """
    if isinstance(page_limit, bool) or not isinstance(page_limit, int) or not 1 <= page_limit <= 1000:
        raise ValidationError("page_limit", f"{page_limit!r} is invalid; expected a whole number from 1 to 1000")
    if isinstance(max_pages, bool) or not isinstance(max_pages, int) or max_pages < 1:
        raise ValidationError("max_pages", f"{max_pages!r} is invalid; expected a whole number >= 1")
    endpoint = _servers_endpoint(base_url)
    own_client = client is None
    http = client if client is not None else httpx.Client(timeout=REQUEST_TIMEOUT_S)
    logger.info("registry fetch started from %s", endpoint)
    cursor: str | None = None
    seen_cursors: set[str] = set()
    entries = 0
    try:
        for page_number in range(1, max_pages + 1):
            params: dict[str, Any] = {"limit": page_limit}
            if cursor:
                params["cursor"] = cursor
            try:
                response = _get_page(http, endpoint, params)
                body = response.json()
            except httpx.HTTPStatusError as exc:
                raise RegistryError(
                    f"registry page {page_number} at {endpoint} returned HTTP {exc.response.status_code}"
                ) from None
            except httpx.HTTPError as exc:
                raise RegistryError(f"registry page {page_number} at {endpoint} failed: {exc}") from None
            except ValueError as exc:
                raise RegistryError(f"registry page {page_number} at {endpoint} is not JSON: {exc}") from None
            servers = body.get("servers") if isinstance(body, Mapping) else None
            if not isinstance(servers, list):
                raise RegistryError(
                    f"registry page {page_number} at {endpoint} has no 'servers' list; "
                    "expected {\"servers\": [...], \"metadata\": {...}}"
                )
            for item in servers:
                entries += 1
                yield unwrap_server(item)
            metadata = body.get("metadata")
            metadata = metadata if isinstance(metadata, Mapping) else {}
            next_cursor = metadata.get("next_cursor") or metadata.get("nextCursor")
            if not next_cursor:
                logger.info("registry fetch finished: %d entries in %d pages from %s", entries, page_number, endpoint)
                return
            next_cursor = str(next_cursor)
            if next_cursor in seen_cursors:
                raise RegistryError(
                    f"registry page {page_number} at {endpoint} repeats cursor {next_cursor!r}; the listing loops"
                )
            seen_cursors.add(next_cursor)
            cursor = next_cursor
        raise RegistryError(
            f"registry listing at {endpoint} has more than {max_pages} pages; raise max_pages or page_limit"
        )
    finally:
        if own_client:
            http.close()


# --- import -----------------------------------------------------------------------------------


@dataclass
class _BatchOutcome:
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    skipped: list[tuple[int, str]] = field(default_factory=list)


def _url_is_free(claimed: Mapping[str, str | None], url: str, registry_id: str) -> bool:
    return url not in claimed or claimed[url] == registry_id


def _plan_batch(
    batch: list[RegistryEntry], existing: Mapping[str, Mapping[str, Any]], used_urls: Mapping[str, str | None],
    outcome: _BatchOutcome,
) -> tuple[list[tuple[RegistryEntry, str]], list[tuple[RegistryEntry, str, list[str], uuid.UUID]]]:
    """Choose each entry's URL and sort entries into inserts and updates, counting unchanged and skipped ones.

    `used_urls` maps URLs already used in the organization to their server's registry id (None for a
    manual server). Entries that already have a server claim their URLs first, so a new entry of
    the same batch never takes a URL that an existing server keeps.
    """
    claimed: dict[str, str | None] = dict(used_urls)
    updates = []
    for entry in batch:
        row = existing.get(entry.registry_id)
        if row is None:
            continue
        if row["url"] in (entry.url, entry.disambiguated_url):
            url = row["url"]
        elif _url_is_free(claimed, entry.url, entry.registry_id):
            url = entry.url
        elif _url_is_free(claimed, entry.disambiguated_url, entry.registry_id):
            url = entry.disambiguated_url
        else:
            # Both forms belong to other servers now; the server keeps its URL and the rest is updated.
            url = row["url"]
        claimed[url] = entry.registry_id
        changed = [
            name for name, old, new in (
                ("name", row["name"], entry.name), ("url", row["url"], url),
                ("description", row["description"], entry.description), ("version", row["version"], entry.version),
                ("metadata", row["registry_metadata"], entry.registry_metadata),
            )
            if old != new
        ]
        if changed:
            updates.append((entry, url, changed, row["id"]))
        else:
            outcome.unchanged += 1

    inserts = []
    for entry in batch:
        if entry.registry_id in existing:
            continue
        if _url_is_free(claimed, entry.url, entry.registry_id):
            url = entry.url
        elif _url_is_free(claimed, entry.disambiguated_url, entry.registry_id):
            url = entry.disambiguated_url
        else:
            outcome.skipped.append((
                entry.index,
                f"entry {entry.index} ({entry.name}): url {entry.url} and {entry.disambiguated_url} are both used "
                "by other servers",
            ))
            continue
        claimed[url] = entry.registry_id
        inserts.append((entry, url))
    return inserts, updates


_INSERT_SQL = """
INSERT INTO mcp_servers (organization_id, name, url, description, version, source, registry_id, metadata)
SELECT %(organization_id)s, t.name, t.url, t.description, t.version, 'registry', t.registry_id,
       jsonb_build_object('registry', t.registry_metadata::jsonb)
FROM unnest(%(names)s::text[], %(urls)s::text[], %(descriptions)s::text[], %(versions)s::text[],
            %(registry_ids)s::text[], %(registry_metadata)s::text[])
     AS t(name, url, description, version, registry_id, registry_metadata)
RETURNING id, registry_id, name, url
"""

_UPDATE_SQL = """
UPDATE mcp_servers s
SET name = t.name, url = t.url, description = t.description, version = t.version, source = 'registry',
    metadata = s.metadata || jsonb_build_object('registry', t.registry_metadata::jsonb), updated_at = now()
FROM unnest(%(ids)s::uuid[], %(names)s::text[], %(urls)s::text[], %(descriptions)s::text[], %(versions)s::text[],
            %(registry_metadata)s::text[])
     AS t(id, name, url, description, version, registry_metadata)
WHERE s.id = t.id AND s.organization_id = %(organization_id)s
"""


def _import_batch(
    db: Database, organization_id: uuid.UUID, actor: Actor, batch: list[RegistryEntry]
) -> _BatchOutcome:
    """Upsert one batch of entries with their audit rows in one transaction."""
    outcome = _BatchOutcome()
    with db.transaction() as conn:
        # One import per organization at a time, so two runs cannot both pick the same free URL.
        conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"mcp_registry_import:{organization_id}",))
        occurred_at = db.fetch_value("mcp_registry.clock", "SELECT now()", conn=conn)
        existing = {
            row["registry_id"]: row
            for row in db.fetch_all(
                "mcp_registry.existing",
                """SELECT id, registry_id, name, url, description, version, metadata -> 'registry' AS registry_metadata
                   FROM mcp_servers WHERE organization_id = %s AND registry_id = ANY(%s) FOR UPDATE""",
                (organization_id, [entry.registry_id for entry in batch]),
                conn=conn,
            )
        }
        candidate_urls = sorted({url for entry in batch for url in (entry.url, entry.disambiguated_url)})
        used_urls = {
            row["url"]: row["registry_id"]
            for row in db.fetch_all(
                "mcp_registry.used_urls",
                "SELECT url, registry_id FROM mcp_servers WHERE organization_id = %s AND url = ANY(%s)",
                (organization_id, candidate_urls),
                conn=conn,
            )
        }
        inserts, updates = _plan_batch(batch, existing, used_urls, outcome)

        audit_rows = []
        if inserts:
            created = db.fetch_all(
                "mcp_registry.insert",
                _INSERT_SQL,
                {
                    "organization_id": organization_id,
                    "names": [entry.name for entry, _ in inserts],
                    "urls": [url for _, url in inserts],
                    "descriptions": [entry.description for entry, _ in inserts],
                    "versions": [entry.version for entry, _ in inserts],
                    "registry_ids": [entry.registry_id for entry, _ in inserts],
                    "registry_metadata": [json.dumps(entry.registry_metadata) for entry, _ in inserts],
                },
                conn=conn,
            )
            outcome.created = len(created)
            audit_rows.extend(
                _audit_row(organization_id, actor, occurred_at, "mcp_server.register", row["id"],
                           {"source": "registry", "registry_id": row["registry_id"], "name": row["name"],
                            "url": row["url"]})
                for row in created
            )
        if updates:
            db.execute(
                "mcp_registry.update",
                _UPDATE_SQL,
                {
                    "organization_id": organization_id,
                    "ids": [server_id for *_, server_id in updates],
                    "names": [entry.name for entry, *_ in updates],
                    "urls": [url for _, url, _, _ in updates],
                    "descriptions": [entry.description for entry, *_ in updates],
                    "versions": [entry.version for entry, *_ in updates],
                    "registry_metadata": [json.dumps(entry.registry_metadata) for entry, *_ in updates],
                },
                conn=conn,
            )
            outcome.updated = len(updates)
            audit_rows.extend(
                _audit_row(organization_id, actor, occurred_at, "mcp_server.update", server_id,
                           {"source": "registry", "registry_id": entry.registry_id, "fields": changed})
                for entry, _, changed, server_id in updates
            )
        if audit_rows:
            ingest_audit_rows(db, audit_rows, conn=conn)
    return outcome


def _audit_row(organization_id, actor: Actor, occurred_at, action: str, server_id, details: dict) -> dict[str, Any]:
    return {
        "organization_id": organization_id, "occurred_at": occurred_at, "actor_type": actor.actor_type,
        "actor_id": actor.actor_id, "action": action, "resource_type": "mcp_server", "resource_id": str(server_id),
        "result": "success", "ip_address": actor.ip_address, "user_agent": actor.user_agent,
        "request_id": actor.request_id, "details": details,
    }


def _import_batch_with_retry(
    db: Database, organization_id: uuid.UUID, actor: Actor, batch: list[RegistryEntry]
) -> _BatchOutcome:
    # A server registered by hand between the URL lookup and the insert makes the batch fail on the
    # unique URL index. The batch rolled back whole, so it is read and planned again.
    for attempt in tenacity.Retrying(
        stop=tenacity.stop_after_attempt(3),
        retry=tenacity.retry_if_exception_type(psycopg.errors.UniqueViolation),
        before_sleep=lambda state: logger.warning(
            "registry import batch for organization %s collided with a concurrent write, retrying (attempt %d)",
            organization_id, state.attempt_number,
        ),
        reraise=True,
    ):
        with attempt:
            return _import_batch(db, organization_id, actor, batch)
    raise AssertionError("unreachable: tenacity re-raises after the last attempt")


def import_registry(
    db: Database,
    organization_id: uuid.UUID,
    actor: Actor,
    entries: Iterable[Any],
    progress: Callable[[int, int], None] | None = None,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> ImportReport:
    """Create or update one MCP server per registry entry and return the counts.

    Entries are upserted on their registry id, and `source` becomes 'registry'. Name, URL,
    description, version and metadata["registry"] (repository, packages, remotes, version details)
    come from the entry, while known capabilities, status, confidence and the rest of metadata stay
    as they are, because registry entries list no tools. An entry without id, name or a usable URL,
    a repeated id, or an entry whose URL forms are both in use is skipped with its index and reason.
    Importing the same entries again changes nothing.

    Each batch of `batch_size` entries commits in one transaction with one audit row per created
    server (`mcp_server.register`) and per updated server (`mcp_server.update`). A final
    `mcp_server.import` row records the run's counts. `progress(done, total)` is called after each
    batch with the number of input entries handled so far.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or not 1 <= batch_size <= MAX_BATCH_SIZE:
        raise ValidationError("batch_size", f"{batch_size!r} is invalid; expected a whole number from 1 to {MAX_BATCH_SIZE}")
    started = time.perf_counter()
    items = list(entries)
    total = len(items)
    report = ImportReport()
    parsed: list[RegistryEntry] = []
    first_index: dict[str, int] = {}
    for index, item in enumerate(items):
        try:
            entry = parse_entry(index, item)
        except EntrySkipped as skipped:
            report.skipped.append((index, skipped.reason))
            continue
        if entry.registry_id in first_index:
            report.skipped.append(
                (index, f"entry {index} ({entry.name}): id {entry.registry_id} repeats entry {first_index[entry.registry_id]}")
            )
            continue
        first_index[entry.registry_id] = index
        parsed.append(entry)
    logger.info(
        "registry import into organization %s started: %d entries, %d skipped before writing",
        organization_id, total, len(report.skipped),
    )

    for start in range(0, len(parsed), batch_size):
        batch = parsed[start : start + batch_size]
        outcome = _import_batch_with_retry(db, organization_id, actor, batch)
        report.created += outcome.created
        report.updated += outcome.updated
        report.unchanged += outcome.unchanged
        report.skipped.extend(outcome.skipped)
        if progress is not None:
            done = total if start + batch_size >= len(parsed) else batch[-1].index + 1
            progress(done, total)
    if not parsed and progress is not None:
        progress(total, total)
    report.skipped.sort()

    elapsed = time.perf_counter() - started
    with db.transaction() as conn:
        audit.record(
            conn, organization_id, actor, "mcp_server.import", "organization", str(organization_id),
            details={"entries": total, "created": report.created, "updated": report.updated,
                     "unchanged": report.unchanged, "skipped": len(report.skipped),
                     "skipped_reasons": [reason for _, reason in report.skipped[:50]],
                     "seconds": round(elapsed, 3)},
        )
    if report.created or report.updated:
        cache_hooks.mcp_servers_changed()
    logger.info(
        "registry import into organization %s finished in %.2f s: %d created, %d updated, %d unchanged, %d skipped",
        organization_id, elapsed, report.created, report.updated, report.unchanged, len(report.skipped),
    )
    return report
