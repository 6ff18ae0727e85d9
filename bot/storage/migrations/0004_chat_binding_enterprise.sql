-- Slack Enterprise Grid: the org (enterprise id) a session's Slack thread was started in.
-- A Grid workspace's bot token is stored under (enterprise id, team id), and an org-wide install
-- under (enterprise id, no team): without the enterprise id the token cannot be found again, and
-- the avatar's lines, warnings and end summary would be dropped (docs/platform-payloads.md).
-- NULL for Discord, the web, plain Slack workspaces, and every binding made before this.
ALTER TABLE chat_bindings ADD COLUMN enterprise_id TEXT;
