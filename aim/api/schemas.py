"""Request and response bodies of the API (pydantic v2).

Request models reject unknown fields (`extra="forbid"`), so a misspelt field is a 422 naming it
rather than a silently ignored value. Signed bodies (verification, attestation) are passed to the
services exactly as the client sent them, because the signature covers the RFC 8785 form of those
fields: the models only describe and shape-check them.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

T = TypeVar("T")

Role = Literal["admin", "analyst", "manager", "viewer"]
JsonObject = dict[str, Any]


class RequestModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Page(BaseModel, Generic[T]):
    """One keyset page. Pass `next_cursor` as `cursor` to read on; `total` counts the whole filtered list."""

    items: list[T]
    next_cursor: str | None = Field(description="Cursor of the next page; null on the last page")
    prev_cursor: str | None = Field(default=None, description="Cursor of the previous page; null on the first page")
    total: int = Field(description="Rows in the whole filtered list (an estimate when total_is_estimate)")
    total_is_estimate: bool = Field(description="True when total is the planner's estimate, shown as 'about'")


# --- agents -----------------------------------------------------------------------------------


class AgentCreate(RequestModel):
    name: str = Field(min_length=1, max_length=200)
    agent_type: str = Field(default="generic", description="1 to 50 of a-z, 0-9, '_' and '-'")
    description: str = Field(default="", max_length=2000)
    public_key: str | None = Field(
        default=None,
        description="Ed25519 public key: base64 (standard or URL-safe, padding optional) of 32 bytes, or PEM "
                    "SubjectPublicKeyInfo. Omit it and AIM generates a key pair and returns the private key once.",
    )
    capabilities: list[str] = Field(default_factory=list, max_length=1000)
    metadata: JsonObject = Field(default_factory=dict)
    status: Literal["pending", "verified"] = "verified"


class AgentUpdate(RequestModel):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    agent_type: str | None = None
    description: str | None = Field(default=None, max_length=2000)
    metadata: JsonObject | None = None


class AgentSummary(BaseModel):
    id: uuid.UUID
    name: str
    agent_type: str
    description: str
    status: Literal["pending", "verified", "suspended", "revoked"]
    trust_score: float = Field(ge=0, le=1)
    key_id: str
    key_origin: Literal["generated", "supplied"]
    capabilities: list[str]
    metadata: JsonObject
    last_seen_at: datetime | None
    created_by: str
    created_at: datetime
    updated_at: datetime


class AgentDetail(AgentSummary):
    public_key: str = Field(description="Current Ed25519 public key, standard base64 of 32 bytes")
    key_created_at: datetime
    previous_key_id: str | None
    previous_key_valid_until: datetime | None
    trust_factors: JsonObject


class AgentCreated(BaseModel):
    agent: AgentDetail
    private_key_pem: str | None = Field(
        description="PKCS#8 PEM of the generated private key. Shown once and never stored; null for a supplied key"
    )


class RotateKeyRequest(RequestModel):
    public_key: str | None = Field(default=None, description="New public key; omit it to have AIM generate one")
    grace_hours: float = Field(default=24.0, ge=0, le=720, description="Hours the previous key keeps verifying")


class RotatedKey(BaseModel):
    agent: AgentDetail
    private_key_pem: str | None
    previous_key_valid_until: datetime


class StatusChange(RequestModel):
    reason: str | None = Field(default=None, max_length=500)


class VerifyRequest(RequestModel):
    """A signed verification request. The signature covers every other field, in RFC 8785 form."""

    agent_id: str
    action: str = Field(description="Capability-style action such as db:read")
    resource: str | None = None
    context: JsonObject | None = None
    timestamp: str | int | float = Field(description="RFC 3339 with a UTC offset, or Unix seconds")
    nonce: str = Field(description="16 to 128 characters of base64url; never reused")
    key_id: str | None = None
    signature: str = Field(description="Standard base64 of the 64-byte Ed25519 signature")


class VerifyResult(BaseModel):
    decision: Literal["allowed", "denied"]
    reason: str = Field(description="ok, unknown_key, bad_signature, stale_timestamp, replay, agent_not_verified, "
                                    "capability_not_granted or trust_below_threshold")
    detail: str
    verification_id: uuid.UUID
    agent_id: uuid.UUID
    risk_class: Literal["low", "medium", "high", "critical"]
    trust_score: float
    latency_ms: float


class TrustFactor(BaseModel):
    value: float | None
    provenance: Literal["measured", "no data"]
    weight: float
    detail: str | None = None


class TrustHistoryItem(BaseModel):
    id: uuid.UUID
    score: float
    previous_score: float | None
    factors: JsonObject
    reason: str
    actor: str
    created_at: datetime


class TrustReport(BaseModel):
    agent_id: uuid.UUID
    trust_score: float
    factors: dict[str, TrustFactor]
    history: Page[TrustHistoryItem]


class CapabilityGrant(RequestModel):
    capability: str = Field(description="Such as db:read, or db:* for every db: capability")


class GrantedCapability(BaseModel):
    capability: str
    granted_by: str
    granted_at: datetime


class CapabilityList(BaseModel):
    items: list[GrantedCapability]


class CapabilityRequestCreate(RequestModel):
    capability: str
    justification: str = Field(default="", max_length=2000)


class CapabilityDecision(RequestModel):
    note: str = Field(default="", max_length=2000)


class CapabilityRequest(BaseModel):
    id: uuid.UUID
    agent_id: uuid.UUID
    capability: str
    justification: str
    status: Literal["pending", "approved", "rejected"]
    requested_by: str
    requested_at: datetime
    decided_by: str | None
    decided_at: datetime | None
    decision_note: str | None


class CapabilityRequestList(BaseModel):
    items: list[CapabilityRequest]


# --- MCP servers ------------------------------------------------------------------------------


class McpServerCreate(RequestModel):
    name: str = Field(min_length=1, max_length=300)
    url: str = Field(description="http, https, ws or wss URL, unique in the organization")
    description: str = Field(default="", max_length=10_000)
    known_capabilities: list[str] = Field(default_factory=list, max_length=1000)
    metadata: JsonObject = Field(default_factory=dict)


class McpServer(BaseModel):
    id: uuid.UUID
    name: str
    url: str
    description: str
    version: str | None
    source: Literal["manual", "registry"]
    registry_id: str | None
    status: Literal["active", "inactive", "deprecated"]
    known_capabilities: list[str]
    confidence: float = Field(ge=0, le=1)
    drift_detected: bool
    last_drift_at: datetime | None
    last_attested_at: datetime | None
    created_at: datetime
    updated_at: datetime


class McpServerDetail(McpServer):
    manifest_hash: str | None
    metadata: JsonObject


class AttestRequest(RequestModel):
    """A signed attestation. The signature covers every other field, in RFC 8785 form."""

    agent_id: str
    mcp_server_id: str | None = None
    url: str | None = None
    capabilities_found: list[str]
    healthy: bool
    latency_ms: int | float | None = None
    timestamp: str | int | float
    nonce: str
    key_id: str | None = None
    signature: str


class AttestResult(BaseModel):
    attestation_id: uuid.UUID
    server_id: uuid.UUID
    agent_id: uuid.UUID
    capabilities: list[str]
    manifest_hash: str
    baseline_set: bool
    drift: bool
    added: list[str]
    removed: list[str]
    alert_id: uuid.UUID | None
    confidence: float
    key_id: str


class RegistryDocument(BaseModel):
    """An MCP Registry export or /v0/servers response: {"servers": [...], "metadata": {...}}."""

    model_config = ConfigDict(extra="forbid")

    servers: list[JsonObject]
    metadata: JsonObject | None = None


class SkippedEntry(BaseModel):
    index: int
    reason: str


class ImportResult(BaseModel):
    created: int
    updated: int
    unchanged: int
    skipped: list[SkippedEntry]


# --- audit, alerts, stats ---------------------------------------------------------------------


class AuditLog(BaseModel):
    id: int
    occurred_at: datetime
    actor_type: Literal["user", "agent", "api_key", "system"]
    actor_id: str
    action: str
    resource_type: str
    resource_id: str
    result: Literal["success", "failure", "denied"]
    ip_address: str | None
    user_agent: str | None
    request_id: str | None
    details: JsonObject


class Alert(BaseModel):
    id: uuid.UUID
    alert_type: str
    severity: Literal["info", "low", "medium", "high", "critical"]
    status: Literal["open", "acknowledged", "resolved"]
    title: str
    description: str
    resource_type: str
    resource_id: str
    related_agent_ids: list[uuid.UUID]
    details: JsonObject
    occurrences: int
    created_at: datetime
    last_seen_at: datetime
    acknowledged_by: str | None
    acknowledged_at: datetime | None
    resolved_by: str | None
    resolved_at: datetime | None


class AlertAction(RequestModel):
    note: str | None = Field(default=None, max_length=2000)


class McpStats(BaseModel):
    total: int
    drifted: int
    mean_confidence: float | None


class DashboardStats(BaseModel):
    agents: dict[str, int]
    average_trust: float | None
    verifications_last_hour: int
    verifications_per_minute: float
    denial_rate: float | None = Field(description="Share of denied verifications in the last hour; null with none")
    open_alerts: dict[str, int]
    open_alerts_total: int
    mcp_servers: McpStats
    computed_at: datetime


# --- auth and API keys ------------------------------------------------------------------------


class LoginRequest(RequestModel):
    email: str = Field(max_length=254)
    password: str = Field(max_length=1024)


class RefreshRequest(RequestModel):
    refresh_token: str = Field(max_length=4096)


class LogoutRequest(RequestModel):
    refresh_token: str | None = Field(default=None, max_length=4096)


class TokenPair(BaseModel):
    access_token: str
    refresh_token: str = Field(description="Single use: a refresh returns a new one, and reusing an old one "
                                           "revokes the session")
    token_type: Literal["bearer"] = "bearer"
    expires_in: int = Field(description="Seconds until the access token expires")
    refresh_expires_at: datetime
    session_id: uuid.UUID


class ApiKeyCreate(RequestModel):
    name: str = Field(min_length=1, max_length=200)
    role: Role = "analyst"
    agent_id: uuid.UUID | None = Field(
        default=None, description="Scope the key to one agent: it may then only verify, attest and request "
                                  "capabilities for that agent")
    expires_at: datetime | None = None


class ApiKey(BaseModel):
    id: uuid.UUID
    agent_id: uuid.UUID | None
    name: str
    prefix: str
    role: Role
    created_by: str
    created_at: datetime
    last_used_at: datetime | None
    expires_at: datetime | None
    revoked_at: datetime | None


class ApiKeyCreated(BaseModel):
    api_key: ApiKey
    key: str = Field(description="The secret, shown once: send it as 'Authorization: Bearer aim_...'")


# --- operations -------------------------------------------------------------------------------


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    status: Literal["ready", "unavailable"]
    postgresql: str
    redis: str
