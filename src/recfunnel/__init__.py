"""recfunnel: the package behind the course "The Recommendation Funnel".

Ten industrial recommender systems published by Kuaishou, rebuilt in PyTorch. The
chapters of the book explain and call this package; the package computes. Who may call
whom: data <- layers <- models <- recipes, study <- chapters and benchmarks.

The shared core:

    checks      the one validation idiom: every loader, generator and entry point refuses
                bad input with an InvalidInputError naming argument, file, column and row
    runtime     seeds, devices, the environment report
    profiles    every chapter's run sizes at smoke / cpu / gpu
    train       the one training loop (fit), the one epoch shuffle (shuffled), checkpoints
    cost        operation counts and scaling exponents (cost counted, not timed)
    metrics     ranking, diversity and classification metrics, the linear probe
    study       Run records, paired gaps with user and seed noise, the one Verdict rule
    recipes     the chapters' experiments, called by a chapter and its benchmark alike:
                the shared training (fit_next_item, fit_multitask) and one module per
                chapter (recipes/kuaiformer.py, elastic.py, dimerec.py, home.py, marm.py,
                qarm.py)
    retrieval   exact and FAISS nearest-neighbour search
    plots, notebook   figures and tables (plots.table), chapter helpers (setup, glue,
                show_source)
    book        the book's machinery: one execution per chapter, the build from executed
                copies, the reproduction ledger, student and Colab copies
    data        download (checksums, safe archives), tables (feather and pickle IO),
                movielens, sequences (the sequential protocol)

Every file of a paper, by chapter:

    1 RecFlow       data/world.py (the latent world), data/funnel.py (the six-stage
                    funnel simulated), data/world_export.py (its RecFlow files),
                    data/recflow.py (RecFlow's reader and writers)
    2 KuaiFormer    models/kuaiformer.py; data/planted.py (planted interests);
                    layers/attention.py; models/baselines.py (SASRec, popularity);
                    recipes/kuaiformer.py
    3 ELASTIC       models/elastic.py; layers/memory.py (product keys); data/planted.py
                    (returning interests); cost.py; recipes/elastic.py
    4 DimeRec       models/dimerec.py; layers/diffusion.py; recipes/dimerec.py
    5 HoME          models/home.py; models/multitask.py (the shared ranker parts);
                    models/multitask_baselines.py (shared-bottom, MMoE, PLE); layers/moe.py;
                    data/impressions.py (eight-task impressions); data/kuairand.py;
                    recipes/home.py
    6 MARM          models/marm.py (cached multi-layer target attention, the cache);
                    data/exposures.py (two-hop exposure streams); recipes/marm.py
                    (streaming training, the chapter's runs)
    7 QARM          models/qarm.py (aligner, codes, ranker); models/qarm_pretrain.py
                    (pair mining, frozen vectors); layers/quantize.py;
                    data/multimodal.py, data/text.py; recipes/qarm.py
"""

__version__ = "0.1.0"
