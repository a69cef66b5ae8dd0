"""Rules for what users type about containers, each written once here.

Pure (imports only re): agentctl checks its flags with these before any
request, the API and the spec parser check them again on the daemon side,
and budgets select containers by the same name rule.
"""
from __future__ import annotations

import re

# a container name: 1-63 of letters, digits, _ . - starting with a letter or digit
NAME_RE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}")
# a restart policy: no | always | on-failure[:N]; group 2 is N
RESTART_RE = re.compile(r"(no|always|on-failure)(?::(\d{1,6}))?")
