"""Reporting finished iPads to other systems, durably: the outbox's courier and what a reporter is.

Each finished iPad's `device.reported` event becomes one delivery per enabled reporter in the store (the outbox);
the courier claims them, hands them to their reporter in batches, and settles each (done, failed with the reason,
or retried with backoff), after the iPad's port is already done. A reporter is a plugin implementing the
`stationd_reporter` hook (see `Reporter`).
"""

from stationd.reporting.reporter import DeliveryContext, Reporter, ReporterPlugin, Result

__all__ = ["DeliveryContext", "Reporter", "ReporterPlugin", "Result"]
