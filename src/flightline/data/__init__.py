"""The data path before features: the Delta lake (bronze, versioned), Great Expectations validation, raw
loads into the PostgreSQL warehouse, and dbt (staging, marts).

May import ``platform``.
"""
