"""Importable classes for the policy tests."""

import os
from dataclasses import dataclass


@dataclass
class Account:
    user: str
    password: str
    balance: int = 0


class Plain:
    def __init__(self):
        self.secret = "s3cr3t"
        self.visible = 1


class Gadget:
    """Reduces to a call of `target(*args)`: the classic pickle gadget shape."""

    def __init__(self, target, *args):
        self.target = target
        self.args = args

    def __reduce__(self):
        return (self.target, self.args)


def touch(path):
    with open(path, "w") as f:
        f.write("ran")
    return path


SYSTEM = os.system
