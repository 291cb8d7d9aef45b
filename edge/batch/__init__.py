"""`edge batch`: a card, an archive or a whole project's frames classified on a Ray cluster.

The same scoring as `edge watch` (Scorer, decide_all), spread over many machines:

    listing (driver: names and stats)  -> capture times (Ray tasks, EXIF)
    -> chunks (driver: per camera, in capture order, stable ids)
    -> per chunk, one actor call: decode in Ray tasks, score and decide in order, one shard
    -> merge (driver: shards -> MegaDetector results, Camtrap DP, a sorted copy or links)

Nothing here imports ray at module level except `pipeline`, which the command imports only
when it runs: ray is an optional extra (`pip install 'overmap-edge[batch]'`).
"""
