"""chargeops shared kernel: settings, version-neutral events, database schema, logging."""

__version__ = "0.1.0"
