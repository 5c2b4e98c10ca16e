"""Entry logic behind the functions: the callback, the worker, recovery, the ops API."""
