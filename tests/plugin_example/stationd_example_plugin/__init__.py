"""An example third-party stationd plugin: it remembers every event it is given."""

from stationd.hooks import hookimpl

received = []


@hookimpl
async def stationd_event(event):
    received.append(event)
