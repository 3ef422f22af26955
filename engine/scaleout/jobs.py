"""The job protocol between front ends (``remote.RemoteGenerator``) and `parley worker` processes
(``worker.Worker``), in one place: key and stream names, entry kinds, encodings and lifetimes.

A request is one entry in the job stream ``JOBS`` (fields ``id``, ``prompt``, ``params``, ``cache_key``),
read by the workers' consumer group ``GROUP``. The answer comes back on the request's own reply stream
(``job_key(id, "reply")``) as entries with fields ``attempt`` (the job's delivery count) and ``kind``:

  start     a worker took the job (``worker``: its name)
  delta     text (``text``)
  finished  the end (``finished``: the Finished event as JSON)
  error     the model refused or failed on this job (``message``); redoing it would fail the same way
  failed    the job stopped workers ``PARLEY_MAX_DELIVERIES`` times and was moved to the dead letters

While it waits, the requester keeps the job's ``asker`` key alive (ASKER_TTL, refreshed every
ASKER_REFRESH seconds) and sets its ``cancel`` flag when it stops. A worker takes, takes over and
continues only jobs whose asker is still there and that are not cancelled: one whose requester gave up
(told "temporarily unavailable" during a Redis outage, or gone with its process) is dropped, not
generated again into a reply stream nobody reads; such a stream expires REPLY_TTL after its last entry.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from enum import StrEnum

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from engine.contract import SamplingParams
from engine.conversation.keys import PREFIX, quote_part

# The queue and its dead letters share a hash tag (one cluster slot); each request's keys share its own.
JOBS = f"{PREFIX}:{{jobs}}:queue"
DEAD_JOBS = f"{PREFIX}:{{jobs}}:dead"
WORKERS = f"{PREFIX}:{{jobs}}:workers"  # sorted set: worker name -> when its heartbeat expires
FORGET_CHANNEL = f"{PREFIX}:forget"  # pub/sub: conversation scopes whose resident caches workers must drop
GROUP = "workers"

# A Redis outage longer than ASKER_TTL - ASKER_REFRESH (4 s) lets every abandoned job's asker key lapse;
# after an outage a worker waits ASKER_TTL before taking jobs, so those of shorter outages lapse too.
ASKER_TTL = 5
ASKER_REFRESH = 1.0
REPLY_TTL = 30  # seconds a reply stream outlives its last entry (the requester reads it within ms)


class Kind(StrEnum):
    START = "start"
    DELTA = "delta"
    FINISHED = "finished"
    ERROR = "error"
    FAILED = "failed"


def job_key(request_id: str, kind: str) -> str:
    """``reply`` (the answer's stream), ``cancel`` (set when the requester stops) or ``asker`` (alive
    while the requester waits)."""
    return f"{PREFIX}:job:{{{quote_part(request_id)}}}:{kind}"


def cancel_ttl(job_timeout: float) -> int:
    """Seconds a cancel flag lives: as long as its job may still wait in the stream or be taken over."""
    return max(300, int(4 * job_timeout))


def decode(fields: dict[bytes, bytes]) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in fields.items()}


def params_to_json(params: SamplingParams) -> str:
    return json.dumps(asdict(params))


def params_from_json(raw: str) -> SamplingParams:
    data = json.loads(raw)
    bias = tuple((int(token), float(value)) for token, value in data.get("logit_bias", ()))
    return SamplingParams(**{**data, "stop": tuple(data["stop"]), "logit_bias": bias})


async def ensure_group(redis: Redis) -> None:
    """The consumer group (and its stream); it starts at the stream's beginning so jobs queued before it
    existed are not skipped."""
    try:
        await redis.xgroup_create(JOBS, GROUP, id="0", mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise
