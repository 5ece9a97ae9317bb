"""Plugin adapters: every kind of plugin normalised to the server's Plugin interface."""
