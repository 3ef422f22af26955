"""Protocol-faithful fakes of the external services Parley talks to, and a scripted stand-in for the model.

Import from the submodules (e.g. ``from tests.fakes.telegram import FakeTelegram``): this package imports nothing,
so a test using one fake does not pull in the dependencies of another.

The one part of ``tests/`` that code outside it may import: ``bench/adapter.py`` times the real front ends
against these same servers. So the fakes stay a library: they import neither pytest nor anything else from
``tests/`` (``tests/fakes/test_*.py`` test them), and nothing from ``tests/`` outside this package may reach
``bench/``.
"""
