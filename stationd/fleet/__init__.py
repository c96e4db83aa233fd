"""Stations working as one fleet: a shared store (and its journal for outages), Bonjour, heartbeats and peers, the
work list, blueprints. A station without [store] url and [fleet] is a fleet of one and runs none of it."""
