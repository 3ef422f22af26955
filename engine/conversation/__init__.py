"""A conversation: the engine's entry point, prompt building, memory in Redis, quotas, moderation."""
