"""The Telegram front end (python-telegram-bot)."""

import os

# PTB 22 warns on every 429 unless durations are opted into timedelta, which is PTB 23's behaviour.
os.environ.setdefault("PTB_TIMEDELTA", "true")
