"""What a welcome message may hold, within WeCom's limits (FACTS §5.4, §6): the one check
used wherever a welcome is configured (a contact way, a campaign, the corp's defaults)."""
from __future__ import annotations

import re
from typing import Any

from scrm.platform.errors import Invalid

WELCOME_TEXT_MAX = 4000  # bytes (FACTS §5.4)
LINK_TITLE_MAX, LINK_DESC_MAX, MINIPROGRAM_TITLE_MAX = 128, 512, 64  # bytes (FACTS §6)


def _text(value: Any, field: str, max_bytes: int, *, required: bool = True) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        raise Invalid("must be a non-empty string", field)
    if len(value.encode()) > max_bytes:
        raise Invalid(f"must be at most {max_bytes} bytes", field)
    return value


def _url(value: Any, field: str, *, required: bool = True) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str) or not re.fullmatch(r"https?://\S+", value):
        raise Invalid("must be an http(s) URL", field)
    return value


def _only(obj: Any, allowed: set[str], field: str) -> dict:
    if not isinstance(obj, dict):
        raise Invalid("must be an object", field)
    unknown = set(obj) - allowed
    if unknown:
        raise Invalid(f"unknown keys {sorted(unknown)}", field)
    return obj


def validate_welcome(welcome: Any) -> dict | None:
    """{"text"?, "link"? | "miniprogram"?} within WeCom's limits; None stays None."""
    if welcome is None:
        return None
    welcome = _only(welcome, {"text", "link", "miniprogram"}, "welcome")
    out: dict[str, Any] = {}
    if welcome.get("text") is not None:
        out["text"] = _text(welcome["text"], "welcome.text", WELCOME_TEXT_MAX)
    if "link" in welcome and "miniprogram" in welcome:
        raise Invalid("a link or a miniprogram, not both", "welcome")
    if "link" in welcome:
        link = _only(welcome["link"], {"title", "url", "picurl", "desc"}, "welcome.link")
        out["link"] = {k: v for k, v in {
            "title": _text(link.get("title"), "welcome.link.title", LINK_TITLE_MAX),
            "url": _url(link.get("url"), "welcome.link.url"),
            "picurl": _url(link.get("picurl"), "welcome.link.picurl", required=False),
            "desc": _text(link.get("desc"), "welcome.link.desc", LINK_DESC_MAX, required=False),
        }.items() if v is not None}
    if "miniprogram" in welcome:
        mini = _only(welcome["miniprogram"], {"title", "appid", "page", "pic_media_id"}, "welcome.miniprogram")
        out["miniprogram"] = {
            "title": _text(mini.get("title"), "welcome.miniprogram.title", MINIPROGRAM_TITLE_MAX),
            "appid": _text(mini.get("appid"), "welcome.miniprogram.appid", 64),
            "page": _text(mini.get("page"), "welcome.miniprogram.page", 1024),
            "pic_media_id": _text(mini.get("pic_media_id"), "welcome.miniprogram.pic_media_id", 256),
        }
    if not out:  # WeCom refuses a welcome with neither text nor attachment
        raise Invalid("needs a text, a link or a miniprogram", "welcome")
    return out
