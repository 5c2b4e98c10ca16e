"""Platform: settings, secrets, errors, logging and tracing. Imports nothing else of scrm."""
