"""Generation by separate `parley worker` processes, reached through a Redis Stream (PARLEY_ENGINE=remote)."""
