"""The processes the chaos (and scale-out) suites start run with this test run's settings
module: under `make test` that is chatsite.settings_test, whose fast hasher a child on the
product settings would not know."""

from __future__ import annotations

import sys

import pytest

from accounts.models import User
from tests.chaos.conftest import Processes
from tests.conftest import settings_module

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

RIGHT = "correct horse battery staple"  # tests/conftest.make_user's password

CHECK = """
import sys
import django

django.setup()
from django.conf import settings
from django.contrib.auth.hashers import check_password

from accounts.models import User

encoded = User.objects.get(email="alice@example.com").password
print("CHECK", check_password(sys.argv[1], encoded), settings.SETTINGS_MODULE)
"""


def test_a_password_hashed_in_the_test_process_verifies_in_a_child_process(
    alice: User, processes: Processes
) -> None:
    child = processes.spawn("check-password", [sys.executable, "-c", CHECK, RIGHT])

    assert child.process.wait(timeout=120) == 0, child.tail()
    assert child.tail(1) == f"CHECK True {settings_module()}"
