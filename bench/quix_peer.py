"""The peer: the same minimal pipeline written idiomatically with Quix Streams.

decode like -> re-key by video -> as-of join with the video's products -> re-key by creator ->
count per creator (stateful) -> produce a prompt for the first eligible product.
Run: python -m bench.quix_peer BROKER PREFIX GROUP STATE_DIR
"""

from __future__ import annotations

import sys
from typing import Any

import orjson
from quixstreams import Application, State


def main() -> None:
    broker, prefix, group, state_dir = sys.argv[1:5]
    app = Application(
        broker_address=broker,
        consumer_group=group,
        auto_offset_reset="earliest",
        state_dir=state_dir,
        loglevel="WARNING",
    )
    likes = app.dataframe(app.topic(f"{prefix}likes", key_deserializer="str", value_deserializer="json"))
    videos = app.dataframe(
        app.topic(f"{prefix}video-products", key_deserializer="str", value_deserializer="json")
    )
    out = app.topic(f"{prefix}quix-prompts", key_serializer="str", value_serializer="bytes")

    likes = likes.group_by(lambda like: like["video_id"], name="by_video")
    joined = likes.join_asof(videos, how="inner", on_merge=lambda like, video: {"like": like, "video": video})
    joined = joined.group_by(lambda j: j["video"]["creator_id"], name="by_creator")

    def count_and_prompt(joined: dict[str, Any], state: State) -> bytes | None:
        state.set("likes", state.get("likes", 0) + 1)
        for product in joined["video"]["products"]:
            if product["certified"] and product["stock"] > 0:
                like = joined["like"]
                return orjson.dumps(
                    {
                        "user_id": like["user_id"],
                        "video_id": like["video_id"],
                        "product_id": product["product_id"],
                        "like_ts": like["ts"],
                    }
                )
        return None

    prompts = joined.apply(count_and_prompt, stateful=True).filter(lambda p: p is not None)
    prompts.to_topic(out)
    app.run()


if __name__ == "__main__":
    main()
