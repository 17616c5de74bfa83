"""Helpers the tests import (conftest.py holds the fixtures): tiny data, test projects, processes,
servers, saved models and the check of the user-error promise."""
