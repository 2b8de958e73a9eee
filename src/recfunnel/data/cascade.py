"""The cascade task of LCRON (Kuaishou, ICML 2025) read from RecFlow's files.

Each request brings 40 candidates: 10 each of ``rank_pos`` (what ranking kept, in its
order), ``rank_neg`` (ranked and dropped), ``coarse_neg`` and ``prerank_neg`` (dropped by the
earlier stages). Retrieval keeps 30 of them, ranking 20 of those, and the ground truth is the
10 ``rank_pos`` items. As in the authors' code (``../shared/peers/lcron``), each candidate
carries a graded label: ``30 - rank_index`` for ``rank_pos`` (29 for the first), then 7, 6
and 5 for the three negative groups, so sorting the labels puts the stages in order.

    data = CascadeData.from_recflow(RecFlow(root), days)   # every request of those days
    batch = data.batch()                                   # CascadeBatch of tensors

Ids are shifted by one so that 0 is padding everywhere (the released code keeps
``category_level_one`` unshifted with padding 2: see papers/recflow.md, section 8).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np
import torch

from recfunnel import checks
from recfunnel.data.recflow import STAGE_ARRAY_COLUMNS, RecFlow

GROUPS = ("rank_pos", "rank_neg", "coarse_neg", "prerank_neg")
PER_GROUP = 10  # candidates of each group per request
NEGATIVE_GAIN = {"rank_neg": 7, "coarse_neg": 6, "prerank_neg": 5}
TOP_GAIN = 30  # rank_pos gets TOP_GAIN - rank_index
USER_FIELDS = ("user_id", "age", "gender", "province")
ITEM_FIELDS = ("video_id", "author_id", "category_level_two")
HISTORY_LEN = 50
_ARRAY = {name: j for j, name in enumerate(STAGE_ARRAY_COLUMNS)}
_SEQ = {"video_id": 0, "author_id": 1, "category_level_two": 2}


@dataclass
class CascadeBatch:
    """users [B, 4] (user, age, gender, province); history [B, L, 3] and items [B, C, 3]
    (item, creator, topic), all ids + 1 with 0 as padding; gain [B, C] float, the graded
    label; mask [B, C] float (1: a real candidate); is_target [B, C] bool (rank_pos)."""

    users: torch.Tensor
    history: torch.Tensor
    items: torch.Tensor
    gain: torch.Tensor
    mask: torch.Tensor
    is_target: torch.Tensor

    def to(self, device) -> CascadeBatch:
        return CascadeBatch(*(getattr(self, f.name).to(device) for f in fields(self)))

    def __len__(self) -> int:
        return len(self.users)

    def __getitem__(self, rows) -> CascadeBatch:
        return CascadeBatch(*(getattr(self, f.name)[rows] for f in fields(self)))


@dataclass
class CascadeData:
    """Every request of some days as arrays (see ``CascadeBatch``), plus each request's id
    and the cardinalities the models' tables need."""

    request_ids: np.ndarray  # [R]
    users: np.ndarray  # [R, 4]
    history: np.ndarray  # [R, L, 3]
    items: np.ndarray  # [R, 40, 3]
    gain: np.ndarray  # [R, 40]
    mask: np.ndarray  # [R, 40]
    user_cardinalities: tuple[int, ...]
    item_cardinalities: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.request_ids)

    def batch(self) -> CascadeBatch:
        is_target = np.zeros(self.mask.shape, dtype=bool)
        is_target[:, :PER_GROUP] = self.mask[:, :PER_GROUP] > 0
        return CascadeBatch(torch.from_numpy(self.users), torch.from_numpy(self.history),
                            torch.from_numpy(self.items), torch.from_numpy(self.gain).float(),
                            torch.from_numpy(self.mask).float(), torch.from_numpy(is_target))

    @classmethod
    def from_recflow(cls, recflow: RecFlow, days: Sequence[str]) -> CascadeData:
        """The requests of ``days`` from ``all_stage/`` (users), ``request_id_dict/`` (the
        four groups, the first 10 of each, ``rank_pos`` in ranking order) and
        ``seq_effective_50_dict/`` (the last 50 effective views)."""
        if not days:
            raise checks.InvalidInputError("days: need at least one day")
        id_cnt = recflow.read_id_cnt()
        parts = [_read_day(recflow, day) for day in days]
        stacked = [np.concatenate([p[j] for p in parts]) for j in range(6)]
        users_card = (id_cnt["user_id"] + 1, id_cnt["age"] + 1, id_cnt["gender"] + 1,
                      id_cnt["province"] + 1)
        items_card = (id_cnt["video_id"] + 1, id_cnt["author_id"] + 1,
                      id_cnt["category_level_two"] + 1)
        return cls(*stacked, user_cardinalities=users_card, item_cardinalities=items_card)


def _read_day(recflow: RecFlow, day: str) -> tuple[np.ndarray, ...]:
    rows = recflow.read_rows(day, "all_stage", ["request_id", *USER_FIELDS, "video_id",
                                                 "rank_pos", "rank_index"])
    requests = recflow.read_request_dict(day)
    seqs = recflow.read_seq(day)
    per_request = rows.drop_duplicates("request_id")
    ids = per_request["request_id"].to_numpy()
    users = per_request[list(USER_FIELDS)].to_numpy(np.int64) + 1
    ranked = rows[rows["rank_pos"] == 1]
    rank_index = dict(zip(zip(ranked["request_id"], ranked["video_id"], strict=True),
                          ranked["rank_index"], strict=True))
    C = PER_GROUP * len(GROUPS)
    items = np.zeros((len(ids), C, len(ITEM_FIELDS)), dtype=np.int64)
    gain = np.zeros((len(ids), C))
    mask = np.zeros((len(ids), C))
    history = np.zeros((len(ids), HISTORY_LEN, len(ITEM_FIELDS)), dtype=np.int64)
    columns = [_ARRAY[f] for f in ITEM_FIELDS]
    seq_columns = [_SEQ[f] for f in ITEM_FIELDS]
    for r, request_id in enumerate(ids):
        stages = requests.get(int(request_id))
        if stages is None:
            raise checks.InvalidInputError(f"request_id_dict/{day}.pkl: request {request_id} "
                                           "is missing")
        for g, group in enumerate(GROUPS):
            array = stages.get(group, np.zeros((0, len(STAGE_ARRAY_COLUMNS)), np.int64))
            array = array[:PER_GROUP]
            n = len(array)
            slots = slice(g * PER_GROUP, g * PER_GROUP + n)
            items[r, slots] = array[:, columns] + 1
            mask[r, slots] = 1
            if group == "rank_pos":
                gain[r, slots] = [TOP_GAIN - rank_index[(request_id, v)] for v in array[:, 0]]
            else:
                gain[r, slots] = NEGATIVE_GAIN[group]
        seq = seqs[int(request_id)]
        real = seq[:, 7] > 0  # request timestamp of the viewing request: 0 is padding
        history[r, real] = seq[real][:, seq_columns] + 1
    return ids, users, history, items, gain, mask
