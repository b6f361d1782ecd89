-- MCP registry import and attestation replay protection.

-- A registry import upserts on the registry's entry id, so an entry maps to one server per organization.
CREATE UNIQUE INDEX mcp_servers_unique_registry_id
    ON mcp_servers (organization_id, registry_id) WHERE registry_id IS NOT NULL;

-- The nonce of a signed attestation. A replay is caught here even when Redis lost its nonce keys.
ALTER TABLE mcp_attestations ADD COLUMN nonce text;
CREATE UNIQUE INDEX mcp_attestations_unique_nonce ON mcp_attestations (agent_id, nonce) WHERE nonce IS NOT NULL;
