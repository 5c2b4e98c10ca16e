"""The org tree: branch → region → store → staff."""
