-- Transcripts that outlive their session for a retention period (TRANSCRIPT_RETENTION_H):
-- the viewer shows them after a reload, an ended link shows them, the end summary attaches them.
-- Lines are pruned by the reaper once the retention has passed (see bot/core/reaper.py).

CREATE TABLE transcript_lines (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id TEXT NOT NULL REFERENCES sessions(id),
    at REAL NOT NULL,                        -- epoch seconds
    speaker TEXT NOT NULL CHECK (speaker IN ('user', 'avatar', 'system')),
    text TEXT NOT NULL,
    author TEXT,
    intent TEXT
);
CREATE INDEX transcript_lines_session ON transcript_lines(session_id, id);
CREATE INDEX transcript_lines_age ON transcript_lines(at);
