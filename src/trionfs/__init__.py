"""trionfs: a pure-Python ONC-RPC + NFSv3 client on Trio (not built yet)."""
