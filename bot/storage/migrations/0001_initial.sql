-- Tenants, their limits, sessions, the append-only credit ledger, chat bindings.

CREATE TABLE tenants (
    tenant TEXT PRIMARY KEY,                 -- discord:<guild>, slack:<team>, web:playground
    created_at TEXT NOT NULL,
    active INTEGER NOT NULL DEFAULT 1,
    -- limits: NULL means "the default from settings"
    max_concurrent INTEGER,
    max_minutes INTEGER,
    daily_user_credits INTEGER,
    allowed_roles TEXT,                      -- JSON list or NULL
    allowed_users TEXT,                      -- JSON list or NULL
    default_avatar TEXT
);

-- Append-only: rows are never updated or deleted.
CREATE TABLE ledger (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant TEXT NOT NULL REFERENCES tenants(tenant),
    kind TEXT NOT NULL CHECK (kind IN ('grant', 'reserve', 'settle', 'release')),
    amount INTEGER NOT NULL CHECK (amount >= 0),
    session_id TEXT,
    actor TEXT,
    note TEXT,
    created_at TEXT NOT NULL
);
CREATE INDEX ledger_tenant ON ledger(tenant, id);
-- A session reserves, settles and releases at most once each.
CREATE UNIQUE INDEX ledger_session_kind ON ledger(session_id, kind) WHERE session_id IS NOT NULL;

-- Cached balance, kept in the same transaction as the ledger rows it sums.
CREATE TABLE balances (
    tenant TEXT PRIMARY KEY REFERENCES tenants(tenant),
    granted INTEGER NOT NULL DEFAULT 0,
    settled INTEGER NOT NULL DEFAULT 0,
    pending INTEGER NOT NULL DEFAULT 0,
    CHECK (pending >= 0),
    CHECK (granted - settled - pending >= 0)
);

CREATE TABLE sessions (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL REFERENCES tenants(tenant),
    provider TEXT NOT NULL,
    avatar_id TEXT NOT NULL,
    avatar_name TEXT NOT NULL,
    mode TEXT NOT NULL,
    state TEXT NOT NULL,
    requested_s INTEGER NOT NULL,
    reserved INTEGER NOT NULL,
    started_by TEXT NOT NULL,
    created_at TEXT NOT NULL,
    started_at TEXT,
    expires_at TEXT,
    ending_at TEXT,
    ended_at TEXT,
    last_activity_at TEXT NOT NULL,
    provider_session_id TEXT,
    handle TEXT NOT NULL DEFAULT '{}',
    viewer TEXT,
    knowledge TEXT,
    settled INTEGER,
    end_reason TEXT,
    failure_reason TEXT,
    stop_attempts INTEGER NOT NULL DEFAULT 0,
    next_stop_at TEXT
);
CREATE INDEX sessions_open ON sessions(state) WHERE state IN ('pending', 'live', 'ending');
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
