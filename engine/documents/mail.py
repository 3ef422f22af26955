"""An e-mail (.eml): its headers, its text (plain, else HTML) and the names of its attachments."""

from __future__ import annotations

from email import message_from_bytes, policy
from email.message import MIMEPart

from engine.documents.text import TextSink, decode
from engine.documents.web import read_html

_HEADERS = ("From", "To", "Cc", "Subject", "Date")


def read_email(data: bytes, sink: TextSink) -> None:
    message = message_from_bytes(data, policy=policy.default)
    lines = [f"{field}: {' '.join(str(value).split())}" for field in _HEADERS if (value := message.get(field))]
    body = message.get_body(preferencelist=("plain", "html"))
    attachments = [
        filename
        for part in message.walk()
        if part is not body and not part.is_multipart() and (filename := part.get_filename())
    ]
    if attachments:
        lines.append("Attachments: " + ", ".join(attachments))
    sink.add("\n".join(lines) + "\n\n")
    if body is None:
        return
    content = _content(body)
    if body.get_content_type() == "text/html":
        read_html(content, sink)
    else:
        sink.add(content)


def _content(part: MIMEPart) -> str:
    payload = part.get_payload(decode=True)
    if part.get_content_charset() is None and isinstance(payload, bytes):
        # No declared charset: the standard library would decode as ASCII; guess the way text files are guessed.
        return _decoded(payload)
    try:
        content = part.get_content()
    except LookupError:  # a charset Python does not know
        return _decoded(payload) if isinstance(payload, bytes) else ""
    return content if isinstance(content, str) else ""


def _decoded(payload: bytes) -> str:
    decoded = decode(payload)
    return decoded[0] if decoded is not None else ""
