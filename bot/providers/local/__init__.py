"""The built-in local avatar (aiortc, a drawn face, espeak-ng speech with lip-sync)."""

from bot.providers.local.answer import LLMConfig
from bot.providers.local.face import LOOKS
from bot.providers.local.provider import LocalProvider

__all__ = ["LOOKS", "LLMConfig", "LocalProvider"]
