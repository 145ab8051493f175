"""Pictures to step through: the real engine objects, recorded one frame per operation.

Each ``record_*`` function drives a real engine object (the :class:`Scheduler`, the
:class:`KVCacheManager`, a :class:`RadixTree`) through its public methods and copies
what it looks like after every step into a plain :class:`Frame`. A :class:`Stepper`
then shows the frames two ways:

* ``stepper.widget()``: an ``ipywidgets`` slider with a play button, for a live notebook;
* ``stepper.animation()``: the same frames as a JavaScript animation
  (``matplotlib.animation.FuncAnimation(...).to_jshtml()``), which plays in the static
  HTML book, where no Python runs.

Everything that touches the engine's constructors and methods is in the three
``record_*`` functions, so a change to the engine's signatures is fixed here alone.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import matplotlib.pyplot as plt
from matplotlib.patches import FancyBboxPatch, Rectangle

FONT = 11  # points: every label in these pictures is at least this large (ticks 10)


@dataclass(frozen=True)
class Frame:
    """One picture: a caption and a snapshot of plain data (never a live object)."""

    caption: str
    data: Any


@dataclass
class Stepper:
    """Frames and the function that draws one of them on a matplotlib axis."""

    frames: list[Frame]
    draw: Callable[[Any, Frame], None]
    figsize: tuple[float, float] = (10.0, 4.0)
    interval_ms: int = 900

    def _render(self, ax, index: int) -> None:
        ax.clear()
        ax.set_axis_off()
        frame = self.frames[index]
        self.draw(ax, frame)
        ax.set_title(f"step {index + 1}/{len(self.frames)}: {frame.caption}", fontsize=FONT, loc="left")

    def animation(self, dpi: int = 96):
        """The frames as an HTML/JavaScript animation (plays without a kernel)."""
        from IPython.display import HTML
        from matplotlib.animation import FuncAnimation

        fig, ax = plt.subplots(figsize=self.figsize, dpi=dpi)
        fig.subplots_adjust(left=0.01, right=0.99, top=0.9, bottom=0.02)
        anim = FuncAnimation(fig, lambda i: self._render(ax, i), frames=len(self.frames),
                             interval=self.interval_ms, repeat=False)
        html = anim.to_jshtml(default_mode="once")
        plt.close(fig)
        return HTML(html)

    def widget(self):
        """A slider and a play button that redraw the frame (needs a live kernel)."""
        import ipywidgets as widgets
        from IPython.display import display

        play = widgets.Play(min=0, max=len(self.frames) - 1, interval=self.interval_ms, description="play")
        slider = widgets.IntSlider(min=0, max=len(self.frames) - 1, description="step")
        widgets.jslink((play, "value"), (slider, "value"))
        out = widgets.Output()

        def show(change: Any = None) -> None:
            with out:
                out.clear_output(wait=True)
                fig, ax = plt.subplots(figsize=self.figsize)
                self._render(ax, slider.value)
                display(fig)
                plt.close(fig)

        slider.observe(show, names="value")
        show()
        return widgets.VBox([widgets.HBox([play, slider]), out])


# -- chapter 2: the scheduler's queues -----------------------------------------------


def record_scheduler(prompt_lens: list[int], output_lens: list[int], max_num_seqs: int,
                     max_num_batched_tokens: int = 16, block_size: int = 4) -> Stepper:
    """Drive the engine's :class:`Scheduler` with a stand-in model (every sampled token
    is 0) and record, after each step, which requests wait, run (and in which phase)
    and have finished."""
    from .. import SamplingParams
    from ..block_manager import KVCacheManager
    from ..scheduler import Scheduler, SchedulerConfig
    from ..sequence import Sequence

    longest = max(p + o for p, o in zip(prompt_lens, output_lens))
    config = SchedulerConfig(max_num_seqs, max_num_batched_tokens, max_model_len=longest)
    cache = KVCacheManager(num_blocks=max_num_seqs * math.ceil(longest / block_size), block_size=block_size)
    scheduler = Scheduler(config, cache, eos_token_ids=set())
    seqs = [Sequence(i, [0] * p, SamplingParams(max_tokens=o, ignore_eos=True))
            for i, (p, o) in enumerate(zip(prompt_lens, output_lens))]
    for seq in seqs:
        scheduler.add(seq)

    def snapshot(phases: dict[int, str]) -> dict:
        return {"waiting": [s.seq_id for s in scheduler.waiting],
                "running": [(s.seq_id, phases.get(s.seq_id, "")) for s in scheduler.running],
                "finished": [s.seq_id for s in seqs if s.finish_reason is not None],
                "done": {s.seq_id: (s.num_tokens - s.num_prompt_tokens, s.sampling_params.max_tokens) for s in seqs},
                "prefilled": {s.seq_id: (min(s.num_computed_tokens, s.num_prompt_tokens), s.num_prompt_tokens)
                              for s in seqs}}

    frames = [Frame("all requests wait in the queue", snapshot({}))]
    step = 0
    while scheduler.has_unfinished():
        out = scheduler.schedule()
        phases = {item.seq.seq_id: ("prefill" if item.start < item.seq.num_prompt_tokens else "decode")
                  for item in out.scheduled}
        finished = scheduler.update_from_output(out, [0] * sum(item.will_sample for item in out.scheduled))
        step += 1
        joined = [i for i, p in phases.items() if p == "prefill"]
        caption = f"engine step {step}: {len(phases)} run"
        if joined:
            caption += f", prefill of {', '.join(f'req {i}' for i in joined)}"
        if finished:
            caption += f"; req {', '.join(str(s.seq_id) for s in finished)} finished"
        frames.append(Frame(caption, snapshot(phases)))
    return Stepper(frames, _draw_scheduler, figsize=(7, 3.2))


_PHASE_COLOURS = {"prefill": "tab:orange", "decode": "tab:blue", "": "0.85"}


def _draw_scheduler(ax, frame: Frame) -> None:
    d = frame.data
    n = len(d["done"])
    columns = [("waiting", [(i, "") for i in d["waiting"]]), ("running", d["running"]),
               ("finished", [(i, "") for i in d["finished"]])]
    ax.set_xlim(0, 3)
    ax.set_ylim(n + 0.3, -1.0)
    for c, (name, items) in enumerate(columns):
        ax.text(c + 0.5, -0.55, name, ha="center", fontsize=FONT + 1, weight="bold")
        for row, (seq_id, phase) in enumerate(items):
            got, want = d["done"][seq_id]
            colour = _PHASE_COLOURS[phase] if name == "running" else ("0.85" if name == "waiting" else "tab:green")
            ax.add_patch(FancyBboxPatch((c + 0.06, row + 0.1), 0.88, 0.75, boxstyle="round,pad=0.02",
                                        fc=colour, ec="0.3", alpha=0.9))
            label = f"req {seq_id}: {got}/{want} tokens" + (f" ({phase})" if phase else "")
            ax.text(c + 0.5, row + 0.5, label, ha="center", va="center", fontsize=FONT,
                    color="white" if phase else "black")


# -- chapter 5: chunked prefill under a token budget ---------------------------------------


def record_chunked_prefill(prompt_lens: list[int], output_lens: list[int], max_num_batched_tokens: int,
                           max_num_seqs: int = 8, arrive_at: list[int] | None = None,
                           block_size: int = 4) -> Stepper:
    """Drive the engine's :class:`Scheduler` with chunked prefill on and a stand-in model
    (every sampled token is 0). Request ``i`` is added before step ``arrive_at[i]``
    (default: all at once). Each frame records the step's token budget as the scheduler
    spent it: each request's tokens in the step, whether they were a decode, a prompt
    chunk that samples (the last one) or a partial chunk that samples nothing, and every
    request's prompt and output progress."""
    from .. import SamplingParams
    from ..block_manager import KVCacheManager
    from ..scheduler import Scheduler, SchedulerConfig
    from ..sequence import Sequence

    arrive_at = arrive_at or [0] * len(prompt_lens)
    longest = max(p + o for p, o in zip(prompt_lens, output_lens))
    config = SchedulerConfig(max_num_seqs, max_num_batched_tokens, max_model_len=longest,
                             enable_chunked_prefill=True)
    cache = KVCacheManager(num_blocks=len(prompt_lens) * math.ceil(longest / block_size), block_size=block_size)
    scheduler = Scheduler(config, cache, eos_token_ids=set())
    seqs = [Sequence(i, [0] * p, SamplingParams(max_tokens=o, ignore_eos=True))
            for i, (p, o) in enumerate(zip(prompt_lens, output_lens))]
    arrived: set[int] = set()

    def snapshot(items: list[tuple[int, int, str]]) -> dict:
        state = {}
        for s in seqs:
            if s.seq_id not in arrived:
                state[s.seq_id] = "not arrived"
            elif s.finish_reason is not None:
                state[s.seq_id] = "finished"
            elif s in scheduler.waiting:
                state[s.seq_id] = "waiting"
            else:
                state[s.seq_id] = "running"
        return {"budget": max_num_batched_tokens, "items": items, "state": state,
                "prompt": {s.seq_id: (min(s.num_computed_tokens, s.num_prompt_tokens), s.num_prompt_tokens)
                           for s in seqs},
                "output": {s.seq_id: (s.num_tokens - s.num_prompt_tokens, s.sampling_params.max_tokens)
                           for s in seqs}}

    frames = [Frame(f"a budget of {max_num_batched_tokens} tokens per step; nothing has run yet", snapshot([]))]
    step = 0
    while scheduler.has_unfinished() or len(arrived) < len(seqs):
        for seq in seqs:
            if arrive_at[seq.seq_id] <= step and seq.seq_id not in arrived:
                scheduler.add(seq)
                arrived.add(seq.seq_id)
        step += 1
        if not scheduler.has_unfinished():
            frames.append(Frame(f"step {step}: nothing to run", snapshot([])))
            continue
        out = scheduler.schedule()
        items = []
        for item in out.scheduled:
            if item.start >= item.seq.num_prompt_tokens:
                kind = "decode"
            else:
                kind = "last chunk" if item.will_sample else "partial chunk"
            items.append((item.seq.seq_id, item.num_new_tokens, kind))
        scheduler.update_from_output(out, [0] * sum(item.will_sample for item in out.scheduled))
        used = sum(n for _, n, _ in items)
        decodes = sum(kind == "decode" for _, _, kind in items)
        parts = [f"{decodes} decode{'s' if decodes != 1 else ''}"] if decodes else []
        parts += [f"{'a partial chunk' if kind == 'partial chunk' else 'the last chunk'} of req {i}"
                  for i, _, kind in items if kind != "decode"]
        frames.append(Frame(f"{used}/{max_num_batched_tokens} tokens: " + ", ".join(parts), snapshot(items)))
    return Stepper(frames, _draw_chunked, figsize=(7.2, 3.6), interval_ms=1200)


_KIND_COLOURS = {"decode": "tab:blue", "last chunk": "tab:orange", "partial chunk": "#fdd0a2"}


def _draw_chunked(ax, frame: Frame) -> None:
    d = frame.data
    budget, n = d["budget"], len(d["state"])
    ax.set_xlim(-0.25 * budget, 1.02 * budget)
    ax.set_ylim(n + 0.1, -1.9)
    # the step's budget, spent left to right in the scheduler's order
    ax.text(-0.02 * budget, -1.15, "this step", ha="right", va="center", fontsize=FONT)
    ax.add_patch(Rectangle((0, -1.5), budget, 0.7, fc="white", ec="0.3"))
    left = 0
    for seq_id, tokens, kind in d["items"]:
        ax.add_patch(Rectangle((left, -1.5), tokens, 0.7, fc=_KIND_COLOURS[kind], ec="0.3",
                               hatch="//" if kind == "partial chunk" else None))
        if tokens >= 0.06 * budget:
            ax.text(left + tokens / 2, -1.15, f"{seq_id}: {tokens}" if tokens >= 0.15 * budget else f"{seq_id}",
                    ha="center", va="center", fontsize=FONT)
        left += tokens
    for k, (kind, colour) in enumerate(_KIND_COLOURS.items()):
        x = 0.34 * budget * k
        ax.add_patch(Rectangle((x, -0.55), 0.04 * budget, 0.35, fc=colour, ec="0.3",
                               hatch="//" if kind == "partial chunk" else None))
        ax.text(x + 0.05 * budget, -0.38, kind, va="center", fontsize=FONT - 1)
    # every request: its prompt (computed part filled) and its output tokens
    longest = max(total for _, total in d["prompt"].values())
    scale = 0.45 * budget / longest
    for row, (seq_id, state) in enumerate(d["state"].items()):
        y = row + 0.4
        done, total = d["prompt"][seq_id]
        got, want = d["output"][seq_id]
        ax.text(-0.02 * budget, y, f"req {seq_id}", ha="right", va="center", fontsize=FONT)
        ax.add_patch(Rectangle((0, y - 0.3), total * scale, 0.6, fc="white", ec="0.5"))
        ax.add_patch(Rectangle((0, y - 0.3), done * scale, 0.6, fc="tab:orange", alpha=0.5, ec="none"))
        ax.text(total * scale + 0.02 * budget, y, f"prompt {done}/{total}, out {got}/{want}, {state}",
                va="center", fontsize=FONT - 1, color="0.2" if state != "not arrived" else "0.6")


# -- chapter 3: pages and block tables -------------------------------------------------


def record_pages(num_blocks: int, block_size: int,
                 script: list[tuple[str, int, int]]) -> Stepper:
    """Drive the engine's :class:`KVCacheManager` through ``script``, a list of
    ``("grow", seq_id, num_tokens)`` (reserve slots for that many new tokens, then
    count them as stored, as a step does) and ``("free", seq_id, 0)`` (the request
    finished). Records every slot's owner and the block tables after each operation."""
    from .. import SamplingParams
    from ..block_manager import KVCacheManager
    from ..sequence import Sequence

    manager = KVCacheManager(num_blocks, block_size)
    live: dict[int, Sequence] = {}

    def snapshot() -> dict:
        cells: list[tuple[int | None, bool]] = [(None, False)] * (num_blocks * block_size)
        for seq in live.values():
            for i, block in enumerate(seq.block_table):
                for row in range(block_size):
                    cells[block * block_size + row] = (seq.seq_id, i * block_size + row < seq.num_computed_tokens)
        return {"cells": cells, "tables": {i: list(s.block_table) for i, s in live.items()},
                "free": manager.num_free_blocks, "block_size": block_size, "num_blocks": num_blocks}

    frames = [Frame(f"an empty cache: {num_blocks} pages of {block_size} slots", snapshot())]
    for action, seq_id, n in script:
        if action == "grow":
            seq = live.get(seq_id)
            if seq is None:
                seq = live[seq_id] = Sequence(seq_id, [0] * n, SamplingParams(max_tokens=64))
                caption = f"req {seq_id} arrives: prefill of {n} tokens"
            else:
                caption = f"req {seq_id} decodes {n} token" + ("s" if n > 1 else "")
            if not manager.allocate_slots(seq, n):
                raise ValueError(f"{caption}: too few free pages; give the cache more blocks")
            manager.advance(seq, n)
        elif action == "free":
            manager.free(live.pop(seq_id))
            caption = f"req {seq_id} finishes: its pages go back to the free list"
        else:
            raise ValueError(f"unknown action {action!r}; use 'grow' or 'free'")
        frames.append(Frame(caption, snapshot()))
    return Stepper(frames, _draw_pages, figsize=(7.2, 2.9))


def _draw_pages(ax, frame: Frame) -> None:
    d = frame.data
    size, blocks = d["block_size"], d["num_blocks"]
    per_row = max(1, min(blocks, 36 // size))  # pages per drawn row
    rows = math.ceil(blocks / per_row)
    ax.set_xlim(-0.2, per_row * size + 0.2)
    ax.set_ylim(rows * 1.6 + 0.2 + 0.55 * max(1, len(d["tables"])), -0.6)
    for block in range(blocks):
        r, c = divmod(block, per_row)
        x0, y0 = c * size, r * 1.6
        for row in range(size):
            owner, filled = d["cells"][block * size + row]
            face = "white" if owner is None else f"C{owner}"
            ax.add_patch(Rectangle((x0 + row, y0), 1, 1, fc=face, alpha=1 if filled else 0.3, ec="0.5", lw=0.6))
        ax.add_patch(Rectangle((x0, y0), size, 1, fill=False, ec="black", lw=1.6))
        ax.text(x0 + size / 2, y0 - 0.15, f"page {block}", ha="center", fontsize=FONT - 1)
    y = rows * 1.6 + 0.3
    for seq_id, table in sorted(d["tables"].items()):
        ax.text(0, y, f"req {seq_id} block table: {table}", fontsize=FONT, color=f"C{seq_id}", va="top")
        y += 0.55
    if not d["tables"]:
        ax.text(0, y, "no requests hold pages", fontsize=FONT, va="top")
    ax.text(per_row * size, rows * 1.6 + 0.3, f"{d['free']} pages free", fontsize=FONT, ha="right", va="top")


# -- chapter 4: a radix tree growing, splitting and evicting ------------------------------


def record_radix(block_size: int, script: list[tuple[str, Any]],
                 label: Callable[[list[int]], str] | None = None) -> Stepper:
    """Drive a :class:`RadixTree` through ``script``: ``("insert", token_ids)`` (a
    finished request's pages enter the tree; page ids are handed out in order) and
    ``("evict", num_blocks)`` (least recently used leaves go). Records the tree's
    shape after every operation; ``label`` turns an edge's token ids into text."""
    from ..prefix_cache.radix_tree import RadixTree

    tree = RadixTree(block_size)
    label = label or (lambda ids: " ".join(map(str, ids)))
    next_block = 0

    def snapshot(node) -> dict:
        return _snapshot_tree(tree, node, label)

    frames = [Frame("an empty tree", snapshot(tree.root))]
    for action, arg in script:
        if action == "insert":
            tokens = list(arg)[: len(arg) // block_size * block_size]
            blocks = list(range(next_block, next_block + len(tokens) // block_size))
            before = sum(1 for _ in tree.nodes())
            result = tree.insert(tokens, blocks)
            next_block += len(blocks)
            new = sum(1 for _ in tree.nodes()) - before
            caption = (f"insert {len(tokens)} tokens: {result.num_existing_tokens} already cached"
                       + (", an edge splits" if new >= 2 and result.num_existing_tokens else ""))
        elif action == "evict":
            freed = tree.evict(arg)
            caption = f"evict {arg} pages: the least recently used leaves go ({len(freed)} freed)"
        else:
            raise ValueError(f"unknown action {action!r}; use 'insert' or 'evict'")
        frames.append(Frame(caption, snapshot(tree.root)))
    return Stepper(frames, _draw_tree, figsize=(7, 3.3))


def _snapshot_tree(tree, node, label: Callable[[list[int]], str], quote: bool = False, max_chars: int = 16) -> dict:
    """A node and its subtree as plain data: edge label (cut to ``max_chars``, in
    quotes if ``quote``), page count, lock count."""
    text = "root"
    if node is not tree.root:
        text = label(node.key).replace("\n", " ")
        text = text if len(text) <= max_chars else text[: max_chars - 1] + "…"
        text = repr(text) if quote else text
    return {"label": text, "pages": len(node.blocks), "lock": node.lock_ref if node is not tree.root else 0,
            "children": [_snapshot_tree(tree, child, label, quote, max_chars) for child in node.children.values()]}


def draw_radix_tree(tree, ax, label: Callable[[list[int]], str] | None = None, title: str | None = None) -> None:
    """Draw a live :class:`RadixTree` on ``ax``, labels at least 10 pt: each node shows
    its edge's tokens (``label(token_ids)``, e.g. a tokenizer's ``decode``), its page
    count and, when a running request locks it, its lock count (orange)."""
    data = _snapshot_tree(tree, tree.root, label or (lambda ids: " ".join(map(str, ids))), quote=label is not None)
    ax.set_axis_off()
    _draw_tree(ax, Frame(title or "", data))
    if title:
        ax.set_title(title, fontsize=FONT, loc="left")


def _draw_tree(ax, frame: Frame) -> None:
    positions: list[tuple[float, int, dict]] = []
    edges: list[tuple[tuple[float, int], tuple[float, int]]] = []
    leaf = [0.0]

    def place(node: dict, depth: int) -> float:
        if node["children"]:
            xs = [place(child, depth + 1) for child in node["children"]]
            x = sum(xs) / len(xs)
            edges.extend(((x, depth), (cx, depth + 1)) for cx in xs)
        else:
            x, leaf[0] = leaf[0], leaf[0] + 1
        positions.append((x, depth, node))
        return x

    place(frame.data, 0)
    width = max(leaf[0], 1)
    depth = max(d for _, d, _ in positions)
    for (x0, d0), (x1, d1) in edges:
        ax.plot([x0, x1], [-d0, -d1], color="0.6", lw=1.2, zorder=1)
    for x, d, node in positions:
        text = node["label"] if d == 0 else f"{node['label']}\n{node['pages']} page" + ("s" * (node["pages"] != 1))
        if node.get("lock"):
            text += f", lock {node['lock']}"
        colour = "white" if d == 0 else ("#f4a261" if node.get("lock") else "#8ecae6")
        ax.text(x, -d, text, ha="center", va="center", fontsize=FONT, zorder=2,
                bbox=dict(boxstyle="round,pad=0.35", fc=colour, ec="0.4"))
    ax.set_xlim(-0.8, width - 0.2)
    ax.set_ylim(-max(depth, 1) - 0.6, 0.6)


# -- chapter 10: speculative decoding ---------------------------------------------------


def record_speculation(llm, prompt: str, params) -> Stepper:
    """Run one request through ``llm``'s real engine (built with a ``speculative_config``)
    and record every verify step: the proposals, how many the target accepted, the token
    it emitted itself, and the request's computed tokens and pages before and after the
    rollback (``KVCacheManager.rollback``). One frame per verify step."""
    from ..bench.patching import patched

    engine = llm.engine
    scheduler = engine.scheduler
    update = scheduler.update_from_output
    block_size = engine.config.kvcache_block_size

    def text(token: int) -> str:
        return engine.decode([token]).replace(" ", "\u2423").replace("\n", "\u21b5") or "?"

    frames: list[Frame] = []

    def record_update(out, tokens):
        before = [(item, list(item.draft_token_ids), item.seq.num_computed_tokens, len(item.seq.block_table))
                  for item in out.scheduled]
        finished = update(out, tokens)
        emitted_rows = iter(tokens)
        for item, drafts, computed, pages in before:
            emitted = next(emitted_rows) if item.will_sample else None
            if not drafts or emitted is None:
                continue
            emitted = emitted if isinstance(emitted, list) else [emitted]
            seq = item.seq
            accepted = len(emitted) - 1
            done = seq.is_finished
            data = {"proposals": [text(t) for t in drafts], "accepted": accepted, "target": text(emitted[-1]),
                    "computed_before": computed, "pages_before": pages, "block_size": block_size,
                    "computed_after": computed if done else seq.num_computed_tokens,
                    "pages_after": pages if done else len(seq.block_table), "finished": done}
            kept = data["computed_after"]
            caption = (f"{accepted} of {len(drafts)} accepted, "
                       f"{len(emitted)} token{'s' if len(emitted) != 1 else ''} out; KV {computed} -> "
                       f"{kept} tokens, pages {pages} -> {data['pages_after']}")
            frames.append(Frame(caption + (" (request done)" if done else ""), data))
        return finished

    with patched([(scheduler, "update_from_output", record_update)]):
        engine.add_sequence(engine.make_sequence(prompt, params))
        while engine.has_unfinished():
            engine.step()
    return Stepper(frames, draw_speculation, figsize=(6.5, 3.0), interval_ms=1400)


def draw_speculation(ax, frame: Frame) -> None:
    """Three lanes: the proposals (green accepted, red rejected, grey never tested), the
    tokens the step emits (accepted ones, then the target's own in blue), and the
    request's KV slots by page (kept, rolled back, and pages freed)."""
    d = frame.data
    width, gap = 1.3, 0.1
    ax.text(0, 2.55, "proposed", fontsize=FONT, va="center")
    ax.text(0, 1.55, "emitted", fontsize=FONT, va="center")
    ax.text(0, 0.45, "KV slots", fontsize=FONT, va="center")
    x0 = 2.1
    for i, token in enumerate(d["proposals"]):
        color = "#55a868" if i < d["accepted"] else "#c44e52" if i == d["accepted"] else "#bbbbbb"
        ax.add_patch(Rectangle((x0 + i * (width + gap), 2.2), width, 0.7, color=color))
        ax.text(x0 + i * (width + gap) + width / 2, 2.55, token, ha="center", va="center", fontsize=FONT - 1,
                color="white" if i <= d["accepted"] else "black", family="monospace")
    emitted = d["proposals"][: d["accepted"]] + [d["target"]]
    for i, token in enumerate(emitted):
        color = "#55a868" if i < d["accepted"] else "#4c72b0"
        ax.add_patch(Rectangle((x0 + i * (width + gap), 1.2), width, 0.7, color=color))
        ax.text(x0 + i * (width + gap) + width / 2, 1.55, token, ha="center", va="center", fontsize=FONT - 1,
                color="white", family="monospace")
    # KV slots: one small square per token position, grouped by page.
    block, pages = d["block_size"], d["pages_before"]
    slot = min(0.3, 9.0 / max(pages * block + pages, 1))
    for page in range(pages):
        left = x0 + page * (block * slot + slot)
        freed = page >= d["pages_after"]
        ax.add_patch(Rectangle((left - 0.03, 0.12), block * slot + 0.06, 0.66, fill=False,
                               edgecolor="#c44e52" if freed else "#555555", linestyle="--" if freed else "-"))
        for j in range(block):
            position = page * block + j
            if position < d["computed_after"]:
                color = "#8c8c8c"
            elif position < d["computed_before"]:
                color = "#e8a0a2"  # K/V of a rejected proposal: no longer counted
            else:
                continue
            ax.add_patch(Rectangle((left + j * slot + 0.02, 0.2), slot - 0.04, 0.5, color=color))
    ax.text(x0, -0.2, "grey: K/V kept   pink: rolled back   dashed red: page freed", fontsize=FONT - 1,
            va="center")
    ax.set_xlim(0, 11.5)
    ax.set_ylim(-0.45, 3.05)


# -- chapter 7: the overlapped loop ----------------------------------------------------


def record_overlap(llm, prompts: list, params, cpu_ms: float = 2.0, gpu_ms: float = 5.5) -> Stepper:
    """Run ``prompts`` through ``llm``'s real overlapped loop, one ``engine.step()`` per
    frame, recording which step each call launched (with how many inputs were
    placeholders, still on the device) and which earlier step's tokens it processed.
    The frames are drawn on an idealised clock: ``cpu_ms`` of host work per step and
    ``gpu_ms`` of kernels (the H200's measured ratio by default)."""
    from ..bench.patching import patched

    engine = llm.engine
    engine.overlap_scheduling = True
    launched, completed = [], []
    execute, update = engine.executor.execute, engine.scheduler.update_from_output

    def record_execute(plan):
        launched.append((len(plan.seq_lens), len(plan.placeholder_index)))
        return execute(plan)

    def record_update(out, tokens):
        completed.append(len(tokens))
        return update(out, tokens)

    with patched([(engine.executor, "execute", record_execute), (engine.scheduler, "update_from_output", record_update)]):
        for prompt, sp in zip(prompts, params):
            engine.add_sequence(engine.make_sequence(prompt, sp))
        frames, events = [], []
        while engine.has_unfinished():
            before = len(launched), len(completed)
            finished = engine.step()
            if len(launched) > before[0]:
                events.append(("launch", len(launched), *launched[-1]))
            if len(completed) > before[1]:
                events.append(("complete", len(completed), completed[-1], len(finished)))
            frames.append(Frame(_overlap_caption(events, before), {"events": list(events), "cpu_ms": cpu_ms,
                                                                  "gpu_ms": gpu_ms}))
    return Stepper(frames, draw_overlap, figsize=(7.2, 3.0))


def _overlap_caption(events: list[tuple], before: tuple[int, int]) -> str:
    parts = []
    for kind, step, a, b in events:
        if kind == "launch" and step > before[0]:
            parts.append(f"launch step {step} ({b} of {a} inputs still on the GPU)" if b
                         else f"launch step {step} ({a} request{'s' if a != 1 else ''})")
        if kind == "complete" and step > before[1]:
            parts.append(f"process step {step}'s {a} token{'s' if a != 1 else ''}" + (f", {b} finished" if b else ""))
    return "; ".join(parts) or "nothing to do"


def draw_overlap(ax, frame: Frame) -> None:
    """CPU and GPU lanes on the idealised clock: each launch is planned on the CPU
    (``P``), then runs on the GPU once both the plan and the previous step are done;
    processing a step's tokens (``T``) waits for that step to finish."""
    cpu, gpu = frame.data["cpu_ms"], frame.data["gpu_ms"]
    half = cpu / 2  # plan (schedule + inputs) and process (tokens) each take half the host time
    origin = 2.5  # room for the lane names, inside the picture
    cpu_free = gpu_free = origin
    gpu_end: dict[int, float] = {}
    for kind, step, _, _ in frame.data["events"]:
        if kind == "launch":
            ax.add_patch(Rectangle((cpu_free, 1.1), half, 0.8, color="#4c72b0"))
            ax.text(cpu_free + half / 2, 1.5, f"P{step}", ha="center", va="center", fontsize=FONT - 1,
                    color="white")
            cpu_free += half
            start = max(cpu_free, gpu_free)
            ax.add_patch(Rectangle((start, 0.1), gpu, 0.8, color="#dd8452"))
            ax.text(start + gpu / 2, 0.5, f"step {step}", ha="center", va="center", fontsize=FONT)
            gpu_free = gpu_end[step] = start + gpu
        else:
            start = max(cpu_free, gpu_end.get(step, 0.0))
            ax.add_patch(Rectangle((start, 1.1), half, 0.8, color="#55a868"))
            ax.text(start + half / 2, 1.5, f"T{step}", ha="center", va="center", fontsize=FONT - 1,
                    color="white")
            cpu_free = start + half
    for y, lane in ((1.5, "CPU"), (0.5, "GPU")):
        ax.text(0.2, y, lane, ha="left", va="center", fontsize=FONT)
    ax.text(origin, 2.05, "P = plan a step, T = process a step's tokens (idealised clock: "
            f"{cpu:g} ms CPU, {gpu:g} ms GPU per step)", fontsize=FONT - 1, va="bottom")
    ax.set_xlim(0, max(cpu_free, gpu_free, 30.0) + 0.5)
    ax.set_ylim(0, 2.5)
