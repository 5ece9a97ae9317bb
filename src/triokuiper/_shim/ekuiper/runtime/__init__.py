"""``ekuiper.runtime``: served by triokuiper."""
