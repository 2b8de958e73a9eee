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
    "01_recflow": [
        ("the world's files pass every check of the RecFlow format",
         "recflow_validate_problems == 0"),
        ("about 4.1 exposures per request, as in RecFlow",
         "3.8 <= recflow_shown_per_request <= 4.4"),
        ("each later stage keeps items of higher true relevance",
         "recflow_stage_means_increase"),
        ("the effective-view rate is within 15% of its 0.40 target",
         "abs(recflow_ev_rate / 0.40 - 1) < 0.15"),
        ("feedback is noisy but follows the truth (oracle AUC in a production-like range)",
         "0.65 < recflow_oracle_auc < 0.9"),
        ("a stage cut is neither random nor perfect", "0.6 < recflow_auc_pre_coarse < 0.9"),
        ("exposures concentrate on popular items", "recflow_exposure_gini > 0.3"),
        ("MovieLens-100K has RecBole's counts",
         "(ml100k_users, ml100k_items, ml100k_interactions) == (943, 1682, 100000)"),
        ("the split has RecBole's 97,171 training samples", "ml100k_train_samples == 97171"),
    ],
    "02_kuaiformer": [
        ("KuaiFormer with four interests beats popularity on MovieLens-100K NDCG@10",
         "kf_ml_kf4_ndcg10 >= kf_ml_pop_ndcg10 + 0.005"),
        ("KuaiFormer with one interest beats popularity on MovieLens-100K NDCG@10",
         "kf_ml_kf1_ndcg10 >= kf_ml_pop_ndcg10 + 0.005"),
        ("serving through the exact index returns what score_all ranks first",
         "kf_index_agreement_exact > 0.999"),
        ("on the planted histories KuaiFormer beats popularity",
         "kf_claim2_base > kf_planted_pop_ndcg10"),
        ("compression cuts the attention pairs of the long history at least twofold",
         "kf_pairs_ratio >= 2"),
    ],
    "03_elastic": [
        ("the dispatcher layer's operation count grows linearly with the length",
         "0.95 <= el_flop_slope_lda <= 1.05"),
        ("SASRec's block grows faster than linearly", "el_flop_slope_sas >= 1.5"),
        ("ELASTIC beats popularity on MovieLens-100K NDCG@10",
         "el_ml_elastic_ndcg10 >= el_ml_pop_ndcg10 + 0.005"),
        ("reading the whole history, ELASTIC beats the truncated SASRec on returning interests",
         "el_long_elastic_ndcg10 >= el_long_best_short_ndcg10 + 0.02"),
        ("ELASTIC beats popularity on returning interests",
         "el_long_elastic_ndcg10 > el_long_pop_ndcg10"),
    ],
    "04_dimerec": [
        ("DimeRec beats popularity on MovieLens-100K NDCG@50",
         "dr_ml_dimerec_ndcg50 >= dr_ml_pop_ndcg50 + 0.003"),
        ("DimeRec beats its own extractor alone (ComiRec-SA) on NDCG@10",
         "dr_ml_dimerec_ndcg10 > dr_ml_comirec_ndcg10"),
        ("serving through the exact index returns what score_all ranks first",
         "dr_index_agreement > 0.999"),
        ("the reconstruction loss alone shrinks Euclidean embeddings",
         "dr_norm_recon_end < dr_norm_start"),
        ("the softmax loss alone grows them", "dr_norm_ssm_end > dr_norm_start"),
    ],
    "05_home": [
        ("ReLU experts have more dead units than BN + Swish experts, which have almost none",
         "hm_dead_MMoE > hm_dead_MMoE_norm and hm_dead_MMoE_norm < 0.01"),
        ("the hierarchy mask gives exactly zero gate mass outside a task's group and own",
         "hm_mask_leak == 0"),
        ("feature-gates start as the identity", "hm_fg_identity"),
        ("HoME and MMoE learn the sparse tasks beyond chance, below the best possible AUC",
         "0.55 < hm_run_sparse_mmoe < hm_oracle_sparse and "
         "0.55 < hm_run_sparse_home < hm_oracle_sparse"),
        ("HoME's shared experts degrade less than MMoE's", "hm_home_degr < hm_mmoe_degr"),
    ],
}
