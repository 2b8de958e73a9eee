"""The live-gifting world of chapter 8 (MMBee, Deng et al. 2024): streamers whose content
changes segment by segment, viewers who rarely send a gift, and the truth behind both.

What the world plants, and which part of MMBee each piece is there to test:

* **Streamers** belong to clusters (their category, a feature every ranker sees); each
  streams in *rooms* (a room ends with
  probability ``room_end`` after every segment) and, inside a room, moves between content
  **states** by a Markov chain whose stationary mix depends on the cluster. The three
  ``HIGHLIGHTS`` are highlight states (a PK battle, a lucky draw, ...): rarer.
* **Segment tokens** per modality (visual, speech, comment), ``tokens`` of them, ``d_token``
  wide, all in one shared space (as the features of one multi-modal extractor are): a
  token carries the state's signature ``A_m e_z`` only with probability ``carry_share``
  (so mean pooling dilutes it); a **shared nuisance** ``nuisance * v`` (lighting, loudness:
  one random direction per segment) is added to every token of every modality, which is
  what MFQ's orthogonal projection should remove; some states show in one modality only
  (``ONE_MODALITY``: singing is heard, a PK battle is read in the comments, an outdoor
  scene is seen).
* **Viewers** have a preference over states, two favourite clusters and a gifting
  propensity (a few *whales*). Who watches whom is mostly popularity with a mild pull to
  the favourite clusters; who *gifts* follows the clusters strongly, the viewer's state
  preference, and each streamer's **signature state** (the state in which its viewers
  gift; mostly its cluster's, sometimes its own). The intercept is set so that the gift
  rate is ``gift_rate``.
* **Time**: segments 0..T-1. The first ``burn_in`` share builds the gift graph (and the
  histories); impressions after it are split in time into train and test. An impression
  sees the room's last ``window`` segments up to and including its own (never a later
  one: the segment in which the gift is sent is the impression's own), and segments of
  the room before it started are padding.

Comment text is optional: ``comment_vectors="minilm"`` draws every carrying comment token
from state-specific comment templates encoded by all-MiniLM-L6-v2 (``data.text``), reduced
to ``d_token`` by a PCA fitted on the template vocabulary (the ``cpu`` and ``gpu`` presets;
without the encoder they fall back to synthetic vectors with a warning, and
``LiveWorld.comment_text`` says which); "synthetic" uses ``A_m e_z``.
Everything is deterministic under ``seed`` (numpy ``Generator`` streams of one
``SeedSequence``). The design is this book's reading of the card's section 7.1.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace

import numpy as np

from recfunnel import checks
from recfunnel.data.world import sigmoid

MODALITIES = ("visual", "speech", "comment")
STATES = ("chatting", "singing", "dancing", "gaming", "outdoor", "pk_battle", "lucky_draw",
          "celebration")
HIGHLIGHTS = ("pk_battle", "lucky_draw", "celebration")
# states that show in one modality only: (state, the modality it shows in)
ONE_MODALITY = (("singing", "speech"), ("pk_battle", "comment"), ("outdoor", "visual"))
# what viewers write in each state (the comment modality, when read by a text encoder)
COMMENT_TEMPLATES = {
    "chatting": ("how was your day", "good evening everyone", "tell us more about it",
                 "haha that is so true"),
    "singing": ("your voice is beautiful", "sing that song again please",
                "what a lovely melody", "one more song"),
    "dancing": ("amazing dance moves", "look at that spin", "you dance so well",
                "teach us that dance"),
    "gaming": ("nice headshot", "gg well played", "which level is this", "that boss fight"),
    "outdoor": ("where are you now", "the view is stunning", "is it cold outside",
                "what a beautiful place"),
    "pk_battle": ("we must win this pk", "send gifts now for the pk", "beat them in the battle",
                  "pk time everyone support"),
    "lucky_draw": ("i want to win the draw", "lucky draw please pick me", "who won the prize",
                   "join the lucky draw"),
    "celebration": ("happy birthday", "congratulations on the milestone",
                    "let us celebrate together", "cheers to you"),
}
CHATTER = ("hello", "hi everyone", "just arrived", "ok", "lol")  # comments that carry no state


@dataclass(frozen=True)
class LiveConfig:
    """Sizes and rates of a live world; ``LIVE_PRESETS`` holds the course's three."""

    n_users: int = 3_000
    n_streamers: int = 200
    n_clusters: int = 8
    segments: int = 48  # T: time steps of every streamer's timeline
    room_end: float = 0.08  # chance that a room ends after a segment (a new one starts)
    impressions_per_user: float = 150.0  # Poisson mean over the whole timeline
    tokens: int = 8  # tokens per modality and segment
    d_token: int = 16
    window: int = 2  # segments an impression sees: its own and the room's earlier ones
    carry_share: float = 0.2  # chance that a token carries the state
    nuisance: float = 2.0  # size of the shared per-segment nuisance vector
    token_noise: float = 1.2
    state_stay: float = 0.75  # chance that a room keeps its state for another segment
    highlight_weight: float = 0.3  # a highlight state's weight in a cluster's mix, relative
    gift_rate: float = 0.02
    whale_share: float = 0.03  # viewers with a high gifting propensity
    watch_affinity: float = 0.3  # pull of the favourite clusters on what is watched
    gift_affinity: float = 3.0  # ... and on what is gifted
    gift_preference: float = 0.3  # weight of the viewer's state preference
    gift_signature: float = 2.5  # weight of the streamer's signature state
    signature_shared: float = 0.75  # chance that a streamer's signature is its cluster's
    burn_in: float = 0.4  # share of the timeline that builds the graph and the histories
    test_share: float = 0.25  # share of the timeline at the end that is the test period
    comment_vectors: str = "synthetic"  # or "minilm"
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("n_users", "n_streamers", "n_clusters", "segments", "tokens", "d_token",
                     "window"):
            checks.positive_int(name, getattr(self, name))
        if self.n_streamers < self.n_clusters:
            raise checks.InvalidInputError(
                f"n_streamers: {self.n_streamers} streamers cannot fill {self.n_clusters} "
                "clusters")
        for name in ("room_end", "carry_share", "state_stay", "gift_rate", "whale_share",
                     "burn_in", "test_share", "signature_shared"):
            checks.real(name, getattr(self, name), 0.0, 1.0, low_open=name == "gift_rate",
                        high_open=True)
        for name in ("nuisance", "token_noise", "highlight_weight", "watch_affinity",
                     "gift_affinity", "gift_preference", "gift_signature"):
            checks.real(name, getattr(self, name), 0.0)
        checks.real("impressions_per_user", self.impressions_per_user, 0.0, low_open=True)
        if self.burn_in + self.test_share >= 1.0:
            raise checks.InvalidInputError(
                f"burn_in + test_share: {self.burn_in} + {self.test_share} leaves no training "
                "period")
        checks.one_of("comment_vectors", self.comment_vectors, ("synthetic", "minilm"))

    @property
    def n_states(self) -> int:
        return len(STATES)

    @property
    def train_start(self) -> int:
        """The first segment after the burn-in."""
        return int(round(self.burn_in * self.segments))

    @property
    def test_start(self) -> int:
        """The first segment of the test period."""
        return int(round((1.0 - self.test_share) * self.segments))


LIVE_PRESETS = {
    "smoke": LiveConfig(n_users=1_500, n_streamers=60, n_clusters=6, segments=40,
                        impressions_per_user=200.0, tokens=4),
    "cpu": LiveConfig(comment_vectors="minilm"),
    "gpu": LiveConfig(n_users=100_000, n_streamers=3_000, n_clusters=16, segments=96,
                      impressions_per_user=200.0, tokens=16, d_token=32,
                      comment_vectors="minilm"),
}


@dataclass(frozen=True)
class GiftLog:
    """Gift impressions as any source gives them (this world, KuaiLive): user, streamer,
    time and gift [N], time-ordered; ids 0..n-1."""

    user: np.ndarray
    streamer: np.ndarray
    time: np.ndarray
    gift: np.ndarray
    n_users: int
    n_streamers: int


@dataclass
class LiveWorld:
    """A simulated live-gifting world.

    Streamers [A]: ``cluster``, ``signature`` (the state whose segments draw gifts),
    ``popularity``. Timelines [A, T]: ``state`` (index into ``STATES``), ``room`` (a running
    room id per streamer, -1 never), ``room_start`` (the segment its room began).
    ``tokens`` [A, T, M, n, d] float32: every segment's modality tokens.
    Viewers [U]: ``preference`` [U, S], ``affinity`` [U, C] (1 on the two favourite
    clusters), ``propensity`` [U]. Impressions [N], time-ordered: ``user``, ``streamer``,
    ``segment`` (the impression's time step), ``gift`` int8 and the truth ``gift_prob``.
    """

    config: LiveConfig
    cluster: np.ndarray
    signature: np.ndarray
    popularity: np.ndarray
    state: np.ndarray
    room: np.ndarray
    room_start: np.ndarray
    tokens: np.ndarray
    preference: np.ndarray
    affinity: np.ndarray
    propensity: np.ndarray
    user: np.ndarray
    streamer: np.ndarray
    segment: np.ndarray
    gift: np.ndarray
    gift_prob: np.ndarray
    intercept: float
    nuisance_direction: np.ndarray  # [A, T, d] the unit nuisance direction of each segment
    comment_text: bool = False  # comment tokens read from text by all-MiniLM-L6-v2

    @property
    def n_users(self) -> int:
        return self.config.n_users

    @property
    def n_streamers(self) -> int:
        return self.config.n_streamers

    def period(self) -> np.ndarray:
        """[N] 0 = burn-in, 1 = train, 2 = test, by the impression's segment."""
        cfg = self.config
        return (self.segment >= cfg.train_start).astype(np.int8) + (
            self.segment >= cfg.test_start)

    def window_segments(self, streamer: np.ndarray, segment: np.ndarray
                        ) -> tuple[np.ndarray, np.ndarray]:
        """The segments an impression sees, oldest first: times [n, W] and live [n, W]
        (False where the time falls before the room's start, or before 0)."""
        offsets = np.arange(self.config.window - 1, -1, -1)  # W-1 .. 0
        times = segment[:, None] - offsets[None, :]
        start = self.room_start[streamer, segment]  # [n]
        live = times >= start[:, None]
        return np.maximum(times, 0), live

    def log(self) -> GiftLog:
        """The impressions as a ``GiftLog`` (time = segment)."""
        return GiftLog(self.user, self.streamer, self.segment, self.gift, self.n_users,
                       self.n_streamers)

    def past_gifts(self, before: int | None = None) -> np.ndarray:
        """[U] gifts each viewer sent before segment ``before`` (default: the burn-in)."""
        before = self.config.train_start if before is None else before
        sent = (self.gift == 1) & (self.segment < before)
        return np.bincount(self.user[sent], minlength=self.n_users)


def _cluster_chains(cfg: LiveConfig, rng: np.random.Generator) -> np.ndarray:
    """[C, S, S] transition matrices: stay with ``state_stay``, else jump to a state drawn
    from the cluster's mix (three favoured states; highlights down-weighted)."""
    S = cfg.n_states
    weights = np.ones(S)
    weights[[STATES.index(h) for h in HIGHLIGHTS]] = cfg.highlight_weight
    chains = np.empty((cfg.n_clusters, S, S))
    for c in range(cfg.n_clusters):
        mix = weights * rng.gamma(0.3, size=S) + 1e-3
        favoured = rng.choice(S, size=3, replace=False)
        mix[favoured] += weights[favoured] * 2.0
        mix /= mix.sum()
        chains[c] = (1 - cfg.state_stay) * mix[None, :] + cfg.state_stay * np.eye(S)
    return chains


def _timelines(cfg: LiveConfig, cluster: np.ndarray, rng: np.random.Generator
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """state, room and room_start [A, T]: a room ends after a segment with ``room_end``; a
    new room starts in a state drawn from the cluster's mix."""
    A, T, S = cfg.n_streamers, cfg.segments, cfg.n_states
    chains = _cluster_chains(cfg, rng)
    state = np.empty((A, T), dtype=np.int64)
    room = np.empty((A, T), dtype=np.int64)
    room_start = np.empty((A, T), dtype=np.int64)
    ends = rng.random((A, T)) < cfg.room_end
    for a in range(A):
        chain = chains[cluster[a]]
        mix = chain[0] - cfg.state_stay * np.eye(S)[0]
        mix = mix / mix.sum()
        current, rid, start = rng.choice(S, p=mix), 0, 0
        for t in range(T):
            if t > 0 and ends[a, t - 1]:
                current, rid, start = rng.choice(S, p=mix), rid + 1, t
            elif t > 0:
                current = rng.choice(S, p=chain[current])
            state[a, t], room[a, t], room_start[a, t] = current, rid, start
    return state, room, room_start


def _comment_signatures(cfg: LiveConfig, rng: np.random.Generator
                        ) -> tuple[np.ndarray, np.ndarray]:
    """Comment vectors read from text: per state [S, k, d] (its templates) and the chatter
    [c, d], from all-MiniLM-L6-v2 reduced by a PCA fitted on the whole vocabulary and
    scaled to unit mean norm."""
    from recfunnel.data.text import encode_texts

    texts = [t for state in STATES for t in COMMENT_TEMPLATES[state]] + list(CHATTER)
    vectors = encode_texts(texts, encoder="minilm").astype(np.float64)  # [n, 384]
    centred = vectors - vectors.mean(0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    reduced = centred @ vt[: cfg.d_token].T  # [n, d]
    reduced /= np.linalg.norm(reduced, axis=1).mean()
    k = len(COMMENT_TEMPLATES[STATES[0]])
    per_state = reduced[: len(STATES) * k].reshape(len(STATES), k, cfg.d_token)
    return per_state, reduced[len(STATES) * k:]


def _segment_tokens(cfg: LiveConfig, state: np.ndarray, rng: np.random.Generator
                    ) -> tuple[np.ndarray, np.ndarray, bool]:
    """tokens [A, T, M, n, d], the nuisance directions [A, T, d], and whether the comment
    tokens were read from text (False: synthetic, asked for or fallen back to)."""
    A, T, M, n, d = cfg.n_streamers, cfg.segments, len(MODALITIES), cfg.tokens, cfg.d_token
    S = cfg.n_states
    codes = rng.normal(size=(S, d))  # e_z
    codes /= np.linalg.norm(codes, axis=1, keepdims=True)
    mixing = np.stack([np.linalg.qr(rng.normal(size=(d, d)))[0] for _ in MODALITIES])  # A_m
    signatures = np.einsum("mij,sj->msi", mixing, codes)  # [M, S, d]
    visible = np.ones((M, S))
    for name, modality in ONE_MODALITY:
        visible[:, STATES.index(name)] = 0.0
        visible[MODALITIES.index(modality), STATES.index(name)] = 1.0
    signatures *= 1.5 * visible[:, :, None]  # a carrying token's signature has norm 1.5

    carry = rng.random((A, T, M, n)) < cfg.carry_share
    content = signatures[np.arange(M)[None, None, :], state[:, :, None]]  # [A, T, M, d]
    tokens = carry[..., None] * content[:, :, :, None, :]  # [A, T, M, n, d]
    templates = None
    if cfg.comment_vectors == "minilm":
        from recfunnel.data.text import TextEncoderUnavailableError

        try:
            templates, chatter = _comment_signatures(cfg, rng)
        except TextEncoderUnavailableError as error:
            warnings.warn(f"comment text: all-MiniLM-L6-v2 is unavailable ({error}); the "
                          "comment modality falls back to synthetic vectors (install the "
                          "course's 'text' extra for real comment text)", stacklevel=3)
    if templates is not None:
        comment = MODALITIES.index("comment")
        pick = rng.integers(templates.shape[1], size=(A, T, n))
        said = 1.5 * templates[state[:, :, None], pick]  # [A, T, n, d]
        said *= visible[comment, state][:, :, None, None]
        idle = chatter[rng.integers(len(chatter), size=(A, T, n))]
        tokens[:, :, comment] = np.where(carry[:, :, comment, :, None], said, 0.5 * idle)
    direction = rng.normal(size=(A, T, d))
    direction /= np.linalg.norm(direction, axis=-1, keepdims=True)
    tokens += cfg.nuisance * direction[:, :, None, None, :]
    tokens += cfg.token_noise / np.sqrt(d) * rng.normal(size=tokens.shape)
    return tokens.astype(np.float32), direction, templates is not None


def _impressions(cfg: LiveConfig, popularity: np.ndarray, cluster: np.ndarray,
                 affinity: np.ndarray, rng: np.random.Generator
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """user, streamer, segment [N], time-ordered: each viewer's impressions at uniform
    times; the streamer drawn with odds exp(popularity + watch_affinity * affinity)."""
    counts = np.maximum(rng.poisson(cfg.impressions_per_user, size=cfg.n_users), 1)
    user = np.repeat(np.arange(cfg.n_users), counts)
    segment = rng.integers(cfg.segments, size=len(user))
    logits = popularity[None, :] + cfg.watch_affinity * affinity[:, cluster]  # [U, A]
    odds = np.exp(logits - logits.max(1, keepdims=True))
    cumulative = np.cumsum(odds / odds.sum(1, keepdims=True), axis=1)
    draw = rng.random(len(user))
    streamer = np.minimum((cumulative[user] < draw[:, None]).sum(1), cfg.n_streamers - 1)
    order = np.lexsort((user, segment))
    return user[order], streamer[order], segment[order]


def _intercept(logits: np.ndarray, target: float) -> float:
    """The shift that makes the mean of sigmoid(logits + shift) equal ``target``."""
    low, high = -30.0, 30.0
    for _ in range(60):
        mid = (low + high) / 2
        if sigmoid(logits + mid).mean() > target:
            high = mid
        else:
            low = mid
    return (low + high) / 2


def build_live_world(cfg: LiveConfig) -> LiveWorld:
    """Simulate the world of ``cfg`` (see the module docstring)."""
    streams = [np.random.default_rng(s) for s in np.random.SeedSequence(cfg.seed).spawn(5)]
    structure, content, viewers, watching, gifting = streams
    A, S, C = cfg.n_streamers, cfg.n_states, cfg.n_clusters
    cluster = np.r_[np.arange(C), structure.integers(C, size=A - C)]  # every cluster used
    structure.shuffle(cluster)
    popularity = structure.normal(0.0, 0.8, size=A)
    state, room, room_start = _timelines(cfg, cluster, structure)
    # the signature: mostly the cluster's (one of its three most frequent states), else one
    # of the streamer's own two most frequent states; so its segments recur
    counts = np.stack([np.bincount(row, minlength=S) for row in state])  # [A, S]
    by_cluster = np.stack([counts[cluster == c].sum(0) for c in range(C)])  # [C, S]
    top3 = np.argsort(-by_cluster + structure.random((C, S)), axis=1)[:, :3]
    cluster_signature = top3[np.arange(C), structure.integers(3, size=C)]
    own = np.argsort(-counts + structure.random((A, S)), axis=1)[:, :2]
    own = own[np.arange(A), structure.integers(2, size=A)]
    signature = np.where(structure.random(A) < cfg.signature_shared,
                         cluster_signature[cluster], own)
    tokens, direction, comment_text = _segment_tokens(cfg, state, content)

    preference = viewers.normal(size=(cfg.n_users, S))
    affinity = np.zeros((cfg.n_users, C))
    for u in range(cfg.n_users):
        affinity[u, viewers.choice(C, size=2, replace=False)] = 1.0
    whales = viewers.random(cfg.n_users) < cfg.whale_share
    propensity = viewers.normal(0.0, 0.5, size=cfg.n_users) + 2.5 * whales

    user, streamer, segment = _impressions(cfg, popularity, cluster, affinity, watching)
    z = state[streamer, segment]
    logits = (propensity[user] + cfg.gift_preference * preference[user, z]
              + cfg.gift_affinity * affinity[user, cluster[streamer]]
              + cfg.gift_signature * (z == signature[streamer]))
    intercept = _intercept(logits, cfg.gift_rate)
    gift_prob = sigmoid(logits + intercept)
    gift = (gifting.random(len(user)) < gift_prob).astype(np.int8)
    return LiveWorld(config=cfg, cluster=cluster, signature=signature, popularity=popularity,
                     state=state, room=room, room_start=room_start, tokens=tokens,
                     preference=preference, affinity=affinity, propensity=propensity,
                     user=user, streamer=streamer, segment=segment, gift=gift,
                     gift_prob=gift_prob, intercept=intercept, nuisance_direction=direction,
                     comment_text=comment_text)


def live_world(preset: str = "cpu", **changes) -> LiveWorld:
    """The world of a named preset, with ``changes`` to its config (``seed=1``, ...)."""
    checks.one_of("preset", preset, LIVE_PRESETS)
    return build_live_world(replace(LIVE_PRESETS[preset], **changes))
