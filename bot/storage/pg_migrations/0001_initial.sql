-- PostgreSQL schema: the same tables as the SQLite migrations 0001 and 0002, with native types
-- (timestamptz for every time, jsonb for JSON, bigint for credit sums).

CREATE TABLE tenants (
    tenant TEXT PRIMARY KEY,                 -- discord:<guild>, slack:<team>, web:playground
    created_at TIMESTAMPTZ NOT NULL,
    active BOOLEAN NOT NULL DEFAULT TRUE,
    -- limits: NULL means "the default from settings"
    max_concurrent INTEGER,
    max_minutes INTEGER,
    daily_user_credits INTEGER,
    allowed_roles JSONB,                     -- JSON list or NULL
    allowed_users JSONB,                     -- JSON list or NULL
    default_avatar TEXT
);

-- Append-only: rows are never updated or deleted.
CREATE TABLE ledger (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant TEXT NOT NULL REFERENCES tenants(tenant),
    kind TEXT NOT NULL CHECK (kind IN ('grant', 'reserve', 'settle', 'release')),
    amount BIGINT NOT NULL CHECK (amount >= 0),
    session_id TEXT,
    actor TEXT,
    note TEXT,
    created_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX ledger_tenant ON ledger(tenant, id);
-- A session reserves, settles and releases at most once each.
CREATE UNIQUE INDEX ledger_session_kind ON ledger(session_id, kind) WHERE session_id IS NOT NULL;

-- Cached balance, kept in the same transaction as the ledger rows it sums. Every transaction
-- that reserves credits locks this row first (SELECT ... FOR UPDATE): the start rules it then
-- checks see every committed start of the tenant, whichever worker made it.
CREATE TABLE balances (
    tenant TEXT PRIMARY KEY REFERENCES tenants(tenant),
    granted BIGINT NOT NULL DEFAULT 0,
    settled BIGINT NOT NULL DEFAULT 0,
    pending BIGINT NOT NULL DEFAULT 0,
    CONSTRAINT balances_pending_not_negative CHECK (pending >= 0),
    CONSTRAINT balances_available_not_negative CHECK (granted - settled - pending >= 0)
);

CREATE TABLE sessions (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL REFERENCES tenants(tenant),
    provider TEXT NOT NULL,
    avatar_id TEXT NOT NULL,
    avatar_name TEXT NOT NULL,
    mode TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'live', 'ending', 'ended', 'failed')),
    requested_s INTEGER NOT NULL,
    reserved BIGINT NOT NULL CHECK (reserved >= 0),
    started_by TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    started_at TIMESTAMPTZ,
    expires_at TIMESTAMPTZ,
    ending_at TIMESTAMPTZ,
    ended_at TIMESTAMPTZ,
    last_activity_at TIMESTAMPTZ NOT NULL,
    provider_session_id TEXT,
    handle JSONB NOT NULL DEFAULT '{}',
    viewer JSONB,
    knowledge TEXT,
    settled BIGINT,
    end_reason TEXT,
    failure_reason TEXT,
    stop_attempts INTEGER NOT NULL DEFAULT 0,
    next_stop_at TIMESTAMPTZ
);
CREATE INDEX sessions_open ON sessions(tenant) WHERE state IN ('pending', 'live', 'ending');
CREATE INDEX sessions_tenant ON sessions(tenant, created_at);
CREATE INDEX sessions_user_day ON sessions(tenant, started_by, created_at);

CREATE TABLE chat_bindings (
    session_id TEXT NOT NULL REFERENCES sessions(id),
    platform TEXT NOT NULL,
    channel_id TEXT NOT NULL,
    thread_id TEXT NOT NULL,
    message_id TEXT,
    PRIMARY KEY (platform, thread_id)
);
CREATE INDEX chat_bindings_session ON chat_bindings(session_id);

CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- Slack: OAuth installations, OAuth states, and seen Events API ids (shared by every worker).
-- enterprise_id/team_id/user_id are '' (not NULL) when absent, so that they can be key columns.
CREATE TABLE slack_bots (
    client_id TEXT NOT NULL,
    enterprise_id TEXT NOT NULL DEFAULT '',
    team_id TEXT NOT NULL DEFAULT '',
    data JSONB NOT NULL,
    installed_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (client_id, enterprise_id, team_id)
);

CREATE TABLE slack_installations (
    client_id TEXT NOT NULL,
    enterprise_id TEXT NOT NULL DEFAULT '',
    team_id TEXT NOT NULL DEFAULT '',
    user_id TEXT NOT NULL DEFAULT '',
    data JSONB NOT NULL,
    installed_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (client_id, enterprise_id, team_id, user_id)
);
CREATE INDEX slack_installations_latest
    ON slack_installations(client_id, enterprise_id, team_id, installed_at);

CREATE TABLE slack_oauth_states (
    state TEXT PRIMARY KEY,
    expires_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE slack_events (
    event_id TEXT PRIMARY KEY,
    team_id TEXT,
    received_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX slack_events_age ON slack_events(received_at);
