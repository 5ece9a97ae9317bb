"""triofd: Linux fd-based kernel objects as Trio channels (not built yet)."""
