"""WeCom callback protocol: crypto, hardened XML, normalised events. Pure: no AWS, no table."""
