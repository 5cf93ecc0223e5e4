"""flightline."""
