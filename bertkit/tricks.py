"""`bertkit.tricks`, README's name for bertkit.train.tricks (the tricks usable in any loop): the same module."""

import sys

from .train import tricks

sys.modules[__name__] = tricks
