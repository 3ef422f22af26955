"""Front ends: one sub-package per platform, plus what they share."""
