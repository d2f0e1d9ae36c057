from __future__ import annotations

import pytest

from tests import kernel_snapshot


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/integration/" in str(item.fspath):
            item.add_marker(pytest.mark.integration)
            if not kernel_snapshot.is_root():
                item.add_marker(pytest.mark.skip(reason="needs root: creates namespaces, links and cgroups"))
