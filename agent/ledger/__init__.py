"""Billing ledger: per container instance and wall-clock period, one record,
exactly once (docs/billing.md).

Modules, each with one job:
  core        the Ledger: collector passes and final readings, one transaction each, recovery
  schema      the SQLite tables (records, rollups, per-instance state), migration, connections
  instance    one container instance's committed state
  accounting  readings -> open-period accumulators -> record rows (the accounting rules)
  retention   deleting old (shipped) records in whole UTC days
  cursor      the shipping cursor a sink is handed
  query       usage queries over records and rollups
The record columns and their export shaping are agent.records (what exporters
import); the usage query language is agent.usage_query.

This package re-exports the names its callers use.
"""
from agent.ledger.accounting import FINISHED_GC_AFTER, GC_AFTER
from agent.ledger.core import Ledger
from agent.ledger.cursor import SINK_CURSOR_KEY, ShippingCursor
from agent.ledger.schema import ACC_ZERO, ROLLUPS, SCHEMA, STATE_COLS
from agent.records import (ADDED_DEFAULTS, DAY, HOUR, MAX_COLS, MEASURED_COLS, REC_COLS, RECORD_FIELDS, SUM_COLS,
                           iso, labels_json, record_dict, record_id, usage_row)
from agent.usage_query import FOREVER, UsageQuery, parse_time, parse_usage_params

__all__ = [
    "Ledger", "ShippingCursor", "FINISHED_GC_AFTER", "GC_AFTER", "SINK_CURSOR_KEY",
    "ACC_ZERO", "ROLLUPS", "SCHEMA", "STATE_COLS",
    "ADDED_DEFAULTS", "DAY", "HOUR", "MAX_COLS", "MEASURED_COLS", "REC_COLS", "RECORD_FIELDS", "SUM_COLS",
    "iso", "labels_json", "record_dict", "record_id", "usage_row",
    "FOREVER", "UsageQuery", "parse_time", "parse_usage_params",
]
