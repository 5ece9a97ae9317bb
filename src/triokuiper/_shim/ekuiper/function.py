"""``ekuiper.function.Function``: the SDK's function base class."""

from abc import abstractmethod
from typing import Any

from .runtime.context import Context


class Function:
    """abstract class for eKuiper function plugin"""

    @abstractmethod
    def validate(self, args: list[Any]) -> Any:
        """return "" when the arguments are valid, else the error text"""

    @abstractmethod
    def exec(self, args: list[Any], ctx: Context) -> Any:
        """return the result"""

    @abstractmethod
    def is_aggregate(self) -> Any:
        """return True for an aggregate function"""
