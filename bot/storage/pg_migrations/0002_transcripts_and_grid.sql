-- As SQLite's 0003 and 0004: transcripts kept for TRANSCRIPT_RETENTION_H (pruned by the reaper),
-- and the Slack Enterprise Grid org of a chat binding (docs/platform-payloads.md).

CREATE TABLE transcript_lines (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES sessions(id),
    at TIMESTAMPTZ NOT NULL,
    speaker TEXT NOT NULL CHECK (speaker IN ('user', 'avatar', 'system')),
    text TEXT NOT NULL,
    author TEXT,
    intent TEXT
);
CREATE INDEX transcript_lines_session ON transcript_lines(session_id, id);
CREATE INDEX transcript_lines_age ON transcript_lines(at);

-- NULL for Discord, the web, plain Slack workspaces, and every binding made before this.
ALTER TABLE chat_bindings ADD COLUMN enterprise_id TEXT;
