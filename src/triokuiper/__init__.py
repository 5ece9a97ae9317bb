"""triokuiper: eKuiper portable plugins as Trio tasks over nng (not built yet)."""
