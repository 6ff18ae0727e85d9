-- As SQLite's 0005: channel-scoped commands (`/avatar link`, `stop`, `say` without a session id)
-- look up the open sessions bound to one platform channel (issue 15); this index turns the
-- chat_bindings side of that lookup into an index range scan instead of a table scan.
CREATE INDEX chat_bindings_channel ON chat_bindings(platform, channel_id);
