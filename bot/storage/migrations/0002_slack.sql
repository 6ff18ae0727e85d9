-- Slack: OAuth installations (multi-workspace mode), OAuth states, and seen Events API ids.
-- Rows hold slack-sdk's own Installation/Bot fields as JSON, so a new SDK field needs no migration.
-- enterprise_id is '' (not NULL) when absent, so that it can take part in the primary keys.

CREATE TABLE slack_bots (
    client_id TEXT NOT NULL,
    enterprise_id TEXT NOT NULL DEFAULT '',
    team_id TEXT NOT NULL DEFAULT '',
    data TEXT NOT NULL,
    installed_at REAL NOT NULL,
    PRIMARY KEY (client_id, enterprise_id, team_id)
);

-- The latest installation per installing user; user_id '' when Slack named none.
CREATE TABLE slack_installations (
    client_id TEXT NOT NULL,
    enterprise_id TEXT NOT NULL DEFAULT '',
    team_id TEXT NOT NULL DEFAULT '',
    user_id TEXT NOT NULL DEFAULT '',
    data TEXT NOT NULL,
    installed_at REAL NOT NULL,
    PRIMARY KEY (client_id, enterprise_id, team_id, user_id)
);
CREATE INDEX slack_installations_latest
    ON slack_installations(client_id, enterprise_id, team_id, installed_at);

-- OAuth "state" values: issued at /slack/install, consumed once at /slack/oauth_redirect.
CREATE TABLE slack_oauth_states (
    state TEXT PRIMARY KEY,
    expires_at REAL NOT NULL
);

-- Events API deliveries already handled (Slack redelivers on timeouts, with X-Slack-Retry-Num).
CREATE TABLE slack_events (
    event_id TEXT PRIMARY KEY,
    team_id TEXT,
    received_at REAL NOT NULL
);
CREATE INDEX slack_events_age ON slack_events(received_at);
