"""WeCom server API: the client, its shared token, typed errors."""
