"""Parsing of WeCom callback XML, through defusedxml only.

Bodies come from the internet before and after decryption, so the parser refuses
DTDs outright (which covers entity expansion and external references) and caps the
size before any parsing happens.
"""
from __future__ import annotations

from typing import Any
from xml.etree.ElementTree import Element, ParseError

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring

MAX_BODY = 65536
# WeCom nests at most 4 levels (xml/ExtAttr/Item/Text/Value); the cap keeps a small body
# of thousands of nested tags from exhausting the recursion limit.
MAX_DEPTH = 16
# WeCom wraps list entries in <Item> (ExtAttr, MemChangeList), so one lone <Item> is
# still a list; any other lone child (e.g. <Text><Value>) is a nested record.
_LIST_TAG = "Item"


class XmlError(ValueError):
    """Rejected body; `.reason` is "too_large" | "not_xml" | "dtd_forbidden" | "bad_root"."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


def parse_xml(data: str | bytes) -> dict[str, Any]:
    """Return the children of the root <xml> as a dict.

    Leaf → stripped text ("" when empty); a tag repeated among siblings → list;
    an element whose children all share one tag (several, or a single <Item>) → list
    of their values; any other element with children → nested dict. Nesting deeper
    than MAX_DEPTH is refused as "too_large".
    """
    if isinstance(data, str):
        # A str never has fewer UTF-8 bytes than characters: refuse huge input unencoded.
        if len(data) > MAX_BODY:
            raise XmlError("too_large")
        try:
            raw = data.encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates
            raise XmlError("not_xml") from None
    elif isinstance(data, (bytes, bytearray)):
        raw = bytes(data)
    else:
        raise TypeError(f"parse_xml expects str or bytes, not {type(data).__name__}")
    if len(raw) > MAX_BODY:
        raise XmlError("too_large")
    try:
        # Parse text, not bytes, so an encoding="..." declaration cannot override UTF-8.
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise XmlError("not_xml") from None

    try:
        root = fromstring(text, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException:
        raise XmlError("dtd_forbidden") from None
    except ParseError:
        raise XmlError("not_xml") from None
    if root.tag != "xml":
        raise XmlError("bad_root")
    return _record(root, 1)


def _record(element: Element, depth: int) -> dict[str, Any]:
    grouped: dict[str, list[Any]] = {}
    for child in element:
        grouped.setdefault(child.tag, []).append(_value(child, depth))
    return {tag: values[0] if len(values) == 1 else values for tag, values in grouped.items()}


def _value(element: Element, depth: int) -> Any:
    children = list(element)
    if not children:
        return (element.text or "").strip()
    if depth >= MAX_DEPTH:
        raise XmlError("too_large")
    tags = {child.tag for child in children}
    if len(tags) == 1 and (len(children) > 1 or children[0].tag == _LIST_TAG):
        return [_value(child, depth + 1) for child in children]
    return _record(element, depth + 1)

