"""``ekuiper.runtime.context.Context``: the interface SDK plugins program against."""

from abc import abstractmethod
from typing import Any


class Context:
    """Interface defining information available at process time"""

    @abstractmethod
    def get_rule_id(self) -> str: ...

    @abstractmethod
    def get_op_id(self) -> str: ...

    @abstractmethod
    def get_instance_id(self) -> int: ...

    @abstractmethod
    def get_logger(self) -> Any: ...

    @abstractmethod
    def emit(self, message: dict[str, Any], meta: dict[str, Any]) -> Any: ...

    @abstractmethod
    def emit_error(self, error: str) -> Any: ...

    @abstractmethod
    def ack_ok(self) -> Any: ...

    @abstractmethod
    def ack_error(self, error: str) -> Any: ...
