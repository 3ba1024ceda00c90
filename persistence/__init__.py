"""Storage below both layers: SQLite (or a shared PostgreSQL), atomic files and UTC time stamps,
importing nothing above.

``signaling``, ``relay`` and ``recorder`` all build on it, so it never imports any of them.
"""
