"""The overview's organization counters, kept by triggers, against a count of the rows themselves."""

from __future__ import annotations

import threading
import uuid

import psycopg
import pytest

from aim import trust
from aim.db import migrate
from aim.db.pool import Database
from aim.services import agents, mcp_registry, mcp_servers, stats
from aim.services.actor import Actor

pytestmark = pytest.mark.integration

ADMIN = Actor("user", "admin-1", role="admin")


def _recount(db, organization_id) -> dict:
    """Return the overview's agent and MCP server figures counted from the rows, as before the counters."""
    row = db.fetch_one(
        "test.recount",
        """SELECT count(*) FILTER (WHERE status = 'pending') AS pending,
                  count(*) FILTER (WHERE status = 'verified') AS verified,
                  count(*) FILTER (WHERE status = 'suspended') AS suspended,
                  count(*) FILTER (WHERE status = 'revoked') AS revoked,
                  count(*) AS total,
                  avg(trust_score) FILTER (WHERE status <> 'revoked') AS average_trust
           FROM agents WHERE organization_id = %s""",
        (organization_id,),
    )
    mcp = db.fetch_one(
        "test.recount_mcp",
        """SELECT count(*) AS total, count(*) FILTER (WHERE drift_detected) AS drifted,
                  avg(confidence) AS mean_confidence
           FROM mcp_servers WHERE organization_id = %s AND status = 'active'""",
        (organization_id,),
    )
    average = row.pop("average_trust")
    average = float(average) if average is not None else None
    mean = float(mcp["mean_confidence"]) if mcp["mean_confidence"] is not None else None
    return {"agents": {name: int(value) for name, value in row.items()}, "average_trust": average,
            "mcp_servers": {"total": int(mcp["total"]), "drifted": int(mcp["drifted"]), "mean_confidence": mean}}


def _counted(db, organization_id) -> dict:
    figures = stats.compute_stats(db, organization_id)
    return {"agents": figures["agents"], "average_trust": figures["average_trust"],
            "mcp_servers": figures["mcp_servers"]}


def _assert_counts_match(db, organization_id) -> None:
    counted, recounted = _counted(db, organization_id), _recount(db, organization_id)

    assert counted["agents"] == recounted["agents"]
    assert counted["average_trust"] == pytest.approx(recounted["average_trust"], abs=1e-12)
    assert counted["mcp_servers"]["total"] == recounted["mcp_servers"]["total"]
    assert counted["mcp_servers"]["drifted"] == recounted["mcp_servers"]["drifted"]
    assert counted["mcp_servers"]["mean_confidence"] == pytest.approx(recounted["mcp_servers"]["mean_confidence"],
                                                                      abs=1e-12)


def _new_org(db) -> uuid.UUID:
    return db.fetch_value("test.org", "INSERT INTO organizations (name) VALUES (%s) RETURNING id",
                          (f"counters-{uuid.uuid4().hex[:10]}",))


def _register(db, organization_id, status="verified") -> dict:
    return agents.register_agent(db, organization_id, ADMIN, name=f"agent-{uuid.uuid4().hex[:10]}", status=status,
                                 capabilities=["db:read"]).agent


def test_empty_organization_has_no_figures(db):
    organization_id = _new_org(db)

    counted = _counted(db, organization_id)

    assert counted["agents"] == {"pending": 0, "verified": 0, "suspended": 0, "revoked": 0, "total": 0}
    assert counted["average_trust"] is None
    assert counted["mcp_servers"] == {"total": 0, "drifted": 0, "mean_confidence": None}


def test_agent_lifecycle_keeps_counts(db):
    organization_id = _new_org(db)
    first = _register(db, organization_id)
    second = _register(db, organization_id, status="pending")
    third = _register(db, organization_id)
    _assert_counts_match(db, organization_id)

    agents.suspend(db, organization_id, first["id"], ADMIN)
    _assert_counts_match(db, organization_id)
    agents.reactivate(db, organization_id, first["id"], ADMIN)
    agents.revoke(db, organization_id, third["id"], ADMIN)
    _assert_counts_match(db, organization_id)

    db.execute("test.trust", "UPDATE agents SET trust_score = 0.9123 WHERE id = %s", (second["id"],))
    trust.recalculate_agent(db, organization_id, first["id"], reason="test", actor="test")
    _assert_counts_match(db, organization_id)

    db.execute("test.delete", "DELETE FROM agents WHERE id = %s", (second["id"],))
    _assert_counts_match(db, organization_id)
    assert _counted(db, organization_id)["agents"]["total"] == 2


def test_touch_writes_no_counter(db):
    organization_id = _new_org(db)
    agent = _register(db, organization_id)
    before = db.fetch_value("test.xmin", "SELECT xmin::text FROM organization_counters WHERE organization_id = %s",
                            (organization_id,))

    db.execute("test.touch", "UPDATE agents SET last_seen_at = now(), metadata = '{\"a\": 1}' WHERE id = %s",
               (agent["id"],))

    after = db.fetch_value("test.xmin", "SELECT xmin::text FROM organization_counters WHERE organization_id = %s",
                           (organization_id,))
    assert after == before


def test_multi_row_statements_across_organizations(db):
    first_org, second_org = _new_org(db), _new_org(db)
    rows = [(org, f"bulk-{index}", status, score, b"\x01" * 32, f"k{index}")
            for index, (org, status, score) in enumerate([
                (first_org, "verified", 0.25), (first_org, "pending", 0.5), (second_org, "revoked", 0.75),
                (second_org, "verified", 0.125), (first_org, "suspended", 1),
            ])]
    with db.transaction() as conn:
        conn.cursor().executemany(
            "INSERT INTO agents (organization_id, name, status, trust_score, public_key, key_id) "
            "VALUES (%s, %s, %s, %s, %s, %s)", rows)
        conn.execute("UPDATE agents SET status = 'revoked' WHERE organization_id = ANY(%s) AND status = 'verified'",
                     ([first_org, second_org],))

    _assert_counts_match(db, first_org)
    _assert_counts_match(db, second_org)
    assert _counted(db, second_org)["agents"]["revoked"] == 2


def test_rolled_back_write_leaves_counts(db):
    organization_id = _new_org(db)
    _register(db, organization_id)

    with pytest.raises(RuntimeError), db.transaction() as conn:
        conn.execute("UPDATE agents SET status = 'suspended' WHERE organization_id = %s", (organization_id,))
        raise RuntimeError("roll back")

    _assert_counts_match(db, organization_id)
    assert _counted(db, organization_id)["agents"]["verified"] == 1


def test_concurrent_registrations_all_counted(db):
    organization_id = _new_org(db)
    failures: list[BaseException] = []

    def register_several() -> None:
        try:
            for _ in range(5):
                _register(db, organization_id)
        except BaseException as exc:  # noqa: BLE001 - reported by the assert below
            failures.append(exc)

    threads = [threading.Thread(target=register_several) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert failures == []
    assert _counted(db, organization_id)["agents"]["verified"] == 30
    _assert_counts_match(db, organization_id)


def test_mcp_server_writes_keep_counts(db):
    organization_id = _new_org(db)
    servers = [mcp_servers.register_server(db, organization_id, ADMIN, name=f"server-{index}",
                                           url=f"https://counters-{uuid.uuid4().hex[:8]}.example.com/mcp")
               for index in range(3)]
    _assert_counts_match(db, organization_id)

    mcp_servers.deactivate_server(db, organization_id, servers[0]["id"], ADMIN)
    db.execute("test.drift", "UPDATE mcp_servers SET drift_detected = true, confidence = 0.6 WHERE id = %s",
               (servers[1]["id"],))
    _assert_counts_match(db, organization_id)

    entry = {"id": f"registry-{uuid.uuid4().hex[:8]}", "name": "imported", "description": "imported server",
             "repository": {"url": "https://github.com/example/imported", "source": "github", "id": "1"},
             "version_detail": {"version": "1.0.0", "release_date": "2025-05-16T00:00:00Z", "is_latest": True},
             "packages": []}
    mcp_registry.import_registry(db, organization_id, ADMIN, [entry])
    mcp_registry.import_registry(db, organization_id, ADMIN, [{**entry, "description": "changed"}])
    _assert_counts_match(db, organization_id)

    db.execute("test.delete", "DELETE FROM mcp_servers WHERE id = %s", (servers[2]["id"],))
    _assert_counts_match(db, organization_id)
    assert _counted(db, organization_id)["mcp_servers"]["drifted"] == 1


def test_truncate_resets_counts(scratch_db):
    organization_id = _new_org(scratch_db)
    _register(scratch_db, organization_id)
    mcp_servers.register_server(scratch_db, organization_id, ADMIN, name="s", url="https://truncate.example.com/mcp")

    scratch_db.execute("test.truncate", "TRUNCATE agents, mcp_servers CASCADE")

    _assert_counts_match(scratch_db, organization_id)
    assert _counted(scratch_db, organization_id)["agents"]["total"] == 0


def test_deleting_organization_drops_its_counters(db):
    organization_id = _new_org(db)
    _register(db, organization_id)

    db.execute("test.delete_org", "DELETE FROM organizations WHERE id = %s", (organization_id,))

    assert db.fetch_value("test.counters", "SELECT count(*) FROM organization_counters WHERE organization_id = %s",
                          (organization_id,)) == 0


def test_migration_counts_existing_rows(empty_database_url, monkeypatch, settings):
    every = migrate.load_migrations()
    monkeypatch.setattr(migrate, "load_migrations", lambda: [m for m in every if m.version < 6])
    migrate.upgrade(empty_database_url)
    with psycopg.connect(empty_database_url, autocommit=True) as conn:
        organization_id = conn.execute("INSERT INTO organizations (name) VALUES ('before') RETURNING id").fetchone()[0]
        for index, (status, score) in enumerate([("verified", 0.5), ("revoked", 0.75), ("pending", 0.25)]):
            conn.execute("INSERT INTO agents (organization_id, name, status, trust_score, public_key, key_id) "
                         "VALUES (%s, %s, %s, %s, %s, %s)",
                         (organization_id, f"old-{index}", status, score, b"\x02" * 32, f"k{index}"))
        conn.execute("INSERT INTO mcp_servers (organization_id, name, url, confidence, drift_detected) "
                     "VALUES (%s, 'old', 'https://old.example.com/mcp', 0.5, true)", (organization_id,))

    monkeypatch.setattr(migrate, "load_migrations", lambda: every)
    assert migrate.upgrade(empty_database_url) == [m.version for m in every if m.version >= 6]

    database = Database(settings, empty_database_url)
    database.open()
    try:
        _assert_counts_match(database, organization_id)
        assert _counted(database, organization_id)["agents"]["total"] == 3
    finally:
        database.close()


def test_agent_moving_organization_moves_counts(db):
    source, target = _new_org(db), _new_org(db)
    agent = _register(db, source)
    _register(db, target)

    db.execute("test.move", "UPDATE agents SET organization_id = %s WHERE id = %s", (target, agent["id"]))

    _assert_counts_match(db, source)
    _assert_counts_match(db, target)
    assert _counted(db, target)["agents"]["verified"] == 2
