"""WeCom server API: the client, the shared token store and the typed errors."""
from scrm.wecom.client import Counters, WeComClient, forget_caches, totals
from scrm.wecom.errors import (
    ConfigurationError,
    GoneError,
    RateLimited,
    TokenError,
    TransientError,
    WeComError,
)
from scrm.wecom.tokens import TokenStore, default_store

__all__ = [
    "ConfigurationError", "Counters", "GoneError", "RateLimited", "TokenError", "TokenStore", "TransientError",
    "WeComClient", "WeComError", "default_store", "forget_caches", "totals",
]
