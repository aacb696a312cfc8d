"""How the demo draws what happens: a SIP ladder, MQTT lines, audio meters and the step list.

Pure functions of their inputs, so the look of the demo is tested without running it. Every line
starts with the seconds since the doorbell was first pressed and a short column naming what speaks
(``bell``, ``SIP``, ``state``, ``MQTT``, ``audio``, ``DTMF``, ``door``), so a newcomer can read the
story top to bottom.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from intercom.errors import ParseError
from intercom.sip.message import SipRequest, SipResponse, parse_message

LADDER_WIDTH = 46

#: The story, in order; ``intercom demo --once`` names the first one that did not happen.
STEPS: tuple[tuple[str, str], ...] = (
    ("pressed", "the doorbell button was pressed"),
    ("ringing", "the handset rang"),
    ("answered", "the handset answered"),
    ("voice_out", "the visitor's voice reached the handset"),
    ("voice_in", "the resident's voice reached the door"),
    ("code", "the handset sent the door code"),
    ("strike", "the door strike pulsed"),
    ("ended", "the call ended"),
    ("mqtt", "the call showed on MQTT"),
)

#: What one end recorded is the voice the other sent when their similarity (the peak normalized
#: cross-correlation, intercom.media.compare) reaches this; G.722 and G.711 give about 0.9.
VOICE_SIMILARITY = 0.5


def line(t: float, who: str, text: str) -> str:
    return f"{t:6.2f}  {who:<5}  {text}"


def summarize(data: bytes) -> str | None:
    """A SIP message's first line as a ladder label: ``INVITE sip:handset@...`` or ``180 Ringing``.

    None for what is not SIP (keep-alives, garbage), which the ladder leaves out.
    """
    try:
        message = parse_message(data)
    except ParseError:
        return None
    if isinstance(message, SipRequest):
        label = f"{message.method} {message.uri}"
    elif isinstance(message, SipResponse):
        label = f"{message.status} {message.reason}"
    else:  # pragma: no cover - parse_message returns one of the two
        return None
    if message.body and b"m=audio" in message.body:
        label += " (SDP)"
    return label


def arrow(label: str, sent: bool, left: str = "door", right: str = "handset") -> str:
    """``door ──INVITE──▶ handset`` for what the door sent, ``door ◀──180── handset`` back."""
    inner = LADDER_WIDTH - 4
    if len(label) > inner - 2:
        label = label[: inner - 3] + "…"
    if sent:
        body = f"── {label} ".ljust(inner + 2, "─") + "▶"
    else:
        body = "◀" + f" {label} ──".rjust(inner + 2, "─")
    return f"{left:<7} {body} {right}"


def meter(dbfs: float, width: int = 12) -> str:
    """A bar for a level: empty at -60 dBFS and below, full at 0 dBFS."""
    filled = round(max(0.0, min(1.0, (dbfs + 60.0) / 60.0)) * width)
    return "█" * filled + "·" * (width - filled)


def levels(out_dbfs: float, in_dbfs: float) -> str:
    def one(dbfs: float) -> str:
        return f"{meter(dbfs)} {dbfs:4.0f} dBFS" if dbfs > -120 else f"{meter(dbfs)}  silent"

    return f"door→handset {one(out_dbfs)}   handset→door {one(in_dbfs)}"


def mqtt_line(topic: str, payload: bytes, base: str, limit: int = 70) -> str:
    text = payload.decode("utf-8", "replace") or "(empty)"
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    short = topic[len(base) + 1 :] if topic.startswith(base + "/") else topic
    return f"{short} = {text}"


@dataclass
class Progress:
    """Which steps of the story happened; ``missing`` names the first that did not."""

    done: set[str] = field(default_factory=set)

    def mark(self, step: str) -> bool:
        """True the first time ``step`` happens (the demo prints a tick for it then)."""
        if step in self.done:
            return False
        self.done.add(step)
        return True

    @property
    def missing(self) -> list[str]:
        return [text for key, text in STEPS if key not in self.done]

    def reset(self) -> None:
        self.done.clear()
