"""Start order: the one search for a loop in "starts after" rules (netemu's `container:` and
`wait_for:` keys, containerlab's `wait-for`, Kathara's lab.dep). Pure, and without recursion:
a chain of a thousand nodes is fine."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

Step = tuple[str, str, str]  # (node, the key that orders it, the node it starts after)


def find_loop(roots: Iterable[str], after: Callable[[str], Iterable[tuple[str, str]]]) -> list[Step] | None:
    """The first loop a depth-first walk from `roots` (in their order) meets, as the steps that
    make it, the first leaving the node where it closes; None when there is none. `after(node)`
    gives (key, node) for each node it starts after; a node it names that has no rules of its
    own gives an empty list."""
    done: set[str] = set()
    for root in roots:
        if root in done:
            continue
        path: list[tuple[str, Iterator[tuple[str, str]]]] = [(root, iter(after(root)))]
        steps: list[Step] = []  # the steps along `path`
        on_path = {root}
        while path:
            name, todo = path[-1]
            step = next(todo, None)
            if step is None:  # every node reachable from `name` starts well
                done.add(name)
                on_path.discard(name)
                path.pop()
                if steps:
                    steps.pop()
                continue
            key, target = step
            if target in on_path:
                walked = [*steps, (name, key, target)]
                return walked[next(i for i, (node, _, _) in enumerate(walked) if node == target):]
            if target not in done:
                steps.append((name, key, target))
                path.append((target, iter(after(target))))
                on_path.add(target)
    return None
