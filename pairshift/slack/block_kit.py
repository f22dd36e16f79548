"""Block Kit primitives: Slack's documented limits, mrkdwn escaping, the blocks messages are built from.

Nothing here knows pairshift: data in, blocks out, no I/O. Slack's limits: <= 50 blocks, section text <= 3,000
chars, header <= 150, button value <= 2,000, message text <= 40,000, <= 10 fields of <= 2,000 chars. What does
not fit is split between paragraphs and lines (:func:`chunks`, :func:`fit_lines`), never in the middle of a
table; text from outside (model outputs, dataset ids) is escaped (:func:`escape`) before it reaches mrkdwn.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, Field

MAX_BLOCKS = 50
MAX_SECTION = 3000
MAX_HEADER = 150
MAX_BUTTON_VALUE = 2000
MAX_TEXT = 40_000
MAX_FIELDS = 10
MAX_FIELD = 2000
MAX_CONTEXT_ELEMENTS = 10


class Message(BaseModel):
    """What chat.postMessage / chat.update take: a notification text and the blocks."""

    text: str
    blocks: list[dict[str, Any]] = Field(default_factory=list)


def escape(text: str) -> str:
    """Slack's three control characters; everything from outside (outputs, case ids) goes through this."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def clip(text: str, limit: int) -> str:
    """For one-line labels only (titles, ids), never tables: cut with an ellipsis."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


_BOLD = re.compile(r"\*\*(.+?)\*\*")
_LINK = re.compile(r"\[([^\]]+)\]\((https?://[^)\s]+)\)")
_HEADING = re.compile(r"^#{1,6}\s+(.*)$", re.MULTILINE)


def mrkdwn(markdown: str) -> str:
    """The Markdown of a notice as Slack mrkdwn (bold, links, headings), escaped first."""
    out = escape(markdown)
    out = _HEADING.sub(r"*\1*", out)
    out = _BOLD.sub(r"*\1*", out)
    return _LINK.sub(lambda m: f"<{m.group(2)}|{m.group(1)}>", out)


def _is_table(paragraph: str) -> bool:
    lines = paragraph.strip().splitlines()
    return paragraph.lstrip().startswith("```") or (
        len(lines) > 1 and all(ln.lstrip().startswith("|") for ln in lines)
    )


def chunks(text: str, limit: int = MAX_SECTION) -> list[str]:
    """Split text into pieces of at most ``limit`` chars between paragraphs, then between lines.

    A table or code block that alone exceeds the limit is replaced whole by a pointer (never cut mid-table).
    """
    pieces: list[tuple[str, str]] = []  # (text, separator that joins it to the previous piece)
    for para in re.split(r"\n\s*\n", text.strip()):
        if len(para) <= limit:
            pieces.append((para, "\n\n"))
        elif _is_table(para):
            pieces.append(("_(a table too large for Slack was left out: see the full report)_", "\n\n"))
        else:
            lines = [clip(line, limit) for line in para.splitlines() if line.strip()]
            pieces += [(line, "\n\n" if i == 0 else "\n") for i, line in enumerate(lines)]
    out: list[str] = []
    for piece, sep in pieces:
        if out and len(out[-1]) + len(sep) + len(piece) <= limit:
            out[-1] += sep + piece
        else:
            out.append(piece)
    return out


def fit_lines(lines: list[str], limit: int, more: str = "…and {n} more") -> str:
    """Whole lines up to ``limit`` chars, then a count of what was left out."""
    out: list[str] = []
    size = 0
    for i, line in enumerate(lines):
        tail = more.format(n=len(lines) - i)
        if size + len(line) + 1 + len(tail) > limit:
            out.append(tail)
            break
        out.append(line)
        size += len(line) + 1
    return "\n".join(out)


# ---------------------------------------------------------------- blocks


def header(text: str) -> dict[str, Any]:
    """A header block (plain text, clipped to Slack's limit)."""
    return {"type": "header", "text": {"type": "plain_text", "text": clip(text, MAX_HEADER), "emoji": True}}


def section(text: str, *, block_id: str | None = None) -> dict[str, Any]:
    """A mrkdwn section; refuses text over Slack's limit (split it with :func:`chunks` first)."""
    if len(text) > MAX_SECTION:
        raise ValueError(f"section text of {len(text)} chars exceeds Slack's {MAX_SECTION}")
    block: dict[str, Any] = {"type": "section", "text": {"type": "mrkdwn", "text": text}}
    if block_id:
        block["block_id"] = block_id
    return block


def fields(pairs: dict[str, Any]) -> dict[str, Any] | None:
    """A section of up to 10 label/value fields (the rest are left out: they are in the log and the CLI)."""
    items = [f"*{escape(str(k))}*\n{escape(str(v))}" for k, v in pairs.items() if v is not None]
    if not items:
        return None
    return {
        "type": "section",
        "fields": [{"type": "mrkdwn", "text": clip(t, MAX_FIELD)} for t in items[:MAX_FIELDS]],
    }


def context(*texts: str, block_id: str | None = None) -> dict[str, Any]:
    """A context block of up to 10 mrkdwn elements, each clipped."""
    elements = [{"type": "mrkdwn", "text": clip(t, MAX_SECTION)} for t in texts if t][:MAX_CONTEXT_ELEMENTS]
    block: dict[str, Any] = {"type": "context", "elements": elements}
    if block_id:
        block["block_id"] = block_id
    return block


def code_table(rows: list[list[str]]) -> str:
    """A monospace table (Slack has no table block): columns padded to their widest cell."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=False)).rstrip() for r in rows]
    return "```\n" + "\n".join(lines) + "\n```"


def link_buttons(links: dict[str, str]) -> dict[str, Any] | None:
    """Up to 5 link buttons for the http(s) links; None when there is none."""
    usable = [(label, url) for label, url in links.items() if url.startswith(("http://", "https://"))][:5]
    if not usable:
        return None
    return {
        "type": "actions",
        "block_id": "pairshift_links",
        "elements": [
            {
                "type": "button",
                "action_id": f"pairshift_link_{i}",
                "url": url,
                "text": {"type": "plain_text", "text": clip(label, 75)},
            }
            for i, (label, url) in enumerate(usable)
        ],
    }


# ---------------------------------------------------------------- limits


def fit(message: Message) -> Message:
    """The last guard: at most 50 blocks, keeping the buttons and links (the point of the message)."""
    blocks = message.blocks
    if len(blocks) > MAX_BLOCKS:
        keep_tail = [b for b in blocks[-4:] if b.get("type") in ("actions", "context")]
        head = [b for b in blocks if b not in keep_tail][: MAX_BLOCKS - len(keep_tail) - 1]
        blocks = head + [context("_Some parts were left out: see the full report._")] + keep_tail
    return Message(text=clip(message.text, MAX_TEXT), blocks=blocks)


def limit_violations(message: Message) -> list[str]:
    """Every way ``message`` breaks Slack's documented limits (empty = it can be posted)."""
    problems = []
    if len(message.text) > MAX_TEXT:
        problems.append(f"text has {len(message.text)} chars > {MAX_TEXT}")
    if len(message.blocks) > MAX_BLOCKS:
        problems.append(f"{len(message.blocks)} blocks > {MAX_BLOCKS}")
    for i, b in enumerate(message.blocks):
        text = (b.get("text") or {}).get("text", "")
        limit = MAX_HEADER if b["type"] == "header" else MAX_SECTION
        if len(text) > limit:
            problems.append(f"block {i} ({b['type']}) text has {len(text)} chars > {limit}")
        if len(b.get("fields", [])) > MAX_FIELDS or any(
            len(f["text"]) > MAX_FIELD for f in b.get("fields", [])
        ):
            problems.append(f"block {i} fields exceed {MAX_FIELDS} x {MAX_FIELD} chars")
        for el in b.get("elements", []):
            if len(el.get("value", "")) > MAX_BUTTON_VALUE:
                problems.append(f"block {i} button value > {MAX_BUTTON_VALUE}")
            if len(el.get("text", "") if isinstance(el.get("text"), str) else "") > MAX_SECTION:
                problems.append(f"block {i} context element > {MAX_SECTION}")
    return problems
