"""`plmkit demo`: the main job end to end on data that needs no download.

For now: sentence embeddings from the offline all-MiniLM-L6-v2 checkpoint, loaded into plmkit's own BertModel
(no `transformers` at run time), and a ranked semantic search over a small topical corpus written here, scored
by whether the top hits share the query's topic. The pretraining and fine-tuning stages join it as they land.
"""

from __future__ import annotations

import argparse
import time

from plmkit.interop.hub import offline_model_dir, resolve_model_dir
from plmkit.similarity import SentenceEncoder, semantic_search

# A few dozen sentences on eight topics; the demo checks that search finds a query's topic.
CORPUS = {
    "sport": ["The striker scored twice in the second half to win the cup final.",
              "She finished the marathon in under three hours.",
              "The tennis match went to a fifth set tie-break.",
              "Our basketball team lost by a single point last night.",
              "He swims forty lengths of the pool every morning."],
    "cooking": ["Simmer the tomato sauce for twenty minutes and add fresh basil.",
                "Knead the dough until it is smooth, then let it rise for an hour.",
                "Whisk the eggs with sugar before folding in the flour.",
                "Roast the vegetables with olive oil, garlic and rosemary.",
                "The soup needs more salt and a squeeze of lemon."],
    "computing": ["The laptop will not boot after the latest operating system update.",
                  "Python lists can be sorted in place with the sort method.",
                  "The database query is slow because the table has no index.",
                  "Restart the router if the wireless connection keeps dropping.",
                  "The graphics card overheats when I run the new game."],
    "weather": ["Heavy rain and strong winds are expected along the coast tonight.",
                "It has been sunny and warm all week, with temperatures near thirty degrees.",
                "Snow closed the mountain pass this morning.",
                "A thick fog delayed flights at the airport.",
                "Thunderstorms will clear by the afternoon, leaving a cool evening."],
    "finance": ["The central bank raised interest rates by a quarter of a point.",
                "Shares of the carmaker fell after weak quarterly earnings.",
                "She moved her savings into a low-cost index fund.",
                "Inflation slowed for the third month in a row.",
                "The company plans to buy back two billion dollars of its stock."],
    "animals": ["The cat sleeps on the windowsill in the afternoon sun.",
                "Wolves hunt in packs and can travel long distances in a night.",
                "Our puppy chewed through the garden hose again.",
                "Elephants remember the paths to distant water holes.",
                "A hummingbird hovered over the red flowers."],
    "travel": ["We took the night train from Vienna to Venice.",
               "Remember to renew your passport before booking the flight.",
               "The hotel room had a balcony with a view of the harbour.",
               "They spent two weeks backpacking through northern Vietnam.",
               "Our luggage was lost during the connection in Frankfurt."],
    "health": ["Regular exercise lowers blood pressure and improves sleep.",
               "The doctor prescribed antibiotics for the chest infection.",
               "Drink plenty of water when you have a fever.",
               "A balanced diet includes fruit, vegetables and whole grains.",
               "He twisted his ankle and needs to rest it for a week."],
}
QUERIES = {
    "Who won the football game?": "sport",
    "How do I bake bread at home?": "cooking",
    "My computer crashes when I start it.": "computing",
    "Will it rain tomorrow?": "weather",
    "Is now a good time to invest in the stock market?": "finance",
    "What do dogs like to eat?": "animals",
    "Tips for a holiday abroad": "travel",
    "How can I stay healthy?": "health",
}


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("demo", help="run the main job end to end, offline", description=__doc__)
    parser.add_argument("--model", metavar="DIR", help="sentence-embedding BERT (default: offline all-MiniLM-L6-v2)")
    parser.add_argument("--top-k", type=int, default=3, metavar="K")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    model_dir = resolve_model_dir(args.model) if args.model else offline_model_dir()
    print(f"== semantic search with sentence embeddings (mean pooling), model: {model_dir}")
    t0 = time.perf_counter()
    encoder = SentenceEncoder.from_pretrained(model_dir)
    corpus = [s for sentences in CORPUS.values() for s in sentences]
    topics = [t for t, sentences in CORPUS.items() for _ in sentences]
    t1 = time.perf_counter()
    corpus_emb = encoder.encode(corpus)
    t2 = time.perf_counter()
    print(f"loaded in {t1 - t0:.2f}s; embedded {len(corpus)} sentences -> {tuple(corpus_emb.shape)} "
          f"in {t2 - t1:.2f}s\n")
    hits = semantic_search(encoder.encode(list(QUERIES)), corpus_emb, args.top_k)
    right = 0
    for (query, topic), row in zip(QUERIES.items(), hits, strict=True):
        print(f"query: {query}   [expected topic: {topic}]")
        for rank, (i, score) in enumerate(row, 1):
            ok = topics[i] == topic
            right += ok
            print(f"  {rank}. {score:.3f}  {'+' if ok else '-'} {topics[i]:<9}  {corpus[i]}")
        print()
    total = len(QUERIES) * args.top_k
    print(f"results: precision@{args.top_k} (top hits on the query's topic) = {right}/{total} = {right / total:.2f}")
    return 0
