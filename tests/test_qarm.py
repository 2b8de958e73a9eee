"""QARM (chapter 7): quantisers, the multi-modal world, alignment, codes, the ranker."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from recfunnel.data.movielens import MovieLens
from recfunnel.data.multimodal import MultiModalConfig, make_multimodal, rank_batch
from recfunnel.data.text import (
    MINILM_VAR,
    TextEncoderUnavailableError,
    encode_texts,
    movie_texts,
    movielens_text_items,
)
from recfunnel.layers.features import masked_mean
from recfunnel.layers.quantize import (
    NearestItemCode,
    ResidualKMeans,
    collision_rate,
    kmeans,
)
from recfunnel.models import qarm, qarm_pretrain
from recfunnel.profiles import profile_for
from recfunnel.recipes import qarm as recipe

# --------------------------------------------------------------------------- quantisers


def blobs(n: int = 600, d: int = 8, centres: int = 6, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    means = 4 * torch.randn(centres, d, generator=g)
    return means[torch.randint(centres, (n,), generator=g)] + torch.randn(n, d, generator=g)


def test_residual_kmeans_error_never_grows_with_levels():
    x = blobs()
    rq = ResidualKMeans(levels=5, codebook_size=8, seed=0).fit(x)
    errors = rq.reconstruction_error(x)
    assert errors.shape == (5,)
    assert torch.all(errors[1:] <= errors[:-1] + 1e-7), errors
    assert errors[-1] < 0.5 * errors[0]  # the later levels do real work
    # levels fitted on the data also beat zero vectors by far
    assert errors[0] < 0.2 * (x ** 2).mean()


def test_encode_and_decode_are_consistent():
    x = blobs()
    rq = ResidualKMeans(levels=3, codebook_size=8, seed=1).fit(x)
    codes, residual = rq.encode(x, return_residual=True)
    assert codes.shape == (len(x), 3) and codes.dtype == torch.long
    assert codes.min() >= 0 and codes.max() < 8
    torch.testing.assert_close(rq.decode(codes) + residual, x, rtol=0, atol=1e-4)
    # a vector built from centroids of well-separated code books encodes to its code
    books = torch.zeros(2, 3, 2)
    books[0] = torch.tensor([[0.0, 0.0], [100.0, 0.0], [0.0, 100.0]])
    books[1] = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    rq_hand = ResidualKMeans(levels=2, codebook_size=3)
    rq_hand.codebooks = books
    code = torch.tensor([[1, 2], [2, 1], [0, 0]])
    assert torch.equal(rq_hand.encode(rq_hand.decode(code)), code)


def test_collision_rate_on_a_hand_built_case():
    codes = torch.tensor([[0, 1], [0, 1], [1, 2], [2, 0], [2, 0], [2, 0], [0, 2]])
    assert collision_rate(codes) == pytest.approx(5 / 7)
    assert collision_rate(torch.tensor([[0, 1], [1, 0]])) == 0.0
    with pytest.raises(ValueError, match="non-empty"):
        collision_rate(torch.zeros(0, 2, dtype=torch.long))


def test_collisions_fall_with_more_levels():
    x = blobs(n=800)
    rates = [collision_rate(ResidualKMeans(levels, 8, seed=0).fit(x).encode(x))
             for levels in (1, 2, 4)]
    assert rates[0] > rates[1] > rates[2]


def test_codes_are_deterministic_under_a_seed():
    x = blobs()
    first = ResidualKMeans(3, 8, seed=7).fit(x)
    again = ResidualKMeans(3, 8, seed=7).fit(x)
    other = ResidualKMeans(3, 8, seed=8).fit(x)
    assert torch.equal(first.codebooks, again.codebooks)
    assert torch.equal(first.encode(x), again.encode(x))
    assert not torch.equal(first.codebooks, other.codebooks)
    assert torch.equal(kmeans(x, 5, seed=3), kmeans(x, 5, seed=3))


def test_kmeans_keeps_every_centroid_in_use_and_rejects_bad_input():
    x = torch.cat([torch.zeros(50, 2), torch.ones(50, 2) * 10, torch.tensor([[5.0, 5.0]])])
    centroids = kmeans(x, 3, seed=0)
    assert len(torch.unique(torch.cdist(x, centroids).argmin(1))) == 3
    with pytest.raises(ValueError, match="k must lie"):
        kmeans(x, 0)
    with pytest.raises(ValueError, match="NaN"):
        kmeans(torch.full((4, 2), float("nan")), 2)
    with pytest.raises(RuntimeError, match="fit"):
        ResidualKMeans(2, 4).encode(x)
    with pytest.raises(IndexError, match="codes must lie"):
        ResidualKMeans(1, 3).fit(x).decode(torch.tensor([[5]]))


def test_nearest_item_code_lists_the_nearest_pool_items():
    pool = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.7, 0.7]])
    vq = NearestItemCode(pool, k=2)
    code = vq.encode(torch.tensor([[1.0, 0.1], [0.1, 1.0]]))
    assert code.tolist() == [[0, 3], [1, 3]]
    # an item of the pool finds itself first, unless excluded
    assert vq.encode(pool[:1])[0, 0] == 0
    assert 0 not in vq.encode(pool[:1], exclude=torch.tensor([0])).tolist()[0]
    torch.testing.assert_close(vq.decode(torch.tensor([[0, 2]])), torch.zeros(1, 2))


# --------------------------------------------------------------------------- the world


@pytest.fixture(scope="module")
def world():
    return make_multimodal(n_users=300, n_items=400, n_impressions=20_000, history=10, seed=0)


def test_world_is_deterministic_and_has_cold_items_and_lookalikes(world):
    again = make_multimodal(n_users=300, n_items=400, n_impressions=20_000, history=10, seed=0)
    assert np.array_equal(world.items, again.items) and np.array_equal(world.labels,
                                                                        again.labels)
    train, valid, test = world.split()
    assert not world.is_cold[world.items[train | valid]].any()  # cold: never shown before
    assert 0.08 < world.is_cold[world.items[test]].mean() < 0.25
    assert world.labels[train].mean() == pytest.approx(0.2, abs=0.02)
    copies = np.flatnonzero(world.lookalike_of >= 0)
    assert len(copies) == int(0.15 * world.n_items)
    assert (world.item_topic[copies] != world.item_topic[world.lookalike_of[copies]]).all()
    assert (world.item_style[copies] == world.item_style[world.lookalike_of[copies]]).all()


def test_content_shows_style_more_than_behaviour(world):
    content = torch.from_numpy(world.content())
    unit = torch.nn.functional.normalize(content, dim=1)
    nearest = (unit @ unit.T).fill_diagonal_(-2).argmax(1).numpy()
    same_style = (world.item_style[nearest] == world.item_style).mean()
    same_topic = (world.item_topic[nearest] == world.item_topic).mean()
    assert same_style > 0.8 and same_topic < 0.3


def test_histories_hold_only_earlier_clicks(world):
    for row in np.random.default_rng(0).choice(len(world.users), 50, replace=False):
        user = world.users[row]
        earlier = np.flatnonzero((world.users == user) & (world.labels == 1))
        earlier = earlier[earlier < row][-world.cfg.history:]
        kept = world.history[row][world.history[row] != world.pad]
        assert kept.tolist() == world.items[earlier].tolist()


def test_world_rejects_bad_configs():
    with pytest.raises(ValueError, match="behaviour_in_content"):
        MultiModalConfig(behaviour_in_content=1.5)
    with pytest.raises(ValueError, match="cold_share"):
        MultiModalConfig(cold_share=1.0)
    with pytest.raises(ValueError, match="either a config"):
        make_multimodal(MultiModalConfig(), seed=3)


# --------------------------------------------------------------------------- alignment


def test_pair_mining_follows_the_trigger_rule():
    users = np.array([0, 0, 0, 0, 1, 1])
    items = np.array([5, 6, 5, 7, 1, 1])
    # without vectors: the latest earlier click of another item
    assert qarm_pretrain.mine_pairs(users, items, window=2).tolist() == [[5, 6], [6, 5], [5, 7]]
    # with vectors: the most similar among the window (item 7 is closest to item 5)
    vectors = torch.zeros(8, 2)
    vectors[5], vectors[6], vectors[7] = torch.tensor([1.0, 0]), torch.tensor([0, 1.0]), \
        torch.tensor([0.9, 0.1])
    assert qarm_pretrain.mine_pairs(users, items, 3, vectors)[-1].tolist() == [5, 7]
    with pytest.raises(ValueError, match="window"):
        qarm_pretrain.mine_pairs(users, items, 0)


def test_alignment_loss_prefers_matched_pairs_and_ignores_duplicates():
    g = torch.Generator().manual_seed(0)
    m = torch.nn.functional.normalize(torch.randn(16, 8, generator=g), dim=1)
    ids = torch.arange(16)
    matched = qarm.alignment_loss(m, m, ids, ids)
    shuffled = qarm.alignment_loss(m, m.roll(1, 0), ids, ids.roll(1))
    assert matched < shuffled
    # a batch with the same target twice does not push the copy away
    twice = torch.cat([m[:1], m[:1]])
    assert qarm.alignment_loss(twice, twice, torch.tensor([3, 3]), torch.tensor([4, 4])) < 1e-3


def test_alignment_brings_behaviourally_related_items_together(world):
    aligned = recipe.align_items(world, d=16, window=20, epochs=4, seed=0, progress=False)
    _, valid, test = world.split()
    held_out = qarm_pretrain.mine_pairs(*qarm_pretrain.clicks(world, valid | test), window=1)
    assert qarm.pair_recall(aligned.aligned, held_out) > 1.5 * qarm.pair_recall(aligned.raw,
                                                                                 held_out)
    agreement = {}  # share of VQ-code items (nearest pool items, self left out) of one topic
    for name in ("raw", "aligned"):
        codes = qarm.build_codes(getattr(aligned, name), ~world.is_cold, k=3, levels=2,
                                 codebook_size=8, keep_self=False)
        neighbours = codes.pool.numpy()[codes.vq.numpy()]
        agreement[name] = (world.item_topic[neighbours] == world.item_topic[:, None]).mean()
    assert agreement["aligned"] > agreement["raw"] + 0.1, agreement


# --------------------------------------------------------------------------- codes, ranker


def test_codes_index_the_pool_and_cold_items_never_see_themselves(world):
    vectors = torch.from_numpy(world.content()[:, :16])
    codes = qarm.build_codes(vectors, ~world.is_cold, k=3, levels=2, codebook_size=8,
                             keep_self=False)
    assert codes.vq.shape == (world.n_items, 3) and codes.rq.shape == (world.n_items, 2)
    assert codes.vq.max() < len(codes.pool) == (~world.is_cold).sum()
    own = torch.full((world.n_items,), -1)
    own[codes.pool] = torch.arange(len(codes.pool))
    assert not (codes.vq == own[:, None]).any()
    with_self = qarm.build_codes(vectors, ~world.is_cold, k=3, levels=2, codebook_size=8)
    pool_rows = codes.pool
    assert torch.equal(with_self.vq[pool_rows, 0], own[pool_rows])


def test_ranker_code_embeddings_train_end_to_end(world):
    codes = qarm.build_codes(torch.from_numpy(world.content()[:, :16]), ~world.is_cold, 3, 2, 8)
    model = qarm.QARMRanker(world.n_users, world.n_items, 8, (16,),
                            inputs=qarm.RankerInputs(vq=True, rq=True), codes=codes)
    batch = rank_batch(world, np.arange(64))
    labels = batch.labels[:, 0]
    before = model(batch).detach()
    with torch.no_grad():  # the codes are read: other code embeddings, other scores
        model.vq_emb.weight.add_(1.0)
        assert (model(batch) - before).abs().max() > 1e-4
        model.vq_emb.weight.sub_(1.0)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = None
    for _ in range(30):
        optimiser.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(batch), labels)
        loss.backward()
        first = loss.item() if first is None else first
        assert model.vq_emb.weight.grad.abs().sum() > 0
        assert all(table.weight.grad.abs().sum() > 0 for table in model.rq_emb)
        optimiser.step()
    assert loss.item() < 0.7 * first
    with pytest.raises(ValueError, match="frozen item vectors"):
        qarm.QARMRanker(10, 10, 4, (4,), inputs=qarm.RankerInputs(frozen=True))
    with pytest.raises(ValueError, match="codes"):
        qarm.QARMRanker(10, 10, 4, (4,), inputs=qarm.RankerInputs(rq=True))


def test_matched_history_uses_only_items_with_the_candidates_first_code(world):
    codes = qarm.build_codes(torch.from_numpy(world.content()[:, :16]), ~world.is_cold, 3, 2, 8)
    model = qarm.QARMRanker(world.n_users, world.n_items, 8, (16,),
                            inputs=qarm.RankerInputs(rq=True), codes=codes)
    # a history of padding and three items whose first-level codes are known; the candidate
    # matches item 0 only (ranker ids are item ids + 1, 0 pads)
    first = codes.rq[:, 0]
    candidate = int(torch.nonzero(first == first[0])[1])
    others = torch.nonzero(first != first[0]).flatten()[:2]
    history = torch.tensor([[0, 0 + 1, int(others[0]) + 1, int(others[1]) + 1]])
    matched = model.matched(history, torch.tensor([candidate + 1]))
    assert matched.tolist() == [[False, True, False, False]]
    vectors = model._rq_vectors(history)
    torch.testing.assert_close(masked_mean(vectors, matched), vectors[:, 1])
    # a candidate whose own code is the padding row's would still never match the padding
    assert not model.matched(torch.zeros(1, 3, dtype=torch.long), torch.tensor([1])).any()


def test_the_ranker_batch_pads_with_zero_and_shifts_item_ids(world):
    batch = rank_batch(world, np.arange(200))
    assert torch.equal(batch.features[:, 1], torch.from_numpy(world.items[:200]) + 1)
    padded = torch.from_numpy(world.history[:200]) == world.pad
    assert padded.any() and torch.equal(batch.history == 0, padded)
    assert torch.equal(batch.history[~padded], torch.from_numpy(world.history[:200])[~padded] + 1)


def test_rankers_learn_and_codes_reach_cold_items(world):
    vectors = {"aligned": torch.from_numpy(world.item_behaviour)}  # oracle vectors
    codes = {"aligned": qarm.build_codes(vectors["aligned"], ~world.is_cold, 3, 2, 8)}
    scores = recipe.rank_variants(world, vectors, codes, ["base", "+ RQ code"], d_emb=8,
                                hidden=(16,), epochs=3, batch_size=256, progress=False)
    assert scores["base"]["auc"] > 0.55
    assert scores["+ RQ code"]["auc_cold"] > scores["base"]["auc_cold"] + 0.03


# --------------------------------------------------------------------------- text


def tiny_movielens() -> MovieLens:
    items = pd.DataFrame({
        "item_id": [1, 2, 3, 4, 5, 6],
        "title": ["Toy Story", "Toy Story 2", "Heat", "Alien", "Aliens", "Heat Wave"],
        "year": pd.array([1995, 1999, 1995, 1979, 1986, None], dtype="Int64"),
        "genres": [("Animation", "Comedy"), ("Animation", "Comedy"), ("Crime",),
                   ("Horror", "Sci-Fi"), ("Action", "Sci-Fi"), ()],
    })
    interactions = pd.DataFrame({
        "user_id": [1, 1, 1, 2, 2, 2, 2, 3, 3, 3],
        "item_id": [1, 2, 3, 4, 5, 1, 2, 6, 3, 4],
        "rating": 4.0, "timestamp": [3, 1, 2, 1, 2, 3, 4, 1, 2, 3],
    })
    return MovieLens("tiny", interactions, items)


def test_movie_texts_are_encoded_offline_in_time_order():
    text_items = movielens_text_items(tiny_movielens(), dim=3, held_out=0.34)
    assert text_items.texts[0] == "Toy Story (1995). Genres: Animation, Comedy."
    assert text_items.texts[5] == "Heat Wave. Genres: unknown."
    assert text_items.content.shape == (6, 3)
    # user 1 rated items 2, 3, 1 in time order (item index = id - 1); the last third held out
    assert text_items.items[:3].tolist() == [1, 2, 0]
    assert text_items.train[:3].tolist() == [True, True, False]
    # the two Toy Story titles share words, so their vectors are the most alike
    unit = torch.nn.functional.normalize(torch.from_numpy(text_items.content), dim=1)
    assert int((unit @ unit.T).fill_diagonal_(-2)[0].argmax()) == 1


def tiny_sentence_encoder(folder) -> str:
    """A randomly initialised one-layer BERT with mean pooling, saved in
    sentence-transformers' format: the loading and encoding path of all-MiniLM-L6-v2."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    from transformers import BertConfig, BertModel, BertTokenizerFast

    words = sorted({w.strip(".,():").lower() for t in movie_texts(tiny_movielens().items)
                    for w in t.split()})
    bert = folder / "bert"
    bert.mkdir()
    (bert / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
                                              + words))
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(words) + 5, hidden_size=16, num_hidden_layers=1,
                         num_attention_heads=2, intermediate_size=32)).save_pretrained(bert)
    BertTokenizerFast(vocab_file=str(bert / "vocab.txt")).save_pretrained(bert)
    encoder = SentenceTransformer(modules=[Transformer(str(bert)), Pooling(16, "mean")],
                                  device="cpu")
    encoder.save(str(folder / "encoder"))
    return str(folder / "encoder")


def test_the_gpu_profiles_minilm_branch_encodes_movies_with_a_local_model(tmp_path,
                                                                          monkeypatch):
    """Chapter 7 encodes MovieLens' movies with all-MiniLM-L6-v2 at the gpu profile only: the
    same code path, through sentence-transformers, on a tiny model of the same format."""
    pytest.importorskip("sentence_transformers")  # the course's dev install has it
    assert profile_for("qarm", "gpu").text_encoder == "minilm"
    monkeypatch.setenv(MINILM_VAR, tiny_sentence_encoder(tmp_path))
    first = movielens_text_items(tiny_movielens(), encoder="minilm", held_out=0.34)
    again = movielens_text_items(tiny_movielens(), encoder="minilm", held_out=0.34)
    assert first.content.shape == (6, 16) and first.content.dtype == np.float32
    assert np.isfinite(first.content).all() and np.array_equal(first.content, again.content)
    assert np.allclose(first.content.mean(0), 0, atol=1e-5)  # standardised like TF-IDF's
    monkeypatch.setenv(MINILM_VAR, str(tmp_path / "absent"))
    with pytest.raises(TextEncoderUnavailableError, match="absent"):
        encode_texts(["a b"], encoder="minilm")


def test_text_encoders_say_what_is_missing():
    with pytest.raises(ValueError, match="unknown encoder"):
        encode_texts(["a b"], encoder="bert")
    with pytest.raises(ValueError, match="lacks columns"):
        movielens_text_items(MovieLens("x", pd.DataFrame(), pd.DataFrame({"title": []})))
    try:
        import sentence_transformers  # noqa: F401
    except ImportError:
        with pytest.raises(TextEncoderUnavailableError, match="sentence-transformers"):
            encode_texts(["a b"], encoder="minilm")
