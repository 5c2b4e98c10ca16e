"""What a welcome message may hold, within WeCom's limits (FACTS §5.4, §6): the one check
used wherever a welcome is configured (a contact way, a campaign, the corp's defaults).

A welcome that carries a coupon writes `{coupon_code}` where the code goes: in the text, the
link's url or the miniprogram's page (nowhere else is it filled in). The coupon is not always
issued (out of stock, the per-customer limit, too little of the 20 s left, the campaign over),
so such a welcome must also say what to send without one: its `without_coupon` variant,
checked here, when the welcome is configured, rather than discovered by a customer reading a
raw placeholder. A default welcome never carries a coupon.
"""
from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from scrm.platform.errors import Invalid

WELCOME_TEXT_MAX = 4000  # bytes (FACTS §5.4)
LINK_TITLE_MAX, LINK_DESC_MAX, MINIPROGRAM_TITLE_MAX = 128, 512, 64  # bytes (FACTS §6)
PLACEHOLDER = "{coupon_code}"
CODE_BYTES = 16  # scrm.domain.coupons.CODE_LENGTH: what a placeholder becomes
WITHOUT_COUPON = "without_coupon"
MESSAGE_KEYS = {"text", "link", "miniprogram"}
# Where the code is filled in (scrm.domain.welcome.content.render); a placeholder anywhere else
# would reach the customer as it is.
CODE_FIELDS = {("text",), ("link", "url"), ("miniprogram", "page")}


def _text(value: Any, field: str, max_bytes: int, *, required: bool = True) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        raise Invalid("must be a non-empty string", field)
    size = len(value.encode()) + value.count(PLACEHOLDER) * (CODE_BYTES - len(PLACEHOLDER))
    if size > max_bytes:
        raise Invalid(f"must be at most {max_bytes} bytes (with the coupon code filled in)", field)
    return value


def _url(value: Any, field: str, *, required: bool = True) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str) or not re.fullmatch(r"https?://\S+", value):
        raise Invalid("must be an http(s) URL", field)
    try:
        host = urlsplit(value).hostname
    except ValueError:  # "http://[x": a bracket that opens no IPv6 address
        host = None
    if not host:
        raise Invalid("must be an http(s) URL with a host", field)
    return value


def _only(obj: Any, allowed: set[str], field: str) -> dict:
    if not isinstance(obj, dict):
        raise Invalid("must be an object", field)
    unknown = set(obj) - allowed
    if unknown:
        raise Invalid(f"unknown keys {sorted(unknown)}", field)
    return obj


def _message(welcome: dict, field: str) -> dict:
    """text and/or one attachment, each within WeCom's limits."""
    out: dict[str, Any] = {}
    if welcome.get("text") is not None:
        out["text"] = _text(welcome["text"], f"{field}.text", WELCOME_TEXT_MAX)
    if "link" in welcome and "miniprogram" in welcome:
        raise Invalid("a link or a miniprogram, not both", field)
    if "link" in welcome:
        link = _only(welcome["link"], {"title", "url", "picurl", "desc"}, f"{field}.link")
        out["link"] = {k: v for k, v in {
            "title": _text(link.get("title"), f"{field}.link.title", LINK_TITLE_MAX),
            "url": _url(link.get("url"), f"{field}.link.url"),
            "picurl": _url(link.get("picurl"), f"{field}.link.picurl", required=False),
            "desc": _text(link.get("desc"), f"{field}.link.desc", LINK_DESC_MAX, required=False),
        }.items() if v is not None}
    if "miniprogram" in welcome:
        mini = _only(welcome["miniprogram"], {"title", "appid", "page", "pic_media_id"}, f"{field}.miniprogram")
        out["miniprogram"] = {
            "title": _text(mini.get("title"), f"{field}.miniprogram.title", MINIPROGRAM_TITLE_MAX),
            "appid": _text(mini.get("appid"), f"{field}.miniprogram.appid", 64),
            "page": _text(mini.get("page"), f"{field}.miniprogram.page", 1024),
            "pic_media_id": _text(mini.get("pic_media_id"), f"{field}.miniprogram.pic_media_id", 256),
        }
    if not out:  # WeCom refuses a welcome with neither text nor attachment
        raise Invalid("needs a text, a link or a miniprogram", field)
    return out


def placeholders(message: dict) -> list[tuple[str, ...]]:
    """Where `{coupon_code}` appears in a message (text, link, miniprogram), as field paths."""
    found = []
    for key in sorted(MESSAGE_KEYS & set(message)):
        value = message[key]
        if isinstance(value, str):
            found += [(key,)] if PLACEHOLDER in value else []
        else:
            found += [(key, name) for name in sorted(value) if PLACEHOLDER in str(value[name])]
    return found


def validate_welcome(welcome: Any, *, field: str = "welcome", coupon: bool = True) -> dict | None:
    """{"text"?, "link"? | "miniprogram"?, "without_coupon"?} within WeCom's limits; None stays None.

    `coupon=False` (a default welcome): no placeholder and no variant."""
    if welcome is None:
        return None
    welcome = _only(welcome, MESSAGE_KEYS | ({WITHOUT_COUPON} if coupon else set()), field)
    out = _message(welcome, field)
    used = placeholders(out)
    misplaced = [p for p in used if p not in CODE_FIELDS]
    if misplaced:
        raise Invalid(f"{PLACEHOLDER} is only filled in in text, link.url and miniprogram.page",
                      ".".join((field, *misplaced[0])))
    if used and not coupon:
        raise Invalid(f"a default welcome carries no coupon: {PLACEHOLDER} cannot be used",
                      ".".join((field, *used[0])))
    if WITHOUT_COUPON in welcome:
        variant_field = f"{field}.{WITHOUT_COUPON}"
        variant = _message(_only(welcome[WITHOUT_COUPON], MESSAGE_KEYS, variant_field), variant_field)
        if placeholders(variant):
            raise Invalid(f"is sent when there is no coupon: it cannot use {PLACEHOLDER}",
                          ".".join((variant_field, *placeholders(variant)[0])))
        out[WITHOUT_COUPON] = variant
    elif used:
        raise Invalid(f"the welcome uses {PLACEHOLDER}: say what to send when no coupon is issued",
                      f"{field}.{WITHOUT_COUPON}")
    return out
