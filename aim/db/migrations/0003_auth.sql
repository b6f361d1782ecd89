-- API sign-in: sessions and their rotating refresh tokens.
--
-- A login starts a session. Each refresh marks the presented token used and issues the next token
-- of the same session, so a session is a token family. Presenting a used token again means a copy
-- of it leaked, and the whole session is revoked. Access tokens name their session, so a revoked
-- session also stops its access tokens.

CREATE TABLE user_sessions (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id uuid NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    user_id         uuid NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at      timestamptz NOT NULL DEFAULT now(),
    -- Absolute end of the session: refreshing never extends it past this time.
    expires_at      timestamptz NOT NULL,
    last_refreshed_at timestamptz,
    revoked_at      timestamptz,
    revoke_reason   text,
    ip_address      inet,
    user_agent      text,
    CHECK (expires_at > created_at)
);
CREATE INDEX user_sessions_list_by_user ON user_sessions (user_id, created_at DESC, id DESC);
CREATE INDEX user_sessions_expiry ON user_sessions (expires_at) WHERE revoked_at IS NULL;

-- Only the SHA-256 of a refresh token is stored, so a database dump cannot be replayed as tokens.
CREATE TABLE refresh_tokens (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    session_id      uuid NOT NULL REFERENCES user_sessions(id) ON DELETE CASCADE,
    token_hash      bytea NOT NULL UNIQUE CHECK (length(token_hash) = 32),
    issued_at       timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL,
    used_at         timestamptz,
    CHECK (expires_at > issued_at)
);
CREATE INDEX refresh_tokens_by_session ON refresh_tokens (session_id, issued_at DESC);
