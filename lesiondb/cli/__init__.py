"""The ``lesiondb`` command line: thin click commands, one module each (``cmd_*.py``)."""
