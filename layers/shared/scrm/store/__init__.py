"""Data access: the one table (keys, models), exactly-once effects, paging, the event inbox."""
