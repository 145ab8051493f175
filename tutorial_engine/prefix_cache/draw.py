"""Draw a live :class:`~.radix_tree.RadixTree` with matplotlib (no graphviz needed)."""

from __future__ import annotations

from collections.abc import Callable

from .radix_tree import RadixNode, RadixTree

LOCKED, EVICTABLE = "#f4a261", "#8ecae6"  # protected by a running request / free to evict


def _layout(tree: RadixTree) -> dict[RadixNode, tuple[float, int]]:
    """x: leaves in depth-first order, a parent centred over its children; y: depth."""
    pos: dict[RadixNode, tuple[float, int]] = {}
    next_leaf = [0.0]

    def place(node: RadixNode, depth: int) -> float:
        children = list(node.children.values())
        if children:
            x = sum(place(c, depth + 1) for c in children) / len(children)
        else:
            x, next_leaf[0] = next_leaf[0], next_leaf[0] + 1
        pos[node] = (x, depth)
        return x

    place(tree.root, 0)
    return pos


def draw_radix_tree(tree: RadixTree, ax, label: Callable[[list[int]], str] | None = None,
                    title: str | None = None, max_chars: int = 18) -> None:
    """Draw ``tree`` on the matplotlib axis ``ax``.

    Each node is a box with its edge's tokens (``label(token_ids)``, default the ids;
    cut to ``max_chars``), its page count and its lock count; locked (protected)
    nodes are orange, unlocked (evictable) ones blue.
    """
    label = label or (lambda ids: " ".join(map(str, ids)))
    pos = _layout(tree)
    for node, (x, y) in pos.items():
        for child in node.children.values():
            cx, cy = pos[child]
            ax.plot([x, cx], [-y, -cy], color="0.6", lw=1, zorder=1)
    for node, (x, y) in pos.items():
        if node is tree.root:
            text, colour = "root", "white"
        else:
            words = label(node.key).replace("\n", " ")
            words = words if len(words) <= max_chars else words[: max_chars - 1] + "…"
            text = f"{words!r}\n{len(node.pages)} pages, lock {node.lock_ref}"
            colour = LOCKED if node.lock_ref else EVICTABLE
        ax.text(x, -y, text, ha="center", va="center", fontsize=7.5, zorder=2,
                bbox=dict(boxstyle="round,pad=0.3", fc=colour, ec="0.4"))
    xs = [x for x, _ in pos.values()]
    depth = max(y for _, y in pos.values())
    ax.set_xlim(min(xs) - 0.7, max(xs) + 0.7)
    ax.set_ylim(-depth - 0.6, 0.6)
    ax.axis("off")
    if title:
        ax.set_title(title, fontsize=9)
