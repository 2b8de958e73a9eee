"""Chapter 11's funnel: the stages of the earlier chapters wired end to end (``stages``) and
measured against the synthetic world's truth (``measure``).

    funnel = Funnel([Retrieval(channels), TopK("pre-ranking", two_tower, 100),
                     TopK("ranking", ranker, 30), Rerank("re-ranking", fused, vectors, 6, 0.3)])
    trace = funnel.run(requests)
    recall = stage_recall(trace, truly_relevant(world, requests, 50))
"""

from recfunnel.funnel.measure import (
    expected_engagement,
    funnel_table,
    requests_of_day,
    stage_recall,
    topic_diversity,
    truly_relevant,
)
from recfunnel.funnel.stages import EMPTY, Channel, Funnel, Requests, Rerank, Retrieval, TopK, Trace

__all__ = ["EMPTY", "Channel", "Funnel", "Requests", "Rerank", "Retrieval", "TopK", "Trace",
           "expected_engagement", "funnel_table", "requests_of_day", "stage_recall",
           "topic_diversity", "truly_relevant"]
