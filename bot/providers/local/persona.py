"""What the built-in avatars know without being told anything: who they are and what avatarbot is.

Everything here is spoken by espeak-ng, so it is written as short plain sentences: no markup, no
lists. The same facts go into the system prompt when a chat endpoint is configured, so a connected
model introduces itself the same way.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

#: one line each, in the avatar's own words (after "I'm <name>, ")
PERSONAS: dict[str, str] = {
    "ada": "calm and friendly, with a soft British voice, and I like to keep things clear.",
    "milo": "cheerful and quick, with an American voice, and happy to walk you through things.",
    "noor": "thoughtful and unhurried, and I take a question one step at a time.",
    "kai": "lively, with a Scottish voice, and I enjoy a good question.",
}
DEFAULT_PERSONA = "a friendly talking avatar."

WHO = ("I'm {name}, the built-in avatar of avatarbot. I'm {persona} I run on this server with a "
       "synthetic voice, so I need no vendor account.")
GREETING = ("Hello! I'm {name}. Ask me about avatarbot, or give me some notes in the knowledge "
            "box and I'll answer questions about them.")
NAME = "My name is {name}, the built-in avatar of avatarbot."
HOW_ARE_YOU = "I'm doing well, thank you for asking! What would you like to know?"
THANKS = "You're welcome! Ask me anything else, any time."
BYE = "Goodbye, and thanks for talking with me!"
CAN_DO = ("I talk with you here. Type a message and press Ask, and I answer it from the knowledge "
          "you give me, or through a language model if one is connected. Press Say, and I speak "
          "your text word for word.")
HELP = ("Type a question and press Ask to get an answer, or press Say to make me read your text "
        "aloud. To teach me something, paste notes into the knowledge box, or send /avatar "
        "context in Discord or Slack. For free conversation, connect a language model with "
        "LLM_BASE_URL.")
LLM = ("To connect a language model, set LLM_BASE_URL to any OpenAI-compatible endpoint, LLM_MODEL "
       "to the model's name, and LLM_API_KEY if it needs a key, then restart avatarbot. I then "
       "answer freely, and still use the knowledge you give me.")
KNOWLEDGE = ("To give me knowledge, paste your notes into the knowledge box before you start, or "
             "send /avatar context with the text in a session's thread. Then ask me about them, "
             "and I answer from what you wrote.")
ABOUT = ("avatarbot puts live talking avatars into Discord and Slack. Someone types /avatar start, "
         "and the bot posts a link to a viewer page where everyone can watch. Messages in the "
         "session's thread go to the avatar, and what it says comes back into the thread.")
START = ("In Discord or Slack, type /avatar start. The bot posts a viewer link and a Stop button, "
         "and you talk to the avatar in that message's thread. Here in the playground, use the "
         "Start the avatar button.")
VENDORS = ("An avatar can come from a video vendor, A2E, AKool or HeyGen's LiveAvatar, or it can "
           "be me, the built-in avatar, which runs on the server itself with no account at all.")
VIEWER = ("The viewer link opens a page that plays the avatar's live video and voice. It needs no "
          "login, and anyone with the link can watch until the session ends.")
ASK_SAY = ("Ask means I answer what you write. Say means I speak your text exactly as written. "
           "In a thread, /avatar mode picks which one plain messages use.")
CREDITS = ("Sessions are paid in credits. Each Discord server or Slack workspace has its own "
           "balance. Starting a session reserves its whole length, and when it ends only the time "
           "used is charged; /avatar credits shows the balance.")
STOP = ("To end a session, press the Stop button, or type /avatar stop in its thread. It also "
        "ends by itself when its time is up or nobody has written for a while.")
MADE = ("I'm part of avatarbot, an open-source project. I'm drawn right here on this server, and "
        "my voice comes from espeak-ng.")
WHAT_AM_I = ("I'm a drawn avatar with a synthetic voice, not a person. Without a language model, I "
             "answer from the notes I'm given and from what I know about avatarbot.")
SUGGEST = ("Ask me who I am, what avatarbot does, how to give me knowledge, or how to connect a "
           "language model. Or paste some notes into the knowledge box, and ask me about them.")
JOKE = ("Why did the avatar stay calm during the demo? Because it had nothing to lose but a few "
        "frames.")
NO_KNOWLEDGE = ("I don't know that yet, because nobody has given me anything to answer from. "
                "Paste notes into the knowledge box or send /avatar context, connect a language "
                "model with LLM_BASE_URL, or press Say to make me read your words.")
NOT_FOUND = ("I couldn't find that in what I was told. Try other words, add it to my knowledge, "
             "or press Say to make me read your words.")

#: all of it, for a chat endpoint's system prompt
ABOUT_AVATARBOT = " ".join((ABOUT, VENDORS, VIEWER, ASK_SAY, CREDITS, STOP, KNOWLEDGE, LLM))


@dataclass(frozen=True)
class Reply:
    """A built-in answer and what kind it is (``smalltalk`` needs nothing to be configured)."""

    text: str
    kind: str


def persona(look_id: str) -> str:
    """The avatar's one-line persona."""
    return PERSONAS.get(look_id, DEFAULT_PERSONA)


def system_prompt(name: str, look_id: str) -> str:
    """Who the avatar is and what avatarbot is, for a chat endpoint."""
    return (f"You are {name}, the built-in talking avatar of avatarbot. You are {persona(look_id)} "
            f"Your answers are spoken aloud by a speech synthesiser: answer in at most three "
            f"short sentences, plain text, no lists or markup. What you know about avatarbot: "
            f"{ABOUT_AVATARBOT}")


def _norm(text: str) -> str:
    text = text.lower().replace("’", "'")
    text = re.sub(r"[^a-z0-9_'/ ]+", " ", text)
    return " ".join(text.split())


_GREET = (r"(?:hi|hello|hey|hiya|howdy|yo|greetings|hallo|good (?:morning|afternoon|evening|day))"
          r"(?: there| all| everyone| again)?")
_NAMES = r"(?:ada|milo|noor|kai|avatar|bot)"
_YOU = r"(?:you|u)"

# (pattern that must match the whole clause, answer); the first match wins
_STRONG: list[tuple[str, str]] = [
    (rf"{_GREET}(?: {_NAMES})?", GREETING),
    (r"(?:thanks?(?: you)?|thank u|thx|ty|cheers|many thanks|great thanks|"
     r"(?:thanks?|thank you) (?:a lot|so much|very much))(?: {_NAMES})?".replace(
         "{_NAMES}", _NAMES), THANKS),
    (r"(?:bye|goodbye|good bye|see you|see ya|bye bye)(?: later| soon)?", BYE),
    (rf"how are {_YOU}(?: doing| today)*|how's it going|how are things", HOW_ARE_YOU),
    (rf"(?:who|what) (?:are|r) {_YOU}(?: exactly| really)?|tell me about yourself|"
     rf"introduce yourself|who am i (?:talking|speaking) (?:to|with)", WHO),
    (rf"what(?:'s| is) your name|what are {_YOU} called|do {_YOU} have a name", NAME),
    (rf"what (?:can|do) {_YOU} do|what are {_YOU} (?:able to do|for|good at)|"
     r"what can i do(?: here)?|how does (?:this|it) work", CAN_DO),
    (rf"who (?:made|built|created|designed|programmed) {_YOU}|where do {_YOU} come from", MADE),
    (rf"are {_YOU} (?:a |an )?(?:robot|bot|ai|human|person|real|machine|computer|"
     r"artificial intelligence)", WHAT_AM_I),
    (rf"what (?:should|can|could) i (?:ask|say to|talk about)(?: {_YOU})?|"
     rf"what (?:do|can) {_YOU} know(?: about)?", SUGGEST),
    (r"(?:tell me |do you know |say )?(?:a |any )?jokes?|make me laugh|something funny", JOKE),
    (r"help|help me|help please|please help|i need help|can you help(?: me)?|"
     r"how do i use (?:this|it|you)",
     HELP),
]
# topics of avatarbot itself: looked up after the knowledge text, so the knowledge wins
_TOPICS: list[tuple[str, str]] = [
    (r"\b(?:llm|language model|chat ?gpt|openai|gpt|ollama|llm_base_url|ai model|model)\b", LLM),
    (r"\b(?:knowledge|context|teach|notes?|know more|tell you (?:about|things))\b", KNOWLEDGE),
    (r"\b(?:ask|say)\b.*\b(?:ask|say)\b|\bwhat (?:does|is) (?:the )?(?:ask|say)\b|"
     r"\b(?:ask|say) (?:button|mode)\b", ASK_SAY),
    (r"\bcredits?\b|\bhow much (?:does|do|will) (?:a|the|this|it|you|session)", CREDITS),
    (r"\b(?:a2e|akool|heygen|liveavatar|vendors?|providers?)\b", VENDORS),
    (r"\b(?:viewer|the link|watch)\b", VIEWER),
    (r"\b(?:stop|end)\b.*\bsession\b|\bsession\b.*\b(?:stop|end)\b", STOP),
    (r"\b(?:start|begin|open|use)\b.*\b(?:session|avatar|discord|slack|avatarbot)\b", START),
    (r"\bavatarbot\b|\bthis (?:bot|app|project|thing|page|site)\b|^what is (?:this|it)$", ABOUT),
]


def _compile(rules: list[tuple[str, str]], whole: bool) -> list[tuple[Callable, str]]:
    out = []
    for pattern, text in rules:
        rx = re.compile(pattern)
        out.append((rx.fullmatch if whole else rx.search, text))
    return out


_STRONG_RX = _compile(_STRONG, whole=True)
_TOPIC_RX = _compile(_TOPICS, whole=False)
_CLAUSES = re.compile(r"[.!?,;]+|\s+-\s+")
_FILLER = re.compile(rf"^(?:(?:ok|okay|so|and|well|um|please|{_NAMES})\s+)+|(?:\s+(?:please|"
                     rf"{_NAMES}))+$")


def _fill(text: str, name: str, look_id: str) -> str:
    return text.format(name=name, persona=persona(look_id))


def smalltalk(question: str, name: str, look_id: str) -> Reply | None:
    """Greetings, thanks, who are you, help: answered before any knowledge text is consulted.

    "Hello! Who are you?" is two clauses: the greeting becomes a "Hello!" in front of the answer
    to the rest. A clause that is not small talk (a real question) makes this return ``None``.
    """
    clauses = [_FILLER.sub("", _norm(c)) for c in _CLAUSES.split(question)]
    clauses = [c for c in clauses if c]
    if not clauses:
        return None
    answers: list[str] = []
    for clause in clauses:
        hit = next((text for match, text in _STRONG_RX if match(clause)), None)
        if hit is None:
            return None
        if hit not in answers:
            answers.append(hit)
    if len(answers) > 1 and GREETING in answers:
        answers.remove(GREETING)
        return Reply("Hello! " + " ".join(_fill(a, name, look_id) for a in answers), "smalltalk")
    return Reply(" ".join(_fill(a, name, look_id) for a in answers), "smalltalk")


def topic(question: str, name: str, look_id: str) -> Reply | None:
    """A question about avatarbot itself (connecting a model, credits, vendors...)."""
    text = _norm(question)
    hit = next((t for search, t in _TOPIC_RX if search(text)), None)
    return Reply(_fill(hit, name, look_id), "builtin") if hit else None
