"""Dataset readers: turn source files into :mod:`lesiondb.core.records` (no graph I/O here)."""
