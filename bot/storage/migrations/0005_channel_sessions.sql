-- Channel-scoped commands (`/avatar link`, `stop`, `say` without a session id) look up the open
-- sessions bound to one platform channel with one JOIN of chat_bindings and sessions (issue 15);
-- this index makes the chat_bindings side of that JOIN a range scan instead of a table scan.
CREATE INDEX chat_bindings_channel ON chat_bindings(platform, channel_id);
