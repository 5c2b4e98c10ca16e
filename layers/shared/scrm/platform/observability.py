"""Logger, Metrics and Tracer for every function, with personal data masked in logs.

Masking sits in the log formatter, so it applies to every record whoever writes it:
keys that hold names or phone numbers are blanked, and anything shaped like a mainland
mobile number inside a string is masked as well.
"""
from __future__ import annotations

import re
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.logging.formatter import LambdaPowertoolsFormatter

NAMESPACE = "Scrm"
_PII_KEYS = {"name", "mobile", "phone", "telephone", "remark", "remark_mobiles", "email", "address",
             "nickname", "Name", "Mobile", "Telephone", "Email", "Address", "Alias", "alias"}
_PHONE = re.compile(r"(?<!\d)(1[3-9]\d)(\d{4})(\d{4})(?!\d)")


def mask_phone(text: str) -> str:
    return _PHONE.sub(lambda m: f"{m.group(1)}****{m.group(3)}", text)


def mask_name(value: str) -> str:
    """张三丰 -> 张**; keeps one character so operators can still tell records apart."""
    return value[:1] + "*" * max(len(value) - 1, 1) if value else value


def mask(value: Any, key: str | None = None) -> Any:
    if isinstance(value, dict):
        return {k: mask(v, k) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [mask(v, key) for v in value]
    if isinstance(value, str):
        if key in _PII_KEYS:
            return mask_phone(mask_name(value)) if "mobile" not in key.lower() else "***"
        return mask_phone(value)
    return value


class MaskingFormatter(LambdaPowertoolsFormatter):
    def serialize(self, log: dict[str, Any]) -> str:
        return super().serialize(mask(log))


# One logger per process, shared by the function and the scrm modules it calls; the
# service name comes from POWERTOOLS_SERVICE_NAME, set per function in template.yaml.
log = Logger(logger_formatter=MaskingFormatter())


def metrics() -> Metrics:
    return Metrics(namespace=NAMESPACE)
