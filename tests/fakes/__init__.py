"""Protocol-faithful fakes of the external services Parley talks to (tests only).

Import from the submodules (e.g. ``from tests.fakes.telegram import FakeTelegram``): this package imports nothing,
so a test using one fake does not pull in the dependencies of another.
"""
