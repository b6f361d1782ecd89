-- Initial AIM schema. Every tenant table carries organization_id, and every list query has an index
-- named after the query it serves, ending in (sort key DESC, id DESC) for keyset paging.

CREATE TABLE organizations (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name        text NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 200),
    settings    jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE users (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id uuid NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    email           text NOT NULL CHECK (position('@' IN email) > 1),
    display_name    text NOT NULL DEFAULT '',
    role            text NOT NULL CHECK (role IN ('admin', 'analyst', 'manager', 'viewer')),
    password_hash   text NOT NULL CHECK (password_hash LIKE '$argon2%'),
    is_active       boolean NOT NULL DEFAULT true,
    created_at      timestamptz NOT NULL DEFAULT now(),
    last_login_at   timestamptz
);
CREATE UNIQUE INDEX users_unique_email ON users (lower(email));
CREATE INDEX users_list_by_created ON users (organization_id, created_at DESC, id DESC);

CREATE TABLE agents (
    id                          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id             uuid NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    name                        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    agent_type                  text NOT NULL DEFAULT 'generic',
    description                 text NOT NULL DEFAULT '',
    status                      text NOT NULL DEFAULT 'pending'
                                CHECK (status IN ('pending', 'verified', 'suspended', 'revoked')),
    trust_score                 numeric(5, 4) NOT NULL DEFAULT 0.5 CHECK (trust_score BETWEEN 0 AND 1),
    trust_factors               jsonb NOT NULL DEFAULT '{}'::jsonb,
    public_key                  bytea NOT NULL CHECK (length(public_key) = 32),
    key_id                      text NOT NULL,
    key_created_at              timestamptz NOT NULL DEFAULT now(),
    key_expires_at              timestamptz,
    key_origin                  text NOT NULL DEFAULT 'supplied' CHECK (key_origin IN ('generated', 'supplied')),
    encrypted_private_key       bytea,
    previous_public_key         bytea CHECK (previous_public_key IS NULL OR length(previous_public_key) = 32),
    previous_key_id             text,
    previous_key_valid_until    timestamptz,
    capabilities                text[] NOT NULL DEFAULT '{}',
    metadata                    jsonb NOT NULL DEFAULT '{}'::jsonb,
    last_seen_at                timestamptz,
    created_by                  text NOT NULL DEFAULT 'system',
    created_at                  timestamptz NOT NULL DEFAULT now(),
    updated_at                  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (organization_id, name)
);
CREATE INDEX agents_list_by_created ON agents (organization_id, created_at DESC, id DESC);
CREATE INDEX agents_list_by_trust ON agents (organization_id, trust_score DESC, id DESC);
CREATE INDEX agents_list_by_status ON agents (organization_id, status, created_at DESC, id DESC);
CREATE INDEX agents_list_by_type ON agents (organization_id, agent_type, created_at DESC, id DESC);
CREATE INDEX agents_search_by_name ON agents (organization_id, lower(name) text_pattern_ops, id);
CREATE INDEX agents_list_by_name ON agents (organization_id, lower(name), id);

CREATE TABLE agent_keys (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id uuid NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    agent_id        uuid NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
    key_id          text NOT NULL,
    public_key      bytea NOT NULL CHECK (length(public_key) = 32),
    key_origin      text NOT NULL CHECK (key_origin IN ('generated', 'supplied')),
    created_at      timestamptz NOT NULL DEFAULT now(),
    retired_at      timestamptz,
    retire_reason   text,
    UNIQUE (agent_id, key_id)
);
CREATE INDEX agent_keys_list_by_agent ON agent_keys (agent_id, created_at DESC, id DESC);

-- Granted capabilities. agents.capabilities mirrors the active rows, in the same transaction, so the
-- verification hot path reads one row.
CREATE TABLE capabilities (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id uuid NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    agent_id        uuid NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
    capability      text NOT NULL CHECK (capability ~ '^[A-Za-z0-9_.:/-]+\*?$|^\*$'),
    granted_by      text NOT NULL,
    granted_at      timestamptz NOT NULL DEFAULT now(),
    revoked_by      text,
    revoked_at      timestamptz
);
CREATE UNIQUE INDEX capabilities_unique_active ON capabilities (agent_id, capability) WHERE revoked_at IS NULL;
CREATE INDEX capabilities_list_by_agent ON capabilities (agent_id, granted_at DESC, id DESC);

CREATE TABLE capability_requests (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id uuid NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    agent_id        uuid NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
    capability      text NOT NULL,
    justification   text NOT NULL DEFAULT '',
    status          text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'approved', 'rejected')),
    requested_by    text NOT NULL,
    requested_at    timestamptz NOT NULL DEFAULT now(),
    decided_by      text,
    decided_at      timestamptz,
    decision_note   text
);
CREATE UNIQUE INDEX capability_requests_unique_pending
    ON capability_requests (agent_id, capability) WHERE status = 'pending';
CREATE INDEX capability_requests_list_by_status
    ON capability_requests (organization_id, status, requested_at DESC, id DESC);
CREATE INDEX capability_requests_list_by_agent ON capability_requests (agent_id, requested_at DESC, id DESC);

CREATE TABLE mcp_servers (
    id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id     uuid NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    name                text NOT NULL CHECK (length(name) BETWEEN 1 AND 300),
    url                 text NOT NULL CHECK (length(url) BETWEEN 1 AND 2048),
    description         text NOT NULL DEFAULT '',
    version             text,
    source              text NOT NULL DEFAULT 'manual' CHECK (source IN ('manual', 'registry')),
    registry_id         text,
    status              text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'inactive', 'deprecated')),
    known_capabilities  text[] NOT NULL DEFAULT '{}',
    manifest_hash       text,
    confidence          numeric(5, 4) NOT NULL DEFAULT 0 CHECK (confidence BETWEEN 0 AND 1),
    drift_detected      boolean NOT NULL DEFAULT false,
    last_drift_at       timestamptz,
    last_attested_at    timestamptz,
    metadata            jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    UNIQUE (organization_id, url)
);
CREATE INDEX mcp_servers_list_by_name ON mcp_servers (organization_id, lower(name), id);
CREATE INDEX mcp_servers_search_by_name ON mcp_servers (organization_id, lower(name) text_pattern_ops, id);
CREATE INDEX mcp_servers_list_by_confidence ON mcp_servers (organization_id, confidence DESC, id DESC);
CREATE INDEX mcp_servers_list_by_created ON mcp_servers (organization_id, created_at DESC, id DESC);
CREATE INDEX mcp_servers_list_drifted ON mcp_servers (organization_id, last_drift_at DESC, id DESC)
    WHERE drift_detected;

CREATE TABLE mcp_attestations (
    id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id     uuid NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    mcp_server_id       uuid NOT NULL REFERENCES mcp_servers(id) ON DELETE CASCADE,
    agent_id            uuid NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
    capabilities_found  text[] NOT NULL DEFAULT '{}',
    manifest_hash       text NOT NULL,
    latency_ms          double precision CHECK (latency_ms IS NULL OR latency_ms >= 0),
    healthy             boolean NOT NULL,
    drift               boolean NOT NULL DEFAULT false,
    signature           bytea NOT NULL,
    key_id              text NOT NULL,
    attested_at         timestamptz NOT NULL DEFAULT now(),
    expires_at          timestamptz NOT NULL DEFAULT now() + interval '30 days',
    expired             boolean NOT NULL DEFAULT false
);
CREATE INDEX mcp_attestations_list_by_server ON mcp_attestations (mcp_server_id, attested_at DESC, id DESC);
CREATE INDEX mcp_attestations_list_by_agent ON mcp_attestations (agent_id, attested_at DESC, id DESC);
CREATE INDEX mcp_attestations_expiry ON mcp_attestations (expires_at) WHERE NOT expired;

CREATE TABLE agent_mcp_connections (
    organization_id uuid NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    agent_id        uuid NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
    mcp_server_id   uuid NOT NULL REFERENCES mcp_servers(id) ON DELETE CASCADE,
    first_seen_at   timestamptz NOT NULL DEFAULT now(),
    last_seen_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (agent_id, mcp_server_id)
);
CREATE INDEX agent_mcp_connections_list_by_server ON agent_mcp_connections (mcp_server_id, agent_id);

CREATE TABLE verification_events (
    id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id     uuid NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    agent_id            uuid NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
    action              text NOT NULL,
    resource            text NOT NULL DEFAULT '',
    risk_class          text NOT NULL CHECK (risk_class IN ('low', 'medium', 'high', 'critical')),
    decision            text NOT NULL CHECK (decision IN ('allowed', 'denied')),
    reason              text NOT NULL,
    nonce               text,
    key_id              text,
    signature_valid     boolean NOT NULL DEFAULT false,
    request_timestamp   timestamptz,
    trust_score         numeric(5, 4) CHECK (trust_score IS NULL OR trust_score BETWEEN 0 AND 1),
    latency_ms          double precision CHECK (latency_ms IS NULL OR latency_ms >= 0),
    created_at          timestamptz NOT NULL DEFAULT now()
);
-- A replay is caught here even when Redis lost its nonce keys.
CREATE UNIQUE INDEX verification_events_unique_nonce ON verification_events (agent_id, nonce) WHERE nonce IS NOT NULL;
CREATE INDEX verification_events_list_by_time ON verification_events (organization_id, created_at DESC, id DESC);
CREATE INDEX verification_events_list_by_agent ON verification_events (agent_id, created_at DESC, id DESC);
CREATE INDEX verification_events_list_by_decision
    ON verification_events (organization_id, decision, created_at DESC, id DESC);

CREATE TABLE trust_score_history (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id uuid NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    agent_id        uuid NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
    score           numeric(5, 4) NOT NULL CHECK (score BETWEEN 0 AND 1),
    previous_score  numeric(5, 4) CHECK (previous_score IS NULL OR previous_score BETWEEN 0 AND 1),
    factors         jsonb NOT NULL,
    reason          text NOT NULL,
    actor           text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX trust_score_history_list_by_agent ON trust_score_history (agent_id, created_at DESC, id DESC);
CREATE INDEX trust_score_history_list_by_time ON trust_score_history (organization_id, created_at DESC, id DESC);

CREATE TABLE mcp_confidence_history (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id uuid NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    mcp_server_id   uuid NOT NULL REFERENCES mcp_servers(id) ON DELETE CASCADE,
    confidence      numeric(5, 4) NOT NULL CHECK (confidence BETWEEN 0 AND 1),
    reason          text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX mcp_confidence_history_list_by_server
    ON mcp_confidence_history (mcp_server_id, created_at DESC, id DESC);
CREATE INDEX mcp_confidence_history_list_by_time
    ON mcp_confidence_history (organization_id, created_at DESC, id DESC);

CREATE TABLE agent_feedback (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id uuid NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    agent_id        uuid NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
    rating          smallint NOT NULL CHECK (rating BETWEEN 1 AND 5),
    comment         text NOT NULL DEFAULT '',
    created_by      text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX agent_feedback_list_by_agent ON agent_feedback (agent_id, created_at DESC, id DESC);

CREATE TABLE alerts (
    id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id     uuid NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    alert_type          text NOT NULL,
    severity            text NOT NULL CHECK (severity IN ('info', 'low', 'medium', 'high', 'critical')),
    status              text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'acknowledged', 'resolved')),
    title               text NOT NULL,
    description         text NOT NULL DEFAULT '',
    resource_type       text NOT NULL,
    resource_id         text NOT NULL,
    related_agent_ids   uuid[] NOT NULL DEFAULT '{}',
    details             jsonb NOT NULL DEFAULT '{}'::jsonb,
    dedup_key           text NOT NULL,
    occurrences         integer NOT NULL DEFAULT 1 CHECK (occurrences >= 1),
    created_at          timestamptz NOT NULL DEFAULT now(),
    last_seen_at        timestamptz NOT NULL DEFAULT now(),
    acknowledged_by     text,
    acknowledged_at     timestamptz,
    resolved_by         text,
    resolved_at         timestamptz
);
-- Repeats of an alert that is still open or acknowledged bump `occurrences` instead of adding rows.
CREATE UNIQUE INDEX alerts_unique_unresolved ON alerts (organization_id, dedup_key) WHERE status <> 'resolved';
CREATE INDEX alerts_list_by_time ON alerts (organization_id, created_at DESC, id DESC);
CREATE INDEX alerts_list_by_status ON alerts (organization_id, status, created_at DESC, id DESC);
CREATE INDEX alerts_list_by_severity ON alerts (organization_id, severity, created_at DESC, id DESC);
CREATE INDEX alerts_list_by_resource ON alerts (organization_id, resource_type, resource_id, created_at DESC, id DESC);
CREATE INDEX alerts_list_by_agent ON alerts USING gin (related_agent_ids);

-- Append-only audit trail, partitioned by month. Retention drops whole partitions; row UPDATE and
-- DELETE are refused by the trigger below.
CREATE SEQUENCE audit_logs_id_seq AS bigint;
CREATE TABLE audit_logs (
    id              bigint NOT NULL DEFAULT nextval('audit_logs_id_seq'),
    organization_id uuid NOT NULL,
    occurred_at     timestamptz NOT NULL DEFAULT now(),
    actor_type      text NOT NULL CHECK (actor_type IN ('user', 'agent', 'api_key', 'system')),
    actor_id        text NOT NULL,
    action          text NOT NULL,
    resource_type   text NOT NULL,
    resource_id     text NOT NULL DEFAULT '',
    result          text NOT NULL CHECK (result IN ('success', 'failure', 'denied')),
    ip_address      inet,
    user_agent      text,
    request_id      text,
    details         jsonb NOT NULL DEFAULT '{}'::jsonb,
    PRIMARY KEY (occurred_at, id)
) PARTITION BY RANGE (occurred_at);
ALTER SEQUENCE audit_logs_id_seq OWNED BY audit_logs.id;
CREATE INDEX audit_logs_list_by_time ON audit_logs (organization_id, occurred_at DESC, id DESC);
CREATE INDEX audit_logs_list_by_actor ON audit_logs (organization_id, actor_id, occurred_at DESC, id DESC);
CREATE INDEX audit_logs_list_by_action ON audit_logs (organization_id, action, occurred_at DESC, id DESC);
CREATE INDEX audit_logs_list_by_resource
    ON audit_logs (organization_id, resource_type, resource_id, occurred_at DESC, id DESC);
CREATE INDEX audit_logs_list_by_result ON audit_logs (organization_id, result, occurred_at DESC, id DESC);

CREATE FUNCTION aim_audit_logs_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_logs is append-only: % is not allowed; retention drops whole monthly partitions', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;
CREATE TRIGGER audit_logs_append_only BEFORE UPDATE OR DELETE ON audit_logs
    FOR EACH ROW EXECUTE FUNCTION aim_audit_logs_refuse_change();
CREATE TRIGGER audit_logs_no_truncate BEFORE TRUNCATE ON audit_logs
    FOR EACH STATEMENT EXECUTE FUNCTION aim_audit_logs_refuse_change();

-- Create the monthly partitions that cover [from_ts, to_ts]. Safe to call concurrently.
CREATE FUNCTION aim_ensure_audit_partitions(from_ts timestamptz, to_ts timestamptz) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    month_start date := date_trunc('month', from_ts AT TIME ZONE 'UTC')::date;
    last_month  date := date_trunc('month', to_ts AT TIME ZONE 'UTC')::date;
    part_name   text;
    created     integer := 0;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('aim_ensure_audit_partitions'));
    WHILE month_start <= last_month LOOP
        part_name := format('audit_logs_%s', to_char(month_start, 'YYYY_MM'));
        IF to_regclass(part_name) IS NULL THEN
            EXECUTE format(
                'CREATE TABLE %I PARTITION OF audit_logs FOR VALUES FROM (%L) TO (%L)',
                part_name,
                (month_start::timestamp AT TIME ZONE 'UTC'),
                ((month_start + interval '1 month')::timestamp AT TIME ZONE 'UTC')
            );
            created := created + 1;
        END IF;
        month_start := (month_start + interval '1 month')::date;
    END LOOP;
    RETURN created;
END;
$$;

SELECT aim_ensure_audit_partitions(now() - interval '13 months', now() + interval '3 months');

CREATE TABLE api_keys (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id uuid NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    agent_id        uuid REFERENCES agents(id) ON DELETE CASCADE,
    name            text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    prefix          text NOT NULL,
    key_hash        bytea NOT NULL UNIQUE CHECK (length(key_hash) = 32),
    role            text NOT NULL DEFAULT 'analyst' CHECK (role IN ('admin', 'analyst', 'manager', 'viewer')),
    created_by      text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    last_used_at    timestamptz,
    expires_at      timestamptz,
    revoked_at      timestamptz
);
CREATE INDEX api_keys_list_by_created ON api_keys (organization_id, created_at DESC, id DESC);

-- Per-minute metric roll-ups. `buckets` holds counts for fixed log-spaced buckets, so rows from many
-- processes and minutes merge by element-wise addition.
CREATE TABLE metric_rollups (
    minute      timestamptz NOT NULL CHECK (date_trunc('minute', minute) = minute),
    name        text NOT NULL,
    labels      jsonb NOT NULL DEFAULT '{}'::jsonb,
    count       bigint NOT NULL CHECK (count >= 0),
    sum         double precision NOT NULL DEFAULT 0,
    buckets     bigint[],
    PRIMARY KEY (name, minute, labels)
);
CREATE INDEX metric_rollups_by_minute ON metric_rollups (minute);

-- Element-wise sum of two bucket arrays; NULL on either side yields the other.
CREATE FUNCTION aim_bucket_add(a bigint[], b bigint[]) RETURNS bigint[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN a IS NULL THEN b
        WHEN b IS NULL THEN a
        ELSE (SELECT array_agg(coalesce(x, 0) + coalesce(y, 0) ORDER BY i)
              FROM unnest(a, b) WITH ORDINALITY AS t(x, y, i))
    END
$$;

-- Instance-wide values shared by every process that uses this database. `secret_key` signs keyset
-- cursors and tokens when AIM_SECRET_KEY is not set, so API and dashboard replicas agree on it.
CREATE TABLE instance_settings (
    key         text PRIMARY KEY,
    value       text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
-- gen_random_uuid() draws from the server's strong random source (122 bits each); pgcrypto is not
-- assumed because the embedded PostgreSQL does not ship it.
INSERT INTO instance_settings (key, value)
VALUES ('secret_key', replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', ''));
