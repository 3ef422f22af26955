"""Process plumbing: settings, the composition root, HTTP health and metrics, logs, the embedded Redis."""
