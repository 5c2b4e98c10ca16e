"""Shared package of the serverless WeCom SCRM (Lambda layer)."""
