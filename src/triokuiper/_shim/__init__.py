"""Stand-ins for third-party packages, put on sys.path only by ``triokuiper compat``."""
