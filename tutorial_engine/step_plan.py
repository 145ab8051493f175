"""The step plan: what the device must run for one engine step, as plain data.

The scheduler decides *which* tokens of *which* requests run; :func:`build_step_plan`
turns that decision into flat arrays (vLLM's varlen layout, see
:class:`~tutorial_engine.attention.AttentionMetadata`) that mention no live
``Sequence`` object. A plan can therefore be queued, sent to another process (tensor
parallelism) and kept alive while the device reads it, while the scheduler already
plans the next step (overlap scheduling, chapter 7).

A plan may not know every input token: with overlap scheduling the token a request
sampled in the previous step is still on the device when the next step is planned.
Such inputs are :data:`PLACEHOLDER` and ``input_rows`` says which row of the
previous step's sampled tokens fills each of them, on the device (the rules are in
``in_flight.py``).

A speculating sequence (chapter 10) is an extend row: its last token, then its
proposals; the plan samples all ``n + 1`` of its logits rows and names the proposals
(``num_draft_tokens``, ``draft_token_ids``) for the verifier.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np

from .sampler import SamplingBatch
from .scheduler import SchedulerOutput
from .spec_decode.verify import verify_logits_indices

PLACEHOLDER = -1


@dataclass
class StepPlan:
    """One step for the model runner. ``T`` new tokens of ``B`` sequences; ``S`` of the
    sequences sample a token.

    Attributes:
        input_ids: int64 ``[T]``, token ids, :data:`PLACEHOLDER` where the token is
            the previous step's output.
        placeholder_index: int64 ``[P]``, positions in ``input_ids`` that are placeholders.
        input_rows: int64 ``[P]``, for each, the row of the previous step's sampled
            tokens that holds it (its *input row*).
        positions: int64 ``[T]``, position of each token in its sequence.
        slot_mapping: int64 ``[T]``, flat KV-cache slot each token's K/V is written to.
        query_start_loc: int32 ``[B + 1]``, prefix sums of the new-token counts.
        seq_lens: int32 ``[B]``, context length of each sequence after this step.
        block_tables: int32 ``[B, W]``, each sequence's pages, padded with 0.
        logits_indices: int64 ``[S + D]``, the rows of ``input_ids`` whose logits are
            sampled: per sampling sequence its last ``n + 1`` (``n`` proposals; 0 unless
            it speculates).
        sampling: the ``S`` sampling requests' ids and settings, in the same order.
        num_draft_tokens: int64 ``[S]``, each sampling sequence's ``n``.
        draft_token_ids: int64 ``[D]``, the proposals, sequences in order (``D = sum n``).
        finished_seq_ids: requests that ended since the previous plan: the runner may
            drop any per-request state it keeps (seeded generators).
    """

    input_ids: np.ndarray
    placeholder_index: np.ndarray
    input_rows: np.ndarray
    positions: np.ndarray
    slot_mapping: np.ndarray
    query_start_loc: np.ndarray
    seq_lens: np.ndarray
    block_tables: np.ndarray
    logits_indices: np.ndarray
    sampling: SamplingBatch
    num_draft_tokens: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    draft_token_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    finished_seq_ids: list[int] = field(default_factory=list)

    @property
    def num_tokens(self) -> int:
        return len(self.input_ids)

    @property
    def num_seqs(self) -> int:
        return len(self.seq_lens)

    @property
    def is_decode_only(self) -> bool:
        return self.num_tokens == self.num_seqs

    @property
    def speculates(self) -> bool:
        """Some sequence verifies proposals: the step emits up to ``n + 1`` tokens per row."""
        return len(self.draft_token_ids) > 0


def slot_of(block_id, position, block_size: int):
    """Flat KV-cache slot of the token at ``position`` (in its sequence) whose block is
    ``block_id`` (``block_table[position // block_size]``): slot ``s`` is token
    ``s % block_size`` of block ``s // block_size``. Ints or numpy arrays."""
    return block_id * block_size + position % block_size


def build_step_plan(scheduler_output: SchedulerOutput, block_size: int,
                    finished_seq_ids: list[int] | None = None) -> StepPlan:
    """Flatten a scheduled step into a :class:`StepPlan`.

    Per-sequence Python work is kept to reading a few attributes; positions and slots
    are computed for all tokens at once with numpy, so a 256-sequence decode step costs
    well under a millisecond of CPU time.
    """
    scheduled = scheduler_output.scheduled
    n = len(scheduled)
    starts = np.fromiter((s.start for s in scheduled), np.int64, n)
    query_lens = np.fromiter((s.num_new_tokens for s in scheduled), np.int64, n)
    query_start_loc = np.zeros(n + 1, np.int64)
    np.cumsum(query_lens, out=query_start_loc[1:])
    seq_lens = starts + query_lens
    num_tokens = int(query_start_loc[-1])

    # Known tokens come from the CPU copy; a sequence whose last token is still in
    # flight ends its input with one placeholder, filled on the device. Proposals
    # follow a speculating sequence's last token.
    input_ids = np.full(num_tokens, PLACEHOLDER, np.int64)
    placeholder_index, input_rows = [], []
    for item, begin, start, end in zip(scheduled, query_start_loc.tolist(), starts.tolist(), seq_lens.tolist()):
        drafts, row_end = item.draft_token_ids, begin + end - start
        known = item.seq.token_ids[start:end - len(drafts)]
        input_ids[begin:begin + len(known)] = known
        input_ids[row_end - len(drafts):row_end] = drafts
        if len(known) + len(drafts) < end - start:
            placeholder_index.append(begin + len(known))
            input_rows.append(item.input_row)

    # Position of token t of sequence i: start_i + (t - query_start_i).
    seq_index = np.repeat(np.arange(n), query_lens)
    positions = np.arange(num_tokens) + np.repeat(starts - query_start_loc[:-1], query_lens)
    tables = [s.seq.block_table for s in scheduled]
    table_lens = np.fromiter(map(len, tables), np.int64, n)
    block_tables = np.zeros((n, int(table_lens.max())), np.int32)
    block_tables[np.arange(block_tables.shape[1]) < table_lens[:, None]] = np.fromiter(
        itertools.chain.from_iterable(tables), np.int32, int(table_lens.sum()))
    slots = slot_of(block_tables[seq_index, positions // block_size].astype(np.int64), positions, block_size)
    samples = np.fromiter((s.will_sample for s in scheduled), bool, n)
    num_drafts = np.fromiter((len(s.draft_token_ids) for s in scheduled), np.int64, n)
    sampling = [s.seq for s in scheduled if s.will_sample]
    return StepPlan(
        input_ids=input_ids,
        placeholder_index=np.asarray(placeholder_index, np.int64),
        input_rows=np.asarray(input_rows, np.int64),
        positions=positions,
        slot_mapping=slots,
        query_start_loc=query_start_loc.astype(np.int32),
        seq_lens=seq_lens.astype(np.int32),
        block_tables=block_tables,
        logits_indices=verify_logits_indices(query_start_loc, num_drafts, samples),
        sampling=SamplingBatch.from_params([seq.seq_id for seq in sampling], [seq.sampling_params for seq in sampling]),
        num_draft_tokens=num_drafts[samples],
        draft_token_ids=np.fromiter(itertools.chain.from_iterable(s.draft_token_ids for s in scheduled), np.int64,
                                    int(num_drafts.sum())),
        finished_seq_ids=list(finished_seq_ids or []),
    )
