"""Answers for the local avatar's ``ask``.

A small retrieval over the knowledge text, or an OpenAI-compatible chat endpoint when one is
configured.
"""

from __future__ import annotations

import functools
import logging
import math
import re

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from bot.providers.local import persona
from bot.providers.local.persona import NO_KNOWLEDGE, NOT_FOUND, Reply

log = logging.getLogger(__name__)

LLM_DOWN = "Sorry, my answer service is not responding right now."
MAX_ANSWER = 1200  # characters spoken at most; a long answer is cut at a sentence end

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[^a-z])|\n+")
# words that carry no topic: they neither score nor make a sentence "match"
_STOP = frozenset(
    "a an and are as at be been being but by can could do does did for from had has have how i "
    "if in into is it its just me my of on or our ours so some than that the their them then "
    "there these they this those to too up us was we were what when where which while who whom "
    "whose why will with would you your yours tell about please know anything any get got "
    "hi hello hey thanks thank ok okay there's what's who's where's when's i'm it's you're "
    "much many long often time day date say said bring want need like go come able possible "
    "there's".split()
)
# words that mean the same thing to someone asking (after stemming); the first is the key
_SYNONYMS = [
    ("price", "cost", "fee", "expensiv", "cheap", "euro", "dollar", "discount", "reduc"),
    ("pay", "paid", "payment", "card", "cash", "chequ", "check"),
    ("popular", "best", "favourit", "favorit", "recommend", "bestsel"),
    ("weigh", "weight", "heavy", "light"),
    ("mak", "mad", "manufactur", "produc", "build", "built"),
    ("own", "run", "boss", "proprietor"),
    ("found", "establish", "start", "creat", "begin", "began"),
    ("return", "refund", "exchang", "money back"),
    ("deliver", "ship", "post", "send"),
    ("locat", "address", "find", "situat", "where"),
    ("phone", "call", "telephon", "ring"),
    ("email", "mail", "contact", "reach"),
    ("kid", "child", "children", "famili", "childcar", "babi", "baby"),
    ("dog", "pet", "anim"),
    ("wifi", "wi", "internet"),
    ("park", "car"),
    ("ticket", "admiss", "entry", "entranc"),
    ("food", "eat", "lunch", "dinner", "meal", "snack", "drink", "caf"),
    ("warranty", "guarante"),
    ("open", "hour"),
    ("clos", "shut"),
    ("end", "finish"),
    ("book", "reserv", "regist", "sign"),
    ("speaker", "talk", "present", "keynot"),
    ("battery", "charg"),
]
# question words that name the kind of fact asked for stand for the words such facts come with
_QWORD_TERMS = {"where": "locat"}
_SYN = {w: group[0] for group in _SYNONYMS for w in group}

_TIME = re.compile(
    r"\b\d{1,2}(?::\d{2})?\s*(?:am|pm|a\.m\.|p\.m\.|h)\b|\b\d{1,2}:\d{2}\b|\bnoon\b|\bmidnight\b|"
    r"\b(?:mon|tues|wednes|thurs|fri|satur|sun)day|\bweekdays?\b|\bweekends?\b|\bdaily\b|"
    r"\b(?:january|february|march|april|may|june|july|august|september|october|november|"
    r"december)\b|\b(?:19|20)\d{2}\b|\b(?:today|tomorrow|tonight|morning|evening|afternoon)\b",
    re.I)
_NOT_PLACE = (r"(?!(?:Mon|Tues|Wednes|Thurs|Fri|Satur|Sun)day|January|February|March|April|May|"
              r"June|July|August|September|October|November|December)")
_PLACE = re.compile(
    r"(?i:\b(?:street|st\.|road|rd\.|avenue|ave\.|square|lane|boulevard|floor|room|hall|building|"
    r"centre|center|near|next to|opposite|corner|located|downtown|address|station|venue|bar|"
    r"restaurant|hotel|cafe|pub|museum|park)\b)|"
    rf"\b(?:in|at|on) (?:the )?{_NOT_PLACE}[A-Z][a-z]+|\b\d+,? {_NOT_PLACE}[A-Z][a-z]+")
_MONEY = re.compile(
    r"[$€£¥]\s*\d|\d\s*(?:[$€£¥]|euros?|dollars?|pounds?|usd|eur|gbp|cents?)\b|\bfree\b|"
    r"\bcosts?\b|\bprices?d?\b", re.I)
_NUMBER = re.compile(r"\b\d+\b|\b(?:one|two|three|four|five|six|seven|eight|nine|ten|twelve|"
                     r"twenty|thirty|forty|fifty|hundred|dozen)\b", re.I)
_DURATION = re.compile(r"\b\d+\s*(?:-\s*\d+\s*)?(?:seconds?|minutes?|mins?|hours?|hrs?|days?|"
                       r"weeks?|months?|years?)\b|\b(?:one|two|three|four|five|six|seven|eight|"
                       r"nine|ten|thirty)\s+(?:minutes?|hours?|days?|weeks?|months?|years?)\b",
                       re.I)
_PERSON = re.compile(r"\b(?!(?:The|Our|We|A|An|It|This|Each|Every|All|On|In|At)\b)"
                     r"[A-Z][a-z]+(?:\s+[A-Z][a-z]+)+\b|(?i:\b(?:owner|owned|founder|founded by|"
                     r"manager|run by|ceo|director|chef|host|speaker|organi[sz]er|company)\b)|"
                     r"\bby (?:the )?[A-Z][a-z]+")
_CONTACT = re.compile(r"@|\b\+?\d[\d\s-]{6,}\d\b|\bphone\b|\bcall\b|\be-?mail\b", re.I)
# what kind of fact a question asks for, and the pattern a sentence giving it has
_HINTS: list[tuple[re.Pattern[str], re.Pattern[str]]] = [
    (re.compile(r"\bhow (?:much|expensive)\b|\bprice|\bcost|\bfee\b"), _MONEY),
    (re.compile(r"\bhow long\b|\bhow many (?:days|hours|minutes|weeks|years)\b"), _DURATION),
    (re.compile(r"\bhow many\b|\bnumber of\b"), _NUMBER),
    (re.compile(r"\bwhen\b|\bwhat time\b|\bwhat day\b|\bwhich day\b|\bwhat date\b|"
                r"\bhours\b|\bwhat year\b"), _TIME),
    (re.compile(r"\bwhere\b|\baddress\b|\blocated\b"), _PLACE),
    (re.compile(r"\bwho\b|\bwhose\b"), _PERSON),
    (re.compile(r"\bcontact\b|\bphone\b|\be-?mail\b|\breach (?:you|them)\b|\bcall\b"), _CONTACT),
]
_HINT_BONUS = 2.0  # in BM25 points: about one well-matched rare word
_NO_HINT = 0.5  # a sentence without the kind of fact asked for counts this much
_HOW_MANY = re.compile(r"\bhow many ([a-z]+)")
_ABBREV = re.compile(r"\b(?:Dr|Mr|Mrs|Ms|Prof|St|Mt|No|Nr|Inc|Ltd|Jr|Sr|vs|approx|e\.g|i\.e)\.$")
_PRONOUN_START = re.compile(r"^(?:it|its|they|their|this|that|these|those|he|she|his|her|"
                            r"also|and|but|both)\b", re.I)
_K1, _B = 1.2, 0.75
_LIST_MARK = re.compile(r"^\s*(?:[-*\u2022>]|#+|\d+[.)])\s+")
_EMPHASIS = re.compile(r"\*\*|__|`")


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


def stem(word: str) -> str:
    """A light suffix strip: "opens", "opening", "opened" and "open" meet; "owner" meets "owns"."""
    w = word.removesuffix("'s").removesuffix("'")
    if len(w) <= 3 or w.isdigit():
        return w
    if w.endswith("ies") and len(w) > 4:
        w = w[:-3] + "y"
    elif w.endswith("sses"):
        w = w[:-2]
    elif w.endswith("s") and not w.endswith(("ss", "us", "is")):
        w = w[:-1]
    for suffix in ("ing", "ed", "er", "ly", "ion"):
        if w.endswith(suffix) and len(w) - len(suffix) >= 3:
            w = w[: -len(suffix)]
            if len(w) > 3 and w[-1] == w[-2] and w[-1] not in "lsaeiou":  # "shipped" -> "ship"
                w = w[:-1]
            break
    if len(w) > 3 and w.endswith("e"):
        w = w[:-1]
    return w


def terms(text: str) -> list[str]:
    """The topic words of ``text``, stemmed and with synonyms folded together (repeats kept)."""
    out = []
    for word in _WORD.findall(text.lower().replace("\u2019", "'")):
        if word in _STOP:
            continue
        s = stem(word)
        out.append(_SYN.get(s, _SYN.get(word, s)))
    return out


def sentences(text: str) -> list[str]:
    """Split a knowledge text into sentences (and lines); "Dr. Costa" stays in one piece."""
    out: list[str] = []
    glue = False
    for line in text.splitlines():
        for piece in _SENTENCE.split(line):
            piece = piece.strip()
            if not piece:
                continue
            if glue and out:
                out[-1] += " " + piece
            else:
                out.append(piece)
            glue = bool(_ABBREV.search(piece))
        glue = False
    return out


@functools.lru_cache(maxsize=32)
def _index(knowledge: str) -> tuple[list[str], list[list[str]]]:
    """A knowledge text's sentences and their terms (kept: a session asks about the same text)."""
    sents = sentences(knowledge)
    return sents, [terms(s) for s in sents]


def speakable(text: str) -> str:
    """A knowledge line as it should be spoken: no list markers, no markdown emphasis."""
    return _EMPHASIS.sub("", _LIST_MARK.sub("", text)).strip()


def _hints(question: str) -> list[re.Pattern[str]]:
    q = question.lower()
    many = _HOW_MANY.search(q)
    if many:  # "how many speeds": a number right before "speed(s)"
        word = re.escape(stem(many.group(1)))
        return [re.compile(rf"(?:{_NUMBER.pattern})\s+(?:[a-z-]+\s+)?{word}", re.I)]
    return [fact for asks, fact in _HINTS if asks.search(q)]


def retrieve(knowledge: str | None, question: str) -> str | None:
    """The knowledge sentence that best answers ``question`` (with the one before it if needed).

    Scoring is BM25 over sentences, with stop words dropped, light stemming and a few synonyms.
    When the question asks for a kind of fact (a time for "when", a price for "how much", a name
    for "who", a place for "where"), sentences that hold one get a bonus and the others count
    half; such a sentence may win on that alone ("When was the bakery founded?" finds the year
    next to the sentence about the bakery). A question whose rarest words appear nowhere in the
    text is not answered from it ("Do you sell bicycles?").
    """
    if not knowledge or not knowledge.strip():
        return None
    sents, docs = _index(knowledge)
    q = question.lower()
    asked = list(dict.fromkeys(
        terms(question) + [t for w, t in _QWORD_TERMS.items() if re.search(rf"\b{w}\b", q)]))
    hints = _hints(question)
    if not asked and not hints:
        return None
    n = len(docs)
    avg = sum(len(d) for d in docs) / n or 1.0
    df = {t: sum(1 for d in docs if t in d) for t in asked}
    idf = {t: math.log(1 + (n - df[t] + 0.5) / (df[t] + 0.5)) for t in asked}
    known = [t for t in asked if df[t]]
    unknown = max((idf[t] for t in asked if not df[t]), default=0.0)
    if asked and not known:
        return None  # nothing the question is about is in the text
    lexical: list[float] = []
    for doc in docs:
        score = 0.0
        for t in known:
            tf = doc.count(t)
            if tf:
                score += idf[t] * tf * (_K1 + 1) / (tf + _K1 * (1 - _B + _B * len(doc) / avg))
        lexical.append(score)
    anchor = max(range(n), key=lambda i: lexical[i])
    scored: list[tuple[float, int, int]] = []
    for i, sent in enumerate(sents):
        score = lexical[i]
        if hints:
            fits = any(fact.search(sent) for fact in hints)
            score = score + _HINT_BONUS if fits else score * _NO_HINT
            if not fits and not score:
                continue
        elif not score or score < unknown:
            # the best match shares a word, but the question's rarest word is missing
            continue
        if score > 0:
            scored.append((score, -abs(i - anchor), -i))
    if not scored:
        return None
    i = -max(scored)[2]
    found = speakable(sents[i])
    # "It costs 40 euros." says little alone: give the sentence it refers back to
    if i > 0 and (_PRONOUN_START.match(found) or len(docs[i]) <= 2):
        found = speakable(sents[i - 1]) + " " + found
    return found


def answer_from_knowledge(knowledge: str | None, question: str, name: str = "Ada",
                          look_id: str = "ada") -> str:
    """What the avatar says to ``question`` without a chat endpoint."""
    return local_answer(knowledge, question, name, look_id).text


def local_answer(knowledge: str | None, question: str, name: str = "Ada",
                 look_id: str = "ada") -> Reply:
    """Small talk first, then the knowledge text, then what the avatar knows about avatarbot.

    The ``kind`` says where the answer came from: ``smalltalk``, ``knowledge``, ``builtin``, or
    ``fallback`` (nothing found: the answer says what the person can do next).
    """
    chat = persona.smalltalk(question, name, look_id)
    if chat is not None:
        return chat
    found = retrieve(knowledge, question)
    if found:
        return Reply(clip(found), "knowledge")
    about = persona.topic(question, name, look_id)
    if about is not None:
        return about
    has_knowledge = bool(knowledge and knowledge.strip())
    return Reply(NOT_FOUND if has_knowledge else NO_KNOWLEDGE, "fallback")


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

    def _messages(self, knowledge: str | None, question: str,
                  who: str | None) -> list[dict[str, str]]:
        system = who or (
            "You are a friendly talking avatar. Your answers are spoken aloud: answer in at most "
            "three short sentences, plain text, no lists or markup."
        )
        if knowledge and knowledge.strip():
            system += (
                " Answer from the knowledge below; if it does not say, answer that you do not "
                "know.\n\nKnowledge:\n" + knowledge.strip()
            )
        return [{"role": "system", "content": system}, {"role": "user", "content": question}]

    async def answer(self, knowledge: str | None, question: str, who: str | None = None) -> str:
        """The model's answer; ``LLMError`` on any failure.

        ``who`` is the avatar's own system prompt (its name, persona and what avatarbot is).
        """
        cfg = self.config
        headers = {}
        if cfg.api_key is not None and cfg.api_key.get_secret_value():
            headers["Authorization"] = f"Bearer {cfg.api_key.get_secret_value()}"
        body = {
            "model": cfg.model, "messages": self._messages(knowledge, question, who),
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
