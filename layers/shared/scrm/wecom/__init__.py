"""WeCom: the callback protocol (callback/) and the server API client (apis/)."""
