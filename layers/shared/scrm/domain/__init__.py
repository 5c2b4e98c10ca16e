"""Business logic by area; imports data access, the WeCom client and the jobs layer, never an entry point."""
