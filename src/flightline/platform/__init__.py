"""The platform's foundation: settings, errors, child processes, PostgreSQL, and the servers (MLflow,
Airflow, Ray Serve) started and stopped as one stack.

Imports nothing from flightline outside ``platform``: every capability package builds on it.
"""
