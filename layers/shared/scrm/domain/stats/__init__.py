"""The daily figures per staff member, store, region, branch and corp, and their rankings.

No business transaction touches a counter: the stats projector (functions/stats) reads the
table's DynamoDB stream and derives the figures from facts already written (`facts`),
applies each fact exactly once (`projector`), and keeps a ranking per parent scope that a
single Query reads (`figures`, the read side behind GET /ops/stats/...).
"""
