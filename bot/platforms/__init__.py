"""Chat platforms: Discord and Slack adapters over the session service."""
