"""avatarbot: real-time talking avatars in Discord and Slack."""

__version__ = "0.1.0"
