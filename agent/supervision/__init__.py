"""The supervisor's parts, one job per module (see agent/supervisor.py)."""
