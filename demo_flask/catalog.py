"""The dogs the upstream serves and the Redis keys the demo uses.

Shared by the upstream service (which serves the pictures and seeds the names)
and by the Flask app (which looks the names up and counts requests).
"""

from __future__ import annotations

from pathlib import Path

__all__ = ("BILLING_KEY", "DOGS", "DOG_NAMES_KEY", "IMAGES_DIR", "TRACK_CHANNEL_PREFIX")

IMAGES_DIR = Path(__file__).resolve().parent / "images"

#: Picture file name -> the dog's name (seeded into the :data:`DOG_NAMES_KEY` hash).
DOGS: dict[str, str] = {
    "biscuit.jpg": "Biscuit",
    "luna.jpg": "Luna",
    "mochi.jpg": "Mochi",
    "pepper.jpg": "Pepper",
    "rex.jpg": "Rex",
}

#: Redis hash: file name -> dog name. The two keys of ``/dog``'s one Lua call share
#: the hash tag ``{dog}``: in a Redis Cluster they live in one slot, so the script runs.
DOG_NAMES_KEY = "caas:{dog}:names"
#: Redis counter incremented once per ``/dog`` request (the billing meter).
BILLING_KEY = "caas:{dog}:billing"
#: Redis pub/sub channel prefix of ``/track/<order_id>``.
TRACK_CHANNEL_PREFIX = "caas:track:"
