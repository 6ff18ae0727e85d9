"""Answers for the local avatar's ``ask``.

A small retrieval over the knowledge text, or an OpenAI-compatible chat endpoint when one is
configured.
"""

from __future__ import annotations

import logging
import re

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr

log = logging.getLogger(__name__)

NO_KNOWLEDGE = "I have no answer to that: I was not given anything to answer from."
NOT_FOUND = "I could not find an answer to that in what I was told."
LLM_DOWN = "Sorry, my answer service is not responding right now."
MAX_ANSWER = 1200  # characters spoken at most; a long answer is cut at a sentence end

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")
_STOP = frozenset(
    "a an and are as at be by can do does did for from has have how i in is it its me my of on "
    "or our so that the their there these this to was we what when where which who why will "
    "with you your tell about please".split()
)


class LLMConfig(BaseModel):
    """An OpenAI-compatible chat endpoint: ``POST {base_url}/chat/completions``."""

    model_config = ConfigDict(frozen=True)

    base_url: str
    model: str
    api_key: SecretStr | None = None
    timeout_s: float = Field(default=20.0, gt=0, le=120)
    max_tokens: int = Field(default=300, ge=16, le=4000)

    def __repr__(self) -> str:
        return f"LLMConfig(base_url={self.base_url!r}, model={self.model!r})"


def _terms(text: str) -> set[str]:
    words = {w.removesuffix("'s") for w in _WORD.findall(text.lower())}
    # a crude stem ("answers" and "answer" meet) is enough for short knowledge texts
    return {w[:-1] if len(w) > 3 and w.endswith("s") else w for w in words if w not in _STOP}


def sentences(text: str) -> list[str]:
    """Split a knowledge text into sentences (and lines)."""
    return [s.strip() for s in _SENTENCE.split(text) if s and s.strip()]


def retrieve(knowledge: str | None, question: str, top: int = 2) -> str | None:
    """The knowledge sentences that share the most words with ``question``, in text order."""
    if not knowledge or not knowledge.strip():
        return None
    asked = _terms(question)
    if not asked:
        return None
    scored = []
    for i, sentence in enumerate(sentences(knowledge)):
        overlap = len(asked & _terms(sentence))
        if overlap:
            scored.append((overlap, -i, sentence))
    if not scored:
        return None
    best = sorted(scored, reverse=True)[:top]
    keep = [s for s in best if s[0] >= best[0][0] / 2]
    return " ".join(s for _, _, s in sorted(keep, key=lambda s: -s[1]))


def answer_from_knowledge(knowledge: str | None, question: str) -> str:
    """What the avatar says to ``question`` without a chat endpoint."""
    if not knowledge or not knowledge.strip():
        return NO_KNOWLEDGE
    return retrieve(knowledge, question) or NOT_FOUND


def clip(text: str, limit: int = MAX_ANSWER) -> str:
    """Cut ``text`` to ``limit`` characters, at a sentence end where there is one."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text[:limit]
    end = max(cut.rfind(". "), cut.rfind("! "), cut.rfind("? "))
    return cut[: end + 1] if end > limit // 2 else cut.rstrip() + "..."


class LLMError(Exception):
    """The chat endpoint failed; the message is safe to log (no key, no body)."""


class ChatClient:
    """Ask an OpenAI-compatible chat endpoint, with the knowledge text as system context."""

    def __init__(self, config: LLMConfig, http: httpx.AsyncClient) -> None:
        self.config = config
        self._http = http

    def _messages(self, knowledge: str | None, question: str) -> list[dict[str, str]]:
        system = (
            "You are a friendly talking avatar. Your answers are spoken aloud: answer in at most "
            "three short sentences, plain text, no lists or markup."
        )
        if knowledge and knowledge.strip():
            system += (
                " Answer from the knowledge below; if it does not say, answer that you do not "
                "know.\n\nKnowledge:\n" + knowledge.strip()
            )
        return [{"role": "system", "content": system}, {"role": "user", "content": question}]

    async def answer(self, knowledge: str | None, question: str) -> str:
        """The model's answer; ``LLMError`` on any failure."""
        cfg = self.config
        headers = {}
        if cfg.api_key is not None and cfg.api_key.get_secret_value():
            headers["Authorization"] = f"Bearer {cfg.api_key.get_secret_value()}"
        body = {
            "model": cfg.model, "messages": self._messages(knowledge, question),
            "max_tokens": cfg.max_tokens, "temperature": 0.3, "stream": False,
        }
        url = cfg.base_url.rstrip("/") + "/chat/completions"
        try:
            resp = await self._http.post(url, json=body, headers=headers, timeout=cfg.timeout_s)
        except httpx.TimeoutException as exc:
            raise LLMError(f"chat endpoint timed out after {cfg.timeout_s:g} s") from exc
        except httpx.HTTPError as exc:
            raise LLMError(f"chat endpoint unreachable ({type(exc).__name__})") from exc
        if resp.status_code != 200:
            raise LLMError(f"chat endpoint answered HTTP {resp.status_code}")
        try:
            text = resp.json()["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError, RecursionError) as exc:
            raise LLMError("chat endpoint sent an answer without choices[0].message") from exc
        if not isinstance(text, str) or not text.strip():
            raise LLMError("chat endpoint sent an empty answer")
        return clip(text)
