"""What each chapter must show at the ``smoke`` profile, read from its glued values.

One entry per chapter listed in ``_toc.yml``: a list of (claim, expression) pairs. The
expression is evaluated with the chapter's glued values as variables, so it states the
meaning of a result ("the model beats popularity by at least ..."), not merely that a value
exists. The bounds leave room for seed noise at smoke scale; they are not tuned to pass.
"""

EXPECTATIONS: dict[str, list[tuple[str, str]]] = {
    "00_getting_started": [
        ("matrix factorisation beats popularity on NDCG@10 by at least 0.05",
         "gs_mf_ndcg10 >= gs_pop_ndcg10 + 0.05"),
        ("matrix factorisation beats popularity on Recall@10 by at least 0.08",
         "gs_mf_recall10 >= gs_pop_recall10 + 0.08"),
        ("the oracle that knows the planted affinities is the ceiling",
         "gs_oracle_ndcg10 > gs_mf_ndcg10"),
        ("popularity beats chance (10 / 200 items = 0.05 Recall@10)",
         "gs_pop_recall10 > 2 * 10 / 200"),
        ("the exact index returns what score_all ranks first",
         "gs_index_agreement > 0.99"),
        ("early stopping picked a trained epoch", "gs_best_epoch >= 2"),
    ],
}
