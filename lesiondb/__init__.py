"""lesiondb: a lesion graph database for radiology (after Yan et al., CVPR 2018)."""
from __future__ import annotations

__version__ = "0.1.0"


def connect(*args, **kwargs):
    """Open a :class:`lesiondb.client.Client`; same options as the CLI (``data_dir``, ``uri``, …)."""
    # the client imports every feature package; `import lesiondb` (and so the CLI) stays light
    from .client import connect as _connect

    return _connect(*args, **kwargs)


__all__ = ["__version__", "connect"]
