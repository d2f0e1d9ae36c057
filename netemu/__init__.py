"""netemu: virtual network topologies of real Linux containers on one machine."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Lab", "__version__"]

if TYPE_CHECKING:
    from netemu.api import Lab


def __getattr__(name: str) -> Any:
    # Lazy, so that `netemu validate` and the pure topology layer import no netlink code.
    if name == "Lab":
        from netemu.api import Lab

        return Lab
    raise AttributeError(name)
