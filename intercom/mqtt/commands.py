"""What arrives on the command topics, checked before anything acts on it; pure code.

Anyone who can publish to the broker can send these, so a command is input like a datagram: its
size is capped, it is parsed strictly, and the targets of a ``call/ring`` go through the same
check as ``call.targets`` (:func:`intercom.config.check_address`), because a target is written
into an INVITE's request line and To header. A target that is not in ``call.targets`` is
refused unless ``mqtt.ring_any_target`` is true: otherwise anyone on the broker could dial any
number with the door's account.

Errors are :class:`CommandError` (the payload is malformed) and :class:`CommandRefused` (it is
well formed but not allowed). Their messages are safe to log: they quote the payload with
``repr``, which escapes control characters, and cut it short.
"""

from __future__ import annotations

import json

from intercom.config import check_address

__all__ = ["MAX_PAYLOAD", "MAX_TARGETS", "CommandError", "CommandRefused", "quote", "ring_targets"]

#: Bytes. A ring with ten SIP URIs fits in a few hundred; anything bigger is not a command.
MAX_PAYLOAD = 4096
#: Targets one ``call/ring`` may name (besides any subset of ``call.targets``): each is an INVITE.
MAX_TARGETS = 10
_QUOTE = 60  # characters of a payload quoted in a message


class CommandError(ValueError):
    """A malformed command; ignored and counted."""


class CommandRefused(CommandError):
    """A well-formed command that is not allowed; ignored and counted."""


def quote(text: str) -> str:
    """``text`` for a log line: short, with every control character escaped."""
    return repr(text[:_QUOTE] + ("..." if len(text) > _QUOTE else ""))


def ring_targets(
    payload: bytes, *, configured: tuple[str, ...], any_target: bool = False
) -> list[str] | None:
    """The targets a ``call/ring`` payload names: None for ``call.targets`` (an empty payload
    or ``PRESS``), else a non-empty list of checked addresses.

    ``{"targets": ["621", "sip:622@fritz.box"]}`` names targets; numbers are taken as text.
    Each must pass :func:`~intercom.config.check_address` and, unless ``any_target``, be one of
    ``configured``. Raises :class:`CommandError` or :class:`CommandRefused`.
    """
    try:
        text = payload.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise CommandError("the payload is not UTF-8") from None
    if not text or text.upper() == "PRESS":
        return None
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: "[[[[..." nested a thousand deep
        raise CommandError(f"not PRESS and not JSON: {quote(text)}") from None
    if not isinstance(data, dict) or "targets" not in data:
        raise CommandError(f'expected {{"targets": [...]}}, got {quote(text)}')
    raw = data["targets"]
    if not isinstance(raw, list) or not raw:
        raise CommandError("targets must be a non-empty list")
    limit = max(MAX_TARGETS, len(configured))
    if len(raw) > limit:
        raise CommandError(f"at most {limit} targets, not {len(raw)}")
    targets: list[str] = []
    for item in raw:
        if isinstance(item, bool) or not isinstance(item, str | int):
            raise CommandError(f"a target must be text or a number, got {quote(repr(item))}")
        target = str(item)
        try:
            check_address(target)
        except ValueError as exc:
            raise CommandError(f"target {quote(target)} {exc}") from None
        if target in targets:
            raise CommandError(f"target {quote(target)} is listed twice")
        if not any_target and target not in configured:
            raise CommandRefused(
                f"target {quote(target)} is not in call.targets "
                "(mqtt.ring_any_target: true allows any)"
            )
        targets.append(target)
    return targets
